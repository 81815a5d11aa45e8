"""Optimizer: optax AdamW with the reference implementation's semantics available as options."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    t = train_cfg
    if t.schedule == "reference":
        # The reference multiplies warmup into a linear decay that starts at step 0.
        def schedule(step):
            step = jnp.asarray(step, jnp.float32)
            decay = jnp.maximum(0.0, 1.0 - step / t.num_steps)
            warmup = jnp.minimum(1.0, step / t.warmup_steps) if t.warmup_steps else 1.0
            return t.learning_rate * decay * warmup
        return schedule
    warmup = max(t.warmup_steps, 1)
    return optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, warmup),
                                 optax.linear_schedule(t.learning_rate, 0.0, max(t.num_steps - warmup, 1))],
                                [warmup])


class ScaleByAdamNoBiasCorrectionState(NamedTuple):
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adam_without_bias_correction(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """m / (sqrt(v) + eps) with raw moment estimates: the reference's AdamWeightDecayOptimizer.
    optax's scale_by_adam always bias-corrects, so this composes optax's own moment updates."""
    def init(params):
        return ScaleByAdamNoBiasCorrectionState(optax.tree.zeros_like(params), optax.tree.zeros_like(params))

    def update(updates, state, params=None):
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, ScaleByAdamNoBiasCorrectionState(mu, nu)

    return optax.GradientTransformation(init, update)


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decay_mask(params, decay_norm_and_bias: bool):
    """True for the parameters that get weight decay: not LayerNorm parameters nor biases."""
    def decide(path, _):
        names = _path_names(path)
        is_norm_or_bias = any("LayerNorm" in n or n.endswith("_norm") for n in names) or \
            any(n in ("bias", "output_bias") for n in names)
        return decay_norm_and_bias or not is_norm_or_bias
    return jax.tree_util.tree_map_with_path(decide, params)


def layer_depth(path_names: list[str], num_layers: int) -> int:
    """0 for the embedding block (and the E->H projection), i+1 for encoder layer i, num_layers+1
    for everything above the encoder (the task head)."""
    if path_names[0] == "embeddings" or "embeddings_project" in path_names:
        return 0
    if path_names[0] == "encoder":
        layer = next(n for n in path_names if n.startswith("layer_"))
        return int(layer.split("_")[1]) + 1
    return num_layers + 1


def layerwise_lr_decay(decay: float, num_layers: int) -> optax.GradientTransformation:
    """Scale each parameter's update by decay ** (num_layers + 1 - depth): 1 for the head, decay for
    the top encoder layer, decay ** (num_layers + 1) for the embeddings. (The reference gives the top
    layer decay ** 2, one step too many; this is the intended rule.)"""
    depths = range(num_layers + 2)
    labels = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: f"depth_{layer_depth(_path_names(path), num_layers)}", params)
    return optax.multi_transform({f"depth_{d}": optax.scale(decay ** (num_layers + 1 - d)) for d in depths}, labels)


GENERATOR_PARTS = ("generator", "generator_head", "generator_embeddings")


def scale_generator_updates(scale: float) -> optax.GradientTransformation:
    """Multiply the generator's own updates (its encoder, head and, without sharing, its embeddings)
    by `scale`: a per-network learning rate. Shared embeddings follow the discriminator's rate."""
    labels = lambda params: {part: "generator" if part in GENERATOR_PARTS else "rest" for part in params}
    return optax.partition({"generator": optax.scale(scale), "rest": optax.identity()}, labels)


def make_optimizer(train_cfg, schedule: optax.Schedule | None = None,
                   extra: optax.GradientTransformation | None = None) -> optax.GradientTransformation:
    """Clipping, Adam, weight decay, LAMB's trust ratio (train.optimizer="lamb"), the learning
    rate, then `extra` (e.g. layerwise_lr_decay)."""
    t = train_cfg
    schedule = schedule or learning_rate_schedule(t)
    if t.bias_correction:
        adam = optax.scale_by_adam(t.adam_b1, t.adam_b2, t.adam_eps)
    else:
        adam = scale_by_adam_without_bias_correction(t.adam_b1, t.adam_b2, t.adam_eps)
    mask = lambda p: decay_mask(p, t.decay_norm_and_bias)
    # LAMB (You et al., 2020): each tensor's Adam update (with weight decay) is rescaled by
    # ||parameter|| / ||update||, except for the tensors the decay mask leaves out (LayerNorm and
    # biases), as BERT's LAMB excludes them from layer adaptation
    trust_ratio = optax.masked(optax.scale_by_trust_ratio(), mask) if t.get("optimizer", "adamw") == "lamb" \
        else optax.identity()
    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip_norm) if t.grad_clip_norm else optax.identity(),
        adam,
        optax.add_decayed_weights(t.weight_decay, mask=mask),
        trust_ratio,
        optax.scale_by_learning_rate(schedule),
        extra or optax.identity(),
    )
