"""The mixed-precision policy (model.dtype=bfloat16 with float32 parameters; model.py states it)."""
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from electra_jax.config import RECIPES, apply_overrides
from electra_jax.export import export
from electra_jax.metrics_writer import read_metrics
from electra_jax.model import ElectraPretrainer, ModelConfig
from electra_jax.train import Trainer


def equations(jaxpr, primitive: str) -> list:
    """Every equation of `primitive` in a jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += equations(inner, primitive)
    return found


def output_dtypes(jaxpr, primitive: str) -> set:
    return {v.aval.dtype for eqn in equations(jaxpr, primitive) for v in eqn.outvars}


def test_bfloat16_runs_matmuls_in_bfloat16_and_keeps_softmax_norms_and_logits_in_float32():
    disc = ModelConfig(vocab_size=300, embedding_size=32, hidden_size=64, num_layers=2, num_heads=2,
                       intermediate_size=128, dtype="bfloat16")
    gen = disc.replace(hidden_size=32, num_heads=1, intermediate_size=64)
    model = ElectraPretrainer(disc, gen)
    ids = jnp.ones((2, 16), jnp.int32)
    params = model.init(jax.random.key(0), ids, ids, ids, jnp.zeros((2, 3), jnp.int32))["params"]
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}  # the master copy

    forward = lambda p: model.apply({"params": p}, ids, ids * 0, ids, jnp.zeros((2, 3), jnp.int32))
    jaxpr = jax.make_jaxpr(forward)(params).jaxpr
    bf16, f32 = jnp.dtype("bfloat16"), jnp.dtype("float32")
    operands = [{v.aval.dtype for v in eqn.invars} for eqn in equations(jaxpr, "dot_general")]
    # 8 per layer (q, k, v, q k^T, probabilities x v, output, FFN in, FFN out), 2 + 2 layers, the
    # discriminator's embedding projection (32 -> 64), the heads' hidden layers; float32: the
    # generator's vocabulary projection, the discriminator's logit
    assert operands.count({bf16}) == 8 * 4 + 1 + 2 and operands.count({f32}) == 2 and len(operands) == 37
    assert output_dtypes(jaxpr, "exp") == {f32}      # softmax
    assert output_dtypes(jaxpr, "rsqrt") == {f32}    # LayerNorm statistics
    gen_logits, disc_logits = forward(params)
    assert gen_logits.dtype == f32 and disc_logits.dtype == f32


@pytest.fixture(scope="module")
def float32_and_bfloat16_runs(prepared, tmp_path_factory):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        workdir = tmp_path_factory.mktemp(dtype)
        c = tiny_config(prepared["dir"], num_steps=200, log_every=10, eval_every=1000, checkpoint_every=1000)
        apply_overrides(c, RECIPES["small_budget"].items())  # the CPU recipe: both losses fall in 200 steps
        c.model.dtype = dtype
        Trainer(c, str(workdir)).run()
        runs[dtype] = workdir
    return runs


def test_200_bfloat16_steps_track_the_float32_loss_curve(float32_and_bfloat16_runs):
    """The same batches and random draws in both precisions: the bfloat16 losses (the total, the
    generator's, the discriminator's) stay within 3% of float32's at every logged step and within
    1% on average, while they fall."""
    logs = {dtype: [r for r in read_metrics(str(workdir)) if "loss" in r]
            for dtype, workdir in float32_and_bfloat16_runs.items()}
    for name in ("loss", "generator_loss", "discriminator_loss"):
        f32, bf16 = (np.array([r[name] for r in logs[dtype]]) for dtype in ("float32", "bfloat16"))
        assert len(f32) == len(bf16) == 20
        assert f32[-3:].mean() < 0.95 * f32[:3].mean(), name
        relative = np.abs(bf16 - f32) / f32
        assert relative.max() < 0.03 and relative.mean() < 0.01, (name, relative)


def test_a_bfloat16_run_exports_float32(float32_and_bfloat16_runs, tmp_path):
    info = export(str(float32_and_bfloat16_runs["bfloat16"]), str(tmp_path / "export"))
    assert info["networks"]["discriminator"]["dtype"] == "float32"
    restored = ocp.StandardCheckpointer().restore(str(tmp_path / "export" / "discriminator"))
    assert {np.asarray(x).dtype for x in jax.tree.leaves(restored)} == {np.dtype("float32")}
