import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax.config import ConfigError, default_config, validate
from electra_jax.optim import decay_mask, learning_rate_schedule, make_optimizer, scale_generator_updates


def train_cfg(**kw):
    t = default_config("tiny").train
    t.update(dict(dict(learning_rate=0.1, num_steps=10, warmup_steps=4, grad_clip_norm=0.0, weight_decay=0.01), **kw))
    return t


def test_reference_schedule_multiplies_warmup_into_linear_decay():
    sched = learning_rate_schedule(train_cfg())
    for step in range(12):
        expected = 0.1 * max(0.0, 1 - step / 10) * min(1.0, step / 4)
        assert float(sched(step)) == pytest.approx(expected, abs=1e-7)
    sched = learning_rate_schedule(train_cfg(schedule="warmup_linear"))
    assert float(sched(4)) == pytest.approx(0.1) and float(sched(2)) == pytest.approx(0.05)
    assert float(sched(10)) == pytest.approx(0.0, abs=1e-7)


def test_adam_without_bias_correction_matches_the_reference_update():
    params = {"dense": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.3, -0.1])},
              "LayerNorm": {"scale": jnp.array([1.0, 1.0])}}
    grads = [jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)) + 0.1 * i, params) for i in range(3)]
    tx = make_optimizer(train_cfg())
    state = tx.init(params)
    p_ref = jax.tree.map(np.asarray, params)
    m = jax.tree.map(np.zeros_like, p_ref)
    v = jax.tree.map(np.zeros_like, p_ref)
    decays = {"dense": {"kernel": True, "bias": False}, "LayerNorm": {"scale": False}}
    for step, g in enumerate(grads):
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        lr = 0.1 * (1 - step / 10) * min(1.0, step / 4)
        g_np = jax.tree.map(np.asarray, g)
        m = jax.tree.map(lambda m_, g_: 0.9 * m_ + 0.1 * g_, m, g_np)
        v = jax.tree.map(lambda v_, g_: 0.999 * v_ + 0.001 * g_ ** 2, v, g_np)
        p_ref = jax.tree.map(lambda p, m_, v_, d: p - lr * (m_ / (np.sqrt(v_) + 1e-6) + (0.01 * p if d else 0)),
                             p_ref, m, v, decays)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), params, p_ref)


def test_weight_decay_mask_skips_layer_norm_and_bias():
    params = {"layer_0": {"attention_norm": {"scale": 1, "bias": 1}, "intermediate": {"kernel": 1, "bias": 1}},
              "embeddings": {"LayerNorm": {"scale": 1}, "word_embeddings": {"embedding": 1}},
              "generator_head": {"output_bias": 1}}
    mask = decay_mask(params, decay_norm_and_bias=False)
    assert mask == {"layer_0": {"attention_norm": {"scale": False, "bias": False},
                                "intermediate": {"kernel": True, "bias": False}},
                    "embeddings": {"LayerNorm": {"scale": False}, "word_embeddings": {"embedding": True}},
                    "generator_head": {"output_bias": False}}
    assert all(jax.tree.leaves(decay_mask(params, decay_norm_and_bias=True)))


def test_bias_correction_option():
    params = {"w": jnp.ones(3)}
    g = {"w": jnp.array([100.0, -0.5, 2.0])}

    def first_update(bias_correction):
        tx = make_optimizer(train_cfg(warmup_steps=0, bias_correction=bias_correction, weight_decay=0.0))
        return np.asarray(tx.update(g, tx.init(params), params)[0]["w"])

    # corrected: lr * g / |g| = 0.1 * sign(g); uncorrected (the reference): 0.1 * 0.1 / sqrt(0.001) * sign(g)
    np.testing.assert_allclose(first_update(True), -0.1 * np.sign(g["w"]), rtol=1e-3)
    np.testing.assert_allclose(first_update(False), -0.1 * 0.1 / np.sqrt(0.001) * np.sign(g["w"]), rtol=1e-3)


def test_generator_learning_rate_scale_touches_only_the_generators_own_parameters():
    params = {name: {"kernel": jnp.ones(2)} for name in
              ("embeddings", "generator", "generator_head", "discriminator", "discriminator_head")}
    grads = jax.tree.map(lambda p: jnp.array([0.5, -2.0]), params)
    tx = make_optimizer(train_cfg(warmup_steps=0, bias_correction=True, weight_decay=0.0),
                        extra=scale_generator_updates(0.25))
    updates = tx.update(grads, tx.init(params), params)[0]
    for name, update in updates.items():
        scale = 0.25 if name.startswith("generator") else 1.0  # shared embeddings: the discriminator's rate
        np.testing.assert_allclose(update["kernel"], -0.1 * scale * np.sign([0.5, -2.0]), rtol=1e-3, err_msg=name)


def test_lamb_scales_each_decayed_tensor_by_its_trust_ratio_and_leaves_the_rest_adamw():
    """One step against numpy: the Adam update plus weight decay, times ||param|| / ||update|| per
    tensor (each kernel its own ratio), except LayerNorm and biases (the decay mask's exclusions)."""
    params = {"layer_0": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.3, -0.1])},
              "layer_1": {"kernel": jnp.array([[0.1, 0.2], [-0.3, 0.05]])},
              "LayerNorm": {"scale": jnp.array([1.0, 2.0])}}
    grads = jax.tree.map(lambda p: jnp.cos(p * 3.0) * 0.5, params)
    cfg = dict(optimizer="lamb", bias_correction=True, warmup_steps=0, weight_decay=0.1)
    lamb, adamw = (make_optimizer(train_cfg(**{**cfg, "optimizer": o})) for o in ("lamb", "adamw"))
    lamb_updates, _ = lamb.update(grads, lamb.init(params), params)
    adamw_updates, _ = adamw.update(grads, adamw.init(params), params)
    lr = 0.1  # step 0 of a schedule without warmup
    for name, leaf in (("layer_0", "kernel"), ("layer_1", "kernel")):
        p, g = np.asarray(params[name][leaf]), np.asarray(grads[name][leaf])
        adam = g / (np.abs(g) + 1e-6) + 0.1 * p  # Adam's first bias-corrected step: m / sqrt(v) = sign(g)
        expected = -lr * adam * np.linalg.norm(p) / np.linalg.norm(adam)
        np.testing.assert_allclose(lamb_updates[name][leaf], expected, rtol=1e-5)
    ratios = [float(jnp.linalg.norm(lamb_updates[n]["kernel"]) / jnp.linalg.norm(adamw_updates[n]["kernel"]))
              for n in ("layer_0", "layer_1")]
    assert abs(ratios[0] - ratios[1]) > 0.5  # per tensor, not one global ratio
    np.testing.assert_allclose(lamb_updates["layer_0"]["bias"], adamw_updates["layer_0"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(lamb_updates["LayerNorm"]["scale"], adamw_updates["LayerNorm"]["scale"], rtol=1e-6)
    c = default_config("tiny")
    c.data.dir, c.train.optimizer = "/d", "sgd"
    with pytest.raises(ConfigError, match="train.optimizer='sgd': choose 'adamw' or 'lamb'"):
        validate(c)
