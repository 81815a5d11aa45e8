"""The train step: what a pretraining config builds (model, objective, optimizer), the train
state on a device mesh, and the jitted, sharded step with gradient accumulation.

Imports only jax, flax, optax and the model's own modules, so that `bench step` (and
launch/device_check.sh) runs where the data and logging stack is not installed.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from electra_jax import sharding
from electra_jax.model import ElectraPretrainer, MaskedLM, model_configs
from electra_jax.objective import LOSSES, Objective, ObjectiveConfig
from electra_jax.optim import learning_rate_schedule, make_optimizer, scale_generator_updates


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    skipped_steps: jax.Array        # updates skipped for a non-finite loss or gradient
    first_nonfinite_step: jax.Array  # -1 until the first one


def build_model(config, vocab_size: int) -> nn.Module:
    disc, gen = model_configs(config, vocab_size)
    if config.objective == "mlm":
        return MaskedLM(disc)
    return ElectraPretrainer(disc, gen, config.model.get("embedding_sharing", "tied"))


class Training(NamedTuple):
    """What a pretraining config builds: the model, its objective and the optimizer."""
    model: nn.Module
    objective: ObjectiveConfig
    loss_fn: Objective  # called: the whole-batch loss; its parts: what the step composes
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    accum_steps: int = 1  # micro-batches per update (train.grad_accum_steps)


def build_training(config, vocab_size: int, special_ids: dict, word_starts=None) -> Training:
    """`word_starts`: the tokenizer's BaseTokenizer.word_starts(), for pretrain.masking=whole_word
    (None there: every token is a word of its own, as in benchmarks on synthetic tokens)."""
    schedule = learning_rate_schedule(config.train)
    generator_scale = config.train.get("generator_learning_rate_scale", 1.0)  # absent from older workdirs' configs
    # only when asked: the reference's optimizer state (and so its checkpoints) keeps its shape
    per_network = scale_generator_updates(generator_scale) if generator_scale != 1.0 else None
    if word_starts is None:
        word_starts = np.ones(vocab_size, bool)
    objective = ObjectiveConfig.from_config(config, special_ids, vocab_size, word_starts)
    return Training(build_model(config, vocab_size), objective,
                    LOSSES[config.objective], schedule, make_optimizer(config.train, schedule, extra=per_network),
                    config.train.get("grad_accum_steps", 1))


def init_params(model, seq_length: int, max_predictions: int, rng):
    """Parameters, boxed with their logical axis names."""
    ids = jnp.zeros((1, seq_length), jnp.int32)
    return model.init(rng, ids, ids, jnp.ones_like(ids), jnp.zeros((1, max_predictions), jnp.int32))["params"]


def init_train_state(model, tx, seq_length: int, max_predictions: int, rng) -> TrainState:
    """Parameters and optimizer state."""
    params = init_params(model, seq_length, max_predictions, rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      skipped_steps=jnp.zeros((), jnp.int32), first_nonfinite_step=jnp.full((), -1, jnp.int32))


def plan_train_state(training: Training, seq_length: int, mesh, rules) -> sharding.ShardedInit:
    """The train state's initialisation on the mesh (call inside jax.set_mesh and the axis rules)."""
    return sharding.sharded_init(functools.partial(init_train_state, training.model, training.tx, seq_length,
                                                   training.objective.max_predictions), mesh, rules)


def create_train_state(training: Training, mesh, rules, seq_length: int, rng):
    """(state, shardings): initialised directly on the shardings of the parameters' logical axes."""
    plan = plan_train_state(training, seq_length, mesh, rules)
    return plan.init(rng), plan.shardings


def train_state_bytes(config, vocab_size: int, devices) -> dict:
    """Bytes of parameters + optimizer state: in total, and on the fullest device under the config's
    mesh, for the whole state and for the parameters alone (from the shardings; nothing is allocated)."""
    mesh = sharding.make_mesh(config, devices)
    rules = sharding.axis_rules(config)
    training = build_training(config, vocab_size, dict(pad=0, unk=1, cls=2, sep=3, mask=4))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        plan = plan_train_state(training, config.data.seq_length, mesh, rules)

    def fullest_device(abstract, shardings) -> int:
        per_device = dict.fromkeys(mesh.devices.flat, 0)
        for leaf, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
            for device, index in sh.devices_indices_map(leaf.shape).items():
                per_device[device] += math.prod(len(range(*i.indices(n))) for i, n in zip(index, leaf.shape)) \
                    * leaf.dtype.itemsize
        return max(per_device.values())

    return dict(total=sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(plan.abstract)),
                per_device=fullest_device(plan.abstract, plan.shardings),
                params_per_device=fullest_device(plan.abstract.params, plan.shardings.params))


def split_micro_batches(tree, accum_steps: int, mesh):
    """[B, ...] -> [accum_steps, B / accum_steps, ...]: micro-batch j holds examples j, j + k, j + 2k...
    Every device keeps its own rows (a device's contiguous block of the batch splits evenly into the
    micro-batches), so splitting moves no data between devices."""
    def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))
    return jax.tree.map(split, tree)


def join_micro_batches(tree):
    """The inverse of split_micro_batches: [k, B / k, ...] -> [B, ...] in the batch's own order."""
    return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(-1, *x.shape[2:]), tree)


def batch_gradients(training: Training, params, batch: dict, rng, step, accum_steps: int, mesh, param_shardings):
    """(gradients, metrics) of the whole batch. With accum_steps > 1 the batch runs as that many
    micro-batches in a loop and their gradients are summed: the objective draws every random choice
    for the whole batch first and divides by the whole batch's totals, so the sum is the full-batch
    gradient (only dropout masks are drawn per micro-batch: the same distribution, other draws)."""
    objective, cfg = training.loss_fn, training.objective
    draws, dropout_rngs = objective.draw(rng, batch, cfg)
    totals = objective.totals(batch, draws)

    def micro_batch_gradients(micro_batch, micro_draws, rngs):
        def loss(p):
            terms, _ = objective.forward(p, training.model, micro_batch, micro_draws, cfg, rngs, False, step)
            return objective.loss(terms, totals, cfg, step), terms
        return jax.grad(loss, has_aux=True)(params)

    if accum_steps == 1:
        grads, terms = micro_batch_gradients(batch, draws, dropout_rngs)
    else:
        def accumulate(summed, micro):
            index, micro_batch, micro_draws = micro
            rngs = jax.tree.map(lambda key: jax.random.fold_in(key, index), dropout_rngs)
            grads, terms = micro_batch_gradients(micro_batch, micro_draws, rngs)
            return jax.lax.with_sharding_constraint(jax.tree.map(jnp.add, summed, grads), param_shardings), terms

        zeros = jax.lax.with_sharding_constraint(jax.tree.map(jnp.zeros_like, params), param_shardings)
        micro_batches = (jnp.arange(accum_steps),) + split_micro_batches((batch, draws), accum_steps, mesh)
        grads, terms = jax.lax.scan(accumulate, zeros, micro_batches)
        terms = join_micro_batches(terms)
    return grads, objective.metrics(terms, totals, cfg, step)


def make_train_step(training: Training, state_shardings, mesh):
    tx, schedule = training.tx, training.schedule

    def train_step(state: TrainState, batch: dict, base_rng):
        rng = jax.random.fold_in(base_rng, state.step)  # one key per step, reproducible on resume
        grads, metrics = batch_gradients(training, state.params, batch, rng, state.step, training.accum_steps, mesh,
                                         state_shardings.params)
        loss = metrics["loss"]
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        # A non-finite loss or gradient leaves parameters and optimizer state as they were.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        skipped = state.skipped_steps + (~finite).astype(jnp.int32)
        first_bad = jnp.where((state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step)
        metrics.update(grad_norm=grad_norm, learning_rate=schedule(state.step), skipped_steps=skipped)
        return TrainState(step=state.step + 1, params=keep(params, state.params),
                          opt_state=keep(opt_state, state.opt_state), skipped_steps=skipped,
                          first_nonfinite_step=first_bad), metrics

    return jax.jit(train_step, donate_argnums=0,
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)))


def make_eval_step(training: Training, state_shardings, mesh):
    def eval_step(params, batch, rng):
        _, (metrics, _) = training.loss_fn(params, training.model, batch, rng, training.objective, deterministic=True)
        return metrics

    return jax.jit(eval_step, in_shardings=(state_shardings.params, sharding.batch_sharding(mesh),
                                            sharding.replicated(mesh)))
