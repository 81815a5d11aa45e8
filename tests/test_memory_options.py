"""Options that trade compute for memory without changing the update: gradient accumulation
(train.grad_accum_steps) and activation checkpointing (model.remat)."""
import dataclasses

import flax
import jax
import numpy as np
import pytest

from electra_jax.plan import (ACCELERATORS, MEMORY_HEADROOM, REMAT_CHOICES, activation_bytes, compile_step, format_fit,
                              memory_per_chip, plan_fit)
from electra_jax.step import build_training, init_params
from sharded_run import SEQ, SPECIAL, VOCAB, config_for, global_batches, run


@pytest.mark.parametrize("objective", ["electra", "mlm"])
def test_four_micro_batches_give_the_full_batch_update(objective):
    """Three updates of batch 16 at once and as 4 micro-batches of 4: the same losses and
    parameters to 1e-6 (no dropout: its masks are the one draw made per micro-batch)."""
    def train(accum):
        return run("data=1", jax.devices()[:1], overrides=[
            ("objective", objective), ("model.dropout_rate", 0.0), ("model.attention_dropout_rate", 0.0),
            ("train.grad_accum_steps", accum)])
    (losses_1, params_1), (losses_4, params_4) = train(1), train(4)
    assert objective == "mlm" or losses_1[-1] < losses_1[0]  # the updates are real ones
    np.testing.assert_allclose(losses_4, losses_1, rtol=1e-6)
    leaves_1, leaves_4 = jax.tree.leaves(params_1), jax.tree.leaves(params_4)
    assert len(leaves_1) > 20
    for a, b in zip(leaves_1, leaves_4):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)


def test_remat_policies_give_the_gradients_without_remat():
    """Recomputing activations in the backward pass changes no number: the gradient of the ELECTRA
    loss with dropout on (the recomputation redraws the same masks) under each policy equals the
    gradient without remat."""
    batch = {k: jax.numpy.asarray(v) for k, v in next(global_batches()).items()}
    grads = {}
    for remat in ("none", "full", "dots_with_no_batch_dims_saveable"):
        c = config_for("data=1")
        c.model.remat = remat
        t = build_training(c, VOCAB, SPECIAL)
        params = flax.linen.unbox(init_params(t.model, SEQ, t.objective.max_predictions, jax.random.key(0)))
        loss = lambda p: t.loss_fn(p, t.model, batch, jax.random.key(1), t.objective)[0]
        grads[remat] = jax.jit(jax.grad(loss))(params)
    reference = jax.tree.leaves(grads.pop("none"))
    assert sum(float(np.abs(g).sum()) for g in reference) > 0
    for remat, other in grads.items():
        for a, b in zip(reference, jax.tree.leaves(other)):
            np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5, err_msg=remat)


def test_remat_keeps_fewer_activations_and_accumulation_needs_less_memory():
    """What the planner counts: the activations the backward pass keeps fall with each remat
    policy (full keeps little more than each layer's input); XLA's memory analysis of the
    compiled step falls with 4 micro-batches."""
    c = config_for("data=1")
    c.model.update(num_layers=3, hidden_size=128, intermediate_size=512, num_heads=2)
    c.train.batch_size, c.data.seq_length = 32, 64
    kept = {}
    for remat in ("none", "dots_with_no_batch_dims_saveable", "full"):
        c.model.remat = remat
        kept[remat] = activation_bytes(c, 256, 32)
    assert kept["full"] < 0.15 * kept["none"] and kept["full"] < kept["dots_with_no_batch_dims_saveable"] < kept["none"]
    # one layer's input, [32, 64, 128] float32, is kept per discriminator layer at least
    assert kept["full"] >= 3 * 32 * 64 * 128 * 4

    c.model.remat = "none"
    plain = compile_step(c, 256, jax.devices()[:1])[0].memory_analysis().temp_size_in_bytes
    c.train.grad_accum_steps = 4
    accumulated = compile_step(c, 256, jax.devices()[:1])[0].memory_analysis().temp_size_in_bytes
    assert accumulated < 0.5 * plain


def test_the_planner_fits_micro_batch_accumulation_and_remat_to_the_chip(monkeypatch):
    """bench plan --fit on a chip too small for the whole batch without remat: without remat a
    smaller micro-batch fits, with full remat a larger one; every row's micro-batches make up the
    batch and fit the memory it claims, and the plan is the fastest row that fits."""
    c = config_for("data=1")
    c.train.batch_size = 64
    whole_batch = memory_per_chip(c, VOCAB, jax.devices()[:1], 64)["total"]
    small_chip = dataclasses.replace(ACCELERATORS["v5e"], name="test chip", hbm_bytes=int(0.6 * whole_batch))
    monkeypatch.setitem(ACCELERATORS, "test", small_chip)
    p = plan_fit(c, VOCAB, "test", 1)
    rows = {r["remat"]: r for r in p["options"]}
    assert set(rows) == set(REMAT_CHOICES) and all(r["fits"] for r in rows.values())
    for r in rows.values():
        assert r["micro_batch_per_chip"] * r["grad_accum_steps"] == 64
        assert r["memory_gib"] * 2 ** 30 <= MEMORY_HEADROOM * small_chip.hbm_bytes
    assert rows["none"]["micro_batch_per_chip"] < 64 and rows["none"]["micro_batch_per_chip"] < rows["full"]["micro_batch_per_chip"]
    assert p["plan"] is min(rows.values(), key=lambda r: r["step_seconds"])
    assert "**plan**" in format_fit(p)
