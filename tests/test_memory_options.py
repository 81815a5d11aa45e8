"""Options that trade compute for memory without changing the update: gradient accumulation
(train.grad_accum_steps) and activation checkpointing (model.remat)."""
import dataclasses

import jax
import numpy as np
import pytest

from electra_jax.plan import (ACCELERATORS, MEMORY_HEADROOM, REMAT_CHOICES, activation_bytes, compile_step, format_fit,
                              plan_fit)
from sharded_run import config_for, run


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


def test_remat_policies_train_exactly_as_without():
    """Recomputing activations in the backward pass changes no number: three updates with dropout
    on (the recomputation redraws the same masks) equal the run without remat."""
    runs = {remat: run("data=1", jax.devices()[:1], overrides=[("model.remat", remat)])
            for remat in ("none", "full", "dots_with_no_batch_dims_saveable")}
    losses, params = runs.pop("none")
    for remat, (other_losses, other_params) in runs.items():
        np.testing.assert_allclose(other_losses, losses, rtol=1e-6, err_msg=remat)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other_params)):
            np.testing.assert_allclose(b, a, atol=1e-6, rtol=0, err_msg=remat)


def test_remat_keeps_fewer_activations_and_accumulation_needs_less_memory():
    """What the planner counts: the activations the backward pass keeps fall with each remat
    policy (full keeps little more than each layer's input); XLA's memory analysis of the
    compiled step falls with 4 micro-batches."""
    c = config_for("data=1")
    c.model.update(num_layers=4, hidden_size=128, intermediate_size=512, num_heads=2)
    c.train.batch_size, c.data.seq_length = 32, 64
    kept = {}
    for remat in ("none", "dots_with_no_batch_dims_saveable", "full"):
        c.model.remat = remat
        kept[remat] = activation_bytes(c, 256, 32)
    assert kept["full"] < 0.15 * kept["none"] and kept["full"] < kept["dots_with_no_batch_dims_saveable"] < kept["none"]
    # one layer's input, [32, 64, 128] float32, is kept per discriminator layer at least
    assert kept["full"] >= 4 * 32 * 64 * 128 * 4

    c.model.remat = "none"
    plain = compile_step(c, 256, jax.devices()[:1])[0].memory_analysis().temp_size_in_bytes
    c.train.grad_accum_steps = 4
    accumulated = compile_step(c, 256, jax.devices()[:1])[0].memory_analysis().temp_size_in_bytes
    assert accumulated < 0.5 * plain


def test_the_planner_fits_micro_batch_accumulation_and_remat_to_the_chip(monkeypatch):
    """bench plan --fit on a chip with 40 MiB: without remat only small micro-batches fit, with
    full remat larger ones; every row's micro-batches make up the batch, fits the memory it
    claims, and the plan is the fastest row that fits."""
    tiny_chip = dataclasses.replace(ACCELERATORS["v5e"], name="40 MiB test chip", hbm_bytes=40 * 2 ** 20)
    monkeypatch.setitem(ACCELERATORS, "test", tiny_chip)
    c = config_for("data=1")
    c.model.update(num_layers=4, hidden_size=128, intermediate_size=512, num_heads=2)
    c.train.batch_size, c.data.seq_length = 64, 64
    p = plan_fit(c, 256, "test", 1)
    rows = {r["remat"]: r for r in p["options"]}
    assert set(rows) == set(REMAT_CHOICES) and all(r["fits"] for r in rows.values())
    for r in rows.values():
        assert r["micro_batch_per_chip"] * r["grad_accum_steps"] == 64
        assert r["memory_gib"] * 2 ** 30 <= MEMORY_HEADROOM * tiny_chip.hbm_bytes
    assert rows["none"]["micro_batch_per_chip"] < rows["full"]["micro_batch_per_chip"]
    assert p["plan"] is min(rows.values(), key=lambda r: r["step_seconds"])
    assert "**plan**" in format_fit(p)
