"""Train state, the sharded train step, and the pretraining loop."""
from __future__ import annotations

import contextlib
import functools
import math
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from electra_jax import config as config_lib, hf, sharding, warm_start, workdir as workdir_lib
from electra_jax.checkpoint import Checkpointer, abstract_like
from electra_jax.data import pipeline
from electra_jax.data.corpus import DataError, read_json_file
from electra_jax.data.prepare import load_data_tokenizer, load_metadata, padding_warning
from electra_jax.flops import nominal_peak, train_flops_per_step
from electra_jax.metrics_writer import MetricsWriter
from electra_jax.model import ElectraPretrainer, MaskedLM, model_configs
from electra_jax.objective import LOSSES, ObjectiveConfig
from electra_jax.optim import learning_rate_schedule, make_optimizer, scale_generator_updates
from electra_jax.progress import StepBar


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    skipped_steps: jax.Array        # updates skipped for a non-finite loss or gradient
    first_nonfinite_step: jax.Array  # -1 until the first one


class NonFiniteError(RuntimeError):
    """The loss or the gradients stopped being finite (train.nonfinite="stop")."""


def build_model(config, vocab_size: int) -> nn.Module:
    disc, gen = model_configs(config, vocab_size)
    if config.objective == "mlm":
        return MaskedLM(disc)
    return ElectraPretrainer(disc, gen, config.model.get("embedding_sharing", "tied"))


class Training(NamedTuple):
    """What a pretraining config builds: the model, its objective and the optimizer."""
    model: nn.Module
    objective: ObjectiveConfig
    loss_fn: Callable
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
    mesh (from the shardings alone; nothing is allocated)."""
    mesh = sharding.make_mesh(config, devices)
    rules = sharding.axis_rules(config)
    training = build_training(config, vocab_size, dict(pad=0, unk=1, cls=2, sep=3, mask=4))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        plan = plan_train_state(training, config.data.seq_length, mesh, rules)
    leaves = jax.tree.leaves(plan.abstract)
    total = sum(x.size * x.dtype.itemsize for x in leaves)
    per_device = dict.fromkeys(mesh.devices.flat, 0)
    for leaf, sh in zip(leaves, jax.tree.leaves(plan.shardings)):
        for device, index in sh.devices_indices_map(leaf.shape).items():
            per_device[device] += math.prod(len(range(*i.indices(n))) for i, n in zip(index, leaf.shape)) \
                * leaf.dtype.itemsize
    return dict(total=total, per_device=max(per_device.values()))


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


class Trainer:
    """Everything a run needs, built and checked before the first compile."""

    def __init__(self, config, workdir: str, devices=None):
        self.config, self.workdir = config, os.path.abspath(workdir)
        config_lib.validate(config)  # the config's own values first, then against the data
        self.meta = load_metadata(config.data.dir)
        pipeline.check_shards(self.meta)
        devices = list(devices if devices is not None else jax.devices())
        warm_start.configure(config)
        warm_start.check_vocabulary(config, self.meta["vocab_size"])
        config_lib.validate(config, vocab_size=self.meta["vocab_size"])
        if self.meta["seq_length"] != config.data.seq_length:
            raise config_lib.ConfigError(
                f"data.seq_length={config.data.seq_length} but {config.data.dir} was prepared with "
                f"seq_length={self.meta['seq_length']}")
        self.mesh = sharding.make_mesh(config, devices)
        self.rules = sharding.axis_rules(config)
        sharding.check_batch_size("train.batch_size", config.train.batch_size, self.mesh)
        accum_steps = config.train.get("grad_accum_steps", 1)
        if accum_steps > 1:  # each micro-batch splits over the devices as the batch does
            sharding.check_batch_size("train.batch_size / train.grad_accum_steps",
                                      config.train.batch_size // accum_steps, self.mesh)
        self.local_batch = config.train.batch_size // jax.process_count()
        examples = self.meta["train"]["examples"] // jax.process_count()
        if examples < self.local_batch:
            raise DataError(f"{config.data.dir} has {self.meta['train']['examples']} training examples, fewer than "
                            f"one batch of {config.train.batch_size}; use more text or a smaller train.batch_size")

        word_starts = None
        if config.pretrain.get("masking", "token") == "whole_word":
            word_starts = load_data_tokenizer(self.meta).word_starts()
        self.training = build_training(config, self.meta["vocab_size"], self.meta["special_ids"], word_starts)
        mostly_padding = padding_warning(self.meta)
        if mostly_padding and jax.process_index() == 0:
            logging.warning("%s", mostly_padding)
        not_convertible = hf.why_not_convertible(config.model.attention_bias)
        if not_convertible and jax.process_index() == 0:  # said now, not after hours of training
            logging.warning("this model will not convert to HuggingFace (`electra-jax convert to-hf`): %s",
                            not_convertible)

    def dataset(self, split: str, *, repeat: bool = True, shuffle: bool = True):
        return pipeline.make_dataset(self.meta, split, local_batch_size=self.local_batch, seed=self.config.seed,
                                     shuffle=shuffle, repeat=repeat, process_index=jax.process_index(),
                                     process_count=jax.process_count(), worker_count=self.config.data.worker_count)

    def init(self):
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return create_train_state(self.training, self.mesh, self.rules, self.config.data.seq_length,
                                      jax.random.key(self.config.seed))

    def run(self) -> dict:
        """Train to config.train.num_steps (resuming from the latest checkpoint); return final metrics."""
        cfg, t = self.config, self.config.train
        self.saved_config = cfg.to_dict()
        self.saved_config["data"]["dir"] = self.meta["dir"]  # absolute: export and resume work from anywhere
        lead = jax.process_index() == 0
        with workdir_lib.locked(self.workdir) if lead else contextlib.nullcontext():
            workdir_lib.check_resume(self.workdir, self.saved_config)
            with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
                return self._loop(cfg, t)

    def _loop(self, cfg, t) -> dict:
        state, shardings = self.init()
        train_step = make_train_step(self.training, shardings, self.mesh)
        eval_step = make_eval_step(self.training, shardings, self.mesh)
        batch_sharding = sharding.batch_sharding(self.mesh)
        train_iter = iter(self.dataset("train"))
        ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"), keep=t.keep_checkpoints or None)
        restored = ckpt.restore_latest_good(abstract_like(state, shardings), train_iter)
        if restored is not None:
            state = restored
            logging.info("resuming from step %d", int(state.step))
        elif warm_start.enabled(cfg):
            state = warm_start.load_params(cfg, state, shardings)
        writer = MetricsWriter(self.workdir)
        writer.forget_after(int(state.step))  # rows logged after the checkpoint a crash fell back to
        rng = jax.random.key(cfg.seed + 1)  # with the step number, the whole random state
        start = int(state.step)
        tokens_per_step = t.batch_size * cfg.data.seq_length
        flops_per_step = train_flops_per_step(cfg, self.meta["vocab_size"])["total"]
        peak = nominal_peak(self.mesh.devices.flat[0])  # None on CPUs and unknown devices
        last_train, last_eval, preempted, config_saved = {}, {}, False, False
        bar = StepBar(t.num_steps, start, "pretrain", disable=jax.process_index() != 0)
        tick, tick_step = time.perf_counter(), start
        with _stop_on_sigterm() as stop:
            for step in range(start, t.num_steps):
                batch = sharding.global_batch(next(train_iter), batch_sharding)
                state, metrics = train_step(state, batch, rng)
                bar.dispatched(metrics["loss"])
                done = step + 1
                if done % t.log_every == 0 or done == t.num_steps:
                    last_train = {k: float(v) for k, v in jax.device_get(metrics).items()}  # the only host sync
                    now = time.perf_counter()
                    last_train["tokens_per_second"] = (done - tick_step) * tokens_per_step / (now - tick)
                    last_train["model_flops_per_second"] = (done - tick_step) * flops_per_step / (now - tick)
                    if peak:
                        last_train["mfu"] = last_train["model_flops_per_second"] / (peak * self.mesh.devices.size)
                    tick, tick_step = now, done
                    writer.write(done, "train", last_train)
                    bar.set_postfix(loss=f"{last_train['loss']:.3f}", tok_s=f"{last_train['tokens_per_second']:.0f}")
                    if last_train["skipped_steps"] and t.nonfinite == "stop":
                        self._stop_on_nonfinite(state, ckpt)
                if (done % t.eval_every == 0 or done == t.num_steps) and self.meta["eval"]["examples"] >= self.local_batch:
                    last_eval = self.evaluate(eval_step, state.params, batch_sharding)
                    writer.write(done, "eval", last_eval)
                preempted = stop.requested or ckpt.reached_preemption(done)
                if done % t.checkpoint_every == 0 or done == t.num_steps or preempted:
                    ckpt.save(done, state, train_iter, config=cfg.to_dict())
                    if not config_saved and jax.process_index() == 0:  # config.json describes checkpoints
                        workdir_lib.save_config(self.workdir, self.saved_config)
                        config_saved = True
                if preempted:
                    logging.warning("stop requested: saved step %d, exiting; rerun the same command to resume", done)
                    break
        bar.close()
        ckpt.wait()
        ckpt.remove_abandoned_saves()
        ckpt.close()
        writer.close()
        return dict(step=int(state.step), train=last_train, eval=last_eval, preempted=preempted,
                    skipped_steps=int(state.skipped_steps), checkpoints=ckpt.directory, tensorboard=writer.logdir)

    def _stop_on_nonfinite(self, state, ckpt):
        step = int(state.first_nonfinite_step) + 1
        debug = Checkpointer(os.path.join(self.workdir, "debug_checkpoint"), keep=1)
        debug.save(int(state.step), state, config=self.config.to_dict())
        debug.wait()
        ckpt.wait()
        raise NonFiniteError(f"non-finite loss or gradients at step {step} (train.nonfinite='stop'); the state "
                             f"without that update is saved in {debug.directory}")

    def evaluate(self, eval_step, params, batch_sharding) -> dict:
        """Mean metrics over eval_steps batches of the held-out split, with fixed masking keys."""
        it = iter(self.dataset("eval", repeat=True, shuffle=False))
        rng = jax.random.key(self.config.seed + 2)
        totals = []
        for i in range(self.config.train.eval_steps):
            batch = sharding.global_batch(next(it), batch_sharding)
            totals.append(eval_step(params, batch, jax.random.fold_in(rng, i)))
        totals = jax.device_get(totals)
        return {k: float(np.mean([m[k] for m in totals])) for k in totals[0]}


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM (preemption, scancel, docker stop) asks the loop to save and exit after this step.
    A second SIGTERM changes nothing: the save in progress completes."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.requested = True
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def pretrain(config, workdir: str) -> dict:
    return Trainer(config, workdir).run()


def load_run_config(workdir: str):
    return ml_collections.ConfigDict(read_json_file(os.path.join(workdir, "config.json")))
