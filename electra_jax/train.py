"""The pretraining loop: data, checkpoints, evaluation, metrics and preemption around the train
step of step.py."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from electra_jax import config as config_lib, hf, sharding, warm_start, workdir as workdir_lib
from electra_jax.checkpoint import Checkpointer, abstract_like
from electra_jax.data import pipeline
from electra_jax.data.corpus import DataError, read_json_file
from electra_jax.data.prepare import load_data_tokenizer, load_metadata, padding_warning
from electra_jax.flops import nominal_peak, train_flops_per_step
from electra_jax.metrics_writer import MetricsWriter
from electra_jax.progress import StepBar
from electra_jax.step import build_training, create_train_state, make_eval_step, make_train_step


class NonFiniteError(RuntimeError):
    """The loss or the gradients stopped being finite (train.nonfinite="stop")."""


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
        peak = nominal_peak(self.mesh.devices.flat[0], cfg.model.dtype)  # None on CPUs and unknown devices
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
