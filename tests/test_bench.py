"""Performance accounting: the FLOPs formula against XLA's own count, and the bench command."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import model as model_lib, plan, profile
from electra_jax.flops import encoder_flops_per_token, train_flops_per_step
from electra_jax.config import default_config
from electra_jax.model import ElectraEncoderModel, ModelConfig, fused_attention_implementation

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("e, h, layers, heads, ffn, seq", [(128, 256, 2, 4, 1024, 128), (256, 256, 3, 4, 1024, 256)])
def test_encoder_flops_match_xla_cost_analysis(e, h, layers, heads, ffn, seq):
    """Our formula counts matmuls only; XLA counts every operation, so it may exceed ours by the
    elementwise work (a few percent at these sizes), never fall below it."""
    cfg = ModelConfig(vocab_size=1000, embedding_size=e, hidden_size=h, num_layers=layers, num_heads=heads,
                      intermediate_size=ffn)
    model = ElectraEncoderModel(cfg)
    ids = jnp.zeros((4, seq), jnp.int32)
    params = model.init(jax.random.key(0), ids)
    cost = jax.jit(lambda p, x: model.apply(p, x)).lower(params, ids).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ratio = cost["flops"] / (4 * seq * encoder_flops_per_token(cfg, seq))
    assert 1.0 <= ratio < 1.08, ratio


def test_step_flops_of_electra_small():
    """ELECTRA-Small at batch 128 x 128: the discriminator dominates; the generator's vocabulary
    projection is counted at the 19 masked positions only."""
    c = default_config("small")
    flops = train_flops_per_step(c, 30522)
    tokens = 128 * 128
    disc_per_token = 12 * (8 * 256 ** 2 + 4 * 256 * 1024 + 4 * 128 * 256) + 2 * 128 * 256 + 2 * 256 ** 2 + 2 * 256
    assert flops["discriminator"] == pytest.approx(3 * tokens * disc_per_token)
    gen_head = 128 * 19 * (2 * 64 * 128 + 2 * 128 * 30522)
    assert flops["generator"] == pytest.approx(3 * (tokens * encoder_flops_per_token(
        ModelConfig(30522, 128, 64, 12, 1, 256), 128) + gen_head))
    assert flops["total"] == pytest.approx(flops["discriminator"] + flops["generator"])


def test_bench_step_command_with_the_pytorch_reference(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "electra_jax.cli", "bench", "step", "--config", "configs/electra_tiny.py",
                        "--config.train.batch_size=8", "--config.data.seq_length=32", "--vocab_size=500", "--steps=2",
                        "--config.model.attention_bias=none", "--reference", "--breakdown", "--tasks", "--profile", str(tmp_path / "trace"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", GLIBC_TUNABLES=""),
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tokens_per_second"] == pytest.approx(8 * 32 / result["step_seconds"])
    assert 0 < result["mfu_measured_peak"] < 1.5 and result["compile_seconds"] > 0
    assert result["memory_bytes"]["peak"] > 0 and result["reference"]["tokens_per_second"] > 0
    # the command re-executed itself with glibc's huge-page malloc (cli.huge_page_malloc_env)
    assert "glibc.malloc.hugetlb=1" in result["glibc_tunables"].split(":")
    parts = result["breakdown"]
    # every part timed (their order is a measurement of this machine, not a property to assert)
    assert all(parts[f"{p}_seconds"] > 0 for p in ("discriminator_fwd_bwd", "generator_fwd_bwd", "optimizer_update"))
    # both start from the same loss scale: ln(500) + 50 * ln(2) ~ 40.9 at initialisation
    assert result["loss"] == pytest.approx(result["reference"]["loss"], rel=0.3)
    # the fine-tuning step and the batched forward, beside transformers'
    for side in (result["tasks"], result["reference"]["tasks"]):
        assert side["finetune_step_seconds"] > side["inference_seconds"] > 0
    assert set(result["tasks"]["speedup_vs_reference"]) == {"finetune_step_seconds", "inference_seconds"}
    assert {"finetune_step", "inference"} == set(result["tasks"]["profile"])
    assert result["tasks"]["profile"]["inference"]["ms_per_step"]["matmul"] > 0
    # the traced steps' time, split by kind of op, adds up to the traced wall time
    traced = result["profile"]
    assert sum(traced["ms_per_step"].values()) == pytest.approx(traced["wall_ms_per_step"], rel=1e-6)
    assert traced["ms_per_step"]["matmul"] > 0 and traced["ms_per_step"]["LayerNorm"] > 0
    assert "| matmul |" in r.stdout


def _small_encoder_inputs():
    """A 2-layer encoder config and a batch of 3 sequences with 24, 10 and 3 real tokens."""
    cfg = ModelConfig(vocab_size=300, embedding_size=32, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=128)
    ids = jax.random.randint(jax.random.key(1), (3, 24), 5, 300)
    return cfg, ids, (jnp.arange(24)[None] < jnp.array([24, 10, 3])[:, None]).astype(jnp.int32)


def test_jax_attention_matches_flax_attention():
    """model.attention_impl='jax' (jax.nn.dot_product_attention: cuDNN flash attention on GPUs)
    computes what the default does, padding mask included."""
    cfg, ids, mask = _small_encoder_inputs()
    params = ElectraEncoderModel(cfg).init(jax.random.key(0), ids)
    flax_out = ElectraEncoderModel(cfg).apply(params, ids, mask)
    jax_out = ElectraEncoderModel(cfg.replace(attention_impl="jax")).apply(params, ids, mask)
    assert jnp.max(jnp.abs(flax_out - jax_out) * mask[..., None]) < 1e-5


@pytest.mark.parametrize("device_kind, dtype, head_dim, expected", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 64, "cudnn"), ("NVIDIA A100-SXM4-40GB", "float16", 128, "cudnn"),
    ("NVIDIA H100 80GB HBM3", "float32", 64, "xla"),     # cuDNN's flash attention is 16-bit only
    ("NVIDIA H100 80GB HBM3", "bfloat16", 36, "xla"),    # head size not a multiple of 8
    ("NVIDIA H100 80GB HBM3", "bfloat16", 256, "xla"),
    ("TPU v5p", "bfloat16", 64, "xla"), ("cpu", "float32", 64, "xla")])
def test_fused_attention_is_chosen_by_platform(device_kind, dtype, head_dim, expected):
    assert fused_attention_implementation(device_kind, dtype, head_dim) == expected


@pytest.mark.parametrize("kind", ["classification", "regression", "tagging", "span"])
def test_reference_fine_tuning_loss_is_ours(kind):
    """bench finetune's PyTorch loop optimizes the loss electra-jax's fine-tuning does."""
    torch = pytest.importorskip("torch")
    import numpy as np
    import torch.nn.functional as F
    from electra_jax.bench_torch import _task_loss
    from electra_jax.finetune.features import IGNORE
    from electra_jax.finetune.run import task_loss
    rs = np.random.RandomState(0)
    shape = {"classification": (6, 3), "regression": (6,), "tagging": (6, 10, 5), "span": (6, 10, 2)}[kind]
    outputs = rs.randn(*shape).astype(np.float32)
    if kind == "classification":
        batch = dict(labels=rs.randint(0, 3, 6))
    elif kind == "regression":
        batch = dict(labels=rs.rand(6).astype(np.float32) * 5)
    elif kind == "tagging":
        labels = rs.randint(0, 5, (6, 10))
        labels[rs.rand(6, 10) < 0.4] = IGNORE
        batch = dict(labels=labels)
    else:
        lengths = rs.randint(4, 11, 6)  # padding past each length: never an answer position
        batch = dict(start_positions=rs.randint(0, 4, 6), end_positions=lengths - 1,
                     attention_mask=(np.arange(10)[None] < lengths[:, None]).astype(np.int64))
    ours = float(task_loss(kind, jnp.asarray(outputs), {k: jnp.asarray(v) for k, v in batch.items()}))
    theirs = float(_task_loss(F, kind, torch.from_numpy(outputs), {k: torch.from_numpy(v) for k, v in batch.items()}))
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_bench_finetune_trains_both_frameworks(tmp_path):
    """A tiny BERT checkpoint on a task a bag of words solves: electra-jax and the transformers loop
    both learn it from the same arrays, and the table shows both."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import random
    from electra_jax import bench
    from electra_jax.finetune.config import finetune_config
    words = ["good", "great", "bad", "awful", "the", "film", "movie", "was", "a", "plot"]
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    config = transformers.BertConfig(vocab_size=15, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    rows, rng = ["text,label"], random.Random(0)
    for i in range(160):
        label = i % 2
        filler = " ".join(rng.choice(words[4:]) for _ in range(4))
        rows.append(f"{filler} {rng.choice(words[:2] if label else words[2:4])} {filler},{'pos' if label else 'neg'}")
    (tmp_path / "train.csv").write_text("\n".join(rows[:129]) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:1] + rows[129:]) + "\n")
    c = finetune_config("text")
    c.init, c.max_seq_length, c.num_seeds = str(tmp_path / "bert"), 16, 1
    c.data.train_file, c.data.dev_file = str(tmp_path / "train.csv"), str(tmp_path / "dev.csv")
    c.train.update(batch_size=8, eval_batch_size=8, epochs=4, learning_rate=2e-3)
    from electra_jax.bench_torch import finetune_reference
    result = bench.bench_finetune(c, str(tmp_path / "runs"), reference=finetune_reference)
    assert result["settings"]["train.layerwise_lr_decay"] == 1.0 and result["train_examples"] == 128
    for framework in ("electra_jax", "transformers"):
        assert result[framework]["dev"][0] >= 0.9, (framework, result[framework])
        assert result[framework]["examples_per_second"] > 0
    table = bench.finetune_table([result])
    assert "| electra-jax |" in table and "| transformers |" in table


def test_cpu_peak_is_the_product_of_its_factors():
    """The physical peak of this repository's machine (2 AMD cores, AVX2 + FMA, 2.445 GHz): 157
    GFLOP/s; AVX-512 doubles the lanes."""
    from electra_jax.step_bench import cpu_peak_flops
    info = "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu sse2 avx fma avx2\n" * 2
    peak = cpu_peak_flops(info, cores=2)
    assert peak["peak_flops"] == pytest.approx(2 * 2 * 8 * 2 * 2.445404e9)
    assert "= 157 GFLOP/s" in peak["arithmetic"]
    assert cpu_peak_flops(info.replace("avx2", "avx2 avx512f"), cores=2)["float32_lanes"] == 16
    real = cpu_peak_flops()
    assert real["cores"] >= 1 and real["peak_flops"] > 0


def test_collective_bytes_follow_the_ring_formulas():
    hlo = """
  %all-reduce.1 = f32[1024]{0} all-reduce(%p), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add
  %all-gather.2 = bf16[8,64]{1,0} all-gather(%q), channel_id=2, replica_groups=[2,2]<=[4], dimensions={0}
  %reduce-scatter.3 = f32[16]{0} reduce-scatter(%r), channel_id=3, replica_groups={{0,1,2,3}}, dimensions={0}
  %all-reduce.4 = (f32[8]{0}, f32[]) all-reduce(%s, %t), replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_1'}, to_apply=%add
"""
    out = plan.collective_seconds(hlo, devices=4, link_bytes_per_second=1e9)
    sent = out["bytes_sent_by_kind"]
    # 2(n-1)/n x 4 KiB, plus a tuple of 36 bytes over groups of 2 (the mesh's second axis)
    assert sent["all-reduce"] == pytest.approx(2 * 3 / 4 * 4096 + 2 * 1 / 2 * 36)
    assert sent["all-gather"] == pytest.approx(1 / 2 * 8 * 64 * 2)      # groups of 2: (n-1)/n x the gathered size
    assert sent["reduce-scatter"] == pytest.approx(3 / 4 * 16 * 4 * 4)  # the whole input is 4 result shards
    assert out["seconds"] == pytest.approx(sum(sent.values()) / 1e9)


def test_bench_plan_on_four_host_devices(tmp_path):
    """Data parallel over 4 chips: the step's all-reduces move each gradient once around the ring,
    2(n-1)/n x the parameter bytes (plus a few scalars), and the arithmetic of the plan holds."""
    out = tmp_path / "plan.json"
    r = subprocess.run([sys.executable, "-m", "electra_jax.cli", "bench", "plan", "--config", "configs/electra_tiny.py",
                        "--config.train.batch_size=8", "--config.data.seq_length=32", "--vocab_size=500",
                        "--config.model.embedding_sharing=tied", "--accelerator=v5e", "--chips=4", "--json", str(out)],
                       capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads(out.read_text())
    assert p["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and p["fits"]
    # A little more than the parameters: the shared embedding's two gradients cross separately,
    # while the position rows past 32 tokens get no gradient and do not cross (untied embeddings
    # have two such tables, and come out under 1.0)
    assert 1.0 <= p["collective_bytes_sent_per_chip"]["all-reduce"] / (2 * 3 / 4 * p["parameter_bytes"]) < 1.2
    assert p["roofline_step_seconds"] == pytest.approx(max(p["compute_seconds"], p["memory_seconds"])
                                                       + p["collective_seconds"])
    assert p["tokens_per_second"] == pytest.approx(8 * 32 / p["step_seconds"])
    assert p["days"] == pytest.approx(p["num_steps"] * p["step_seconds"] / 86400)
    assert "memory per chip" in r.stdout and "chip-hours" in r.stdout


def test_bench_plan_refuses_an_unknown_accelerator():
    r = subprocess.run([sys.executable, "-m", "electra_jax.cli", "bench", "plan", "--config", "configs/electra_tiny.py",
                        "--accelerator=v9"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode != 0 and "--accelerator='v9': choose one of" in r.stderr.strip().splitlines()[-1]


def test_profile_shares_overlapping_ops_and_counts_the_gaps():
    """Two ops at once split that time evenly; time with no op running is its own line."""
    hlo = """
%fused_dot (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  %ynn_fusion = f32[4,4]{1,0} fusion(%a, %a), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(f)/layer_0/dense/dot_general"}
  %norm = f32[4,4]{1,0} add(%a, %a), metadata={op_name="jit(f)/jvp(M)/layer_0/LayerNorm/add"}
  ROOT %ynn_fusion.2 = f32[4,4]{1,0} fusion(%norm, %a), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(f)/dot_general"}
}
"""
    ops = profile.hlo_ops(hlo)
    assert ops["ynn_fusion"].fused == {"parameter", "dot"} and ops["norm"].opcode == "add"
    events = [dict(name="ynn_fusion", ts=0, dur=10), dict(name="norm", ts=5, dur=10),
              dict(name="ynn_fusion.2", ts=20, dur=10), dict(name="ThunkExecutor::Execute", ts=0, dur=30)]
    result = profile.time_by_kind(events, ops, steps=1)
    assert result["ms_per_step"] == pytest.approx({"matmul": 17.5e-3, "LayerNorm": 7.5e-3, profile.IDLE: 5e-3})
    assert result["wall_ms_per_step"] == pytest.approx(30e-3) and result["ops_per_step"] == 3
    assert result["gaps_over_1ms_per_step"] == 0  # one gap, of 5 microseconds


@pytest.mark.parametrize("attention_bias", ["none", "alibi"])
def test_perf_variants_fused_qkv_computes_the_same_encoder(monkeypatch, attention_bias):
    """The fused-QKV experiment (tools/perf_variants.py) keeps the parameters (same tree, same
    names) and the values, attention biases included."""
    spec = importlib.util.spec_from_file_location("perf_variants", REPO / "tools" / "perf_variants.py")
    perf_variants = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "perf_variants", perf_variants)  # flax's dataclasses look their module up
    spec.loader.exec_module(perf_variants)
    cfg, ids, mask = _small_encoder_inputs()
    cfg = cfg.replace(attention_bias=attention_bias)
    params = ElectraEncoderModel(cfg).init(jax.random.key(0), ids)
    expected = ElectraEncoderModel(cfg).apply(params, ids, mask)
    monkeypatch.setattr(model_lib, "SelfAttention", model_lib.SelfAttention)  # restored after the test
    perf_variants._fused_qkv_attention()
    assert jax.tree.structure(ElectraEncoderModel(cfg).init(jax.random.key(0), ids)) == jax.tree.structure(params)
    np.testing.assert_allclose(ElectraEncoderModel(cfg).apply(params, ids, mask), expected, atol=1e-5)
