"""Performance accounting: the FLOPs formula against XLA's own count, and the bench command."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from electra_jax.flops import encoder_flops_per_token, train_flops_per_step
from electra_jax.config import default_config
from electra_jax.model import ElectraEncoderModel, ModelConfig


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
                        "--reference", "--breakdown", "--json", str(out)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["tokens_per_second"] == pytest.approx(8 * 32 / result["step_seconds"])
    assert 0 < result["mfu_measured_peak"] < 1.5 and result["compile_seconds"] > 0
    assert result["memory_bytes"]["peak"] > 0 and result["reference"]["tokens_per_second"] > 0
    parts = result["breakdown"]
    assert parts["discriminator_fwd_bwd_seconds"] > parts["optimizer_update_seconds"] > 0
    # both start from the same loss scale: ln(500) + 50 * ln(2) ~ 40.9 at initialisation
    assert result["loss"] == pytest.approx(result["reference"]["loss"], rel=0.3)


def test_jax_attention_matches_flax_attention():
    """model.attention_impl='jax' (jax.nn.dot_product_attention: cuDNN flash attention on GPUs)
    computes what the default does, padding mask included."""
    cfg = ModelConfig(vocab_size=300, embedding_size=32, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=128)
    ids = jax.random.randint(jax.random.key(1), (3, 24), 5, 300)
    mask = (jnp.arange(24)[None] < jnp.array([24, 10, 3])[:, None]).astype(jnp.int32)
    params = ElectraEncoderModel(cfg).init(jax.random.key(0), ids)
    flax_out = ElectraEncoderModel(cfg).apply(params, ids, mask)
    jax_out = ElectraEncoderModel(cfg.replace(attention_impl="jax")).apply(params, ids, mask)
    assert jnp.max(jnp.abs(flax_out - jax_out) * mask[..., None]) < 1e-5


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
        batch = dict(start_positions=rs.randint(0, 10, 6), end_positions=rs.randint(0, 10, 6))
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
    from electra_jax.bench import cpu_peak_flops
    info = "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu sse2 avx fma avx2\n" * 2
    peak = cpu_peak_flops(info, cores=2)
    assert peak["peak_flops"] == pytest.approx(2 * 2 * 8 * 2 * 2.445404e9)
    assert "= 157 GFLOP/s" in peak["arithmetic"]
    assert cpu_peak_flops(info.replace("avx2", "avx2 avx512f"), cores=2)["float32_lanes"] == 16
    real = cpu_peak_flops()
    assert real["cores"] >= 1 and real["peak_flops"] > 0
