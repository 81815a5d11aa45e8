"""Gradient accumulation (train.grad_accum_steps): k micro-batches give the full batch's update."""
import jax
import numpy as np
import pytest

from electra_jax.config import ConfigError, validate
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


def test_accumulation_steps_must_divide_the_batch():
    c = config_for("data=1")
    c.train.grad_accum_steps = 3
    with pytest.raises(ConfigError, match=r"train.grad_accum_steps=3 must be a positive divisor of train.batch_size=16"):
        validate(c)
