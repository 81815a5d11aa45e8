"""The fine-tuning loop: one sharded train step (the same mesh and rules as pretraining), an
evaluation each epoch, the best epoch's checkpoint and predictions kept, several seeds summarized.

WORKDIR/seed_S/metrics.json   one entry per epoch (train loss, dev metrics, time)
WORKDIR/seed_S/best/          parameters of the best epoch on the dev set (orbax)
WORKDIR/seed_S/...            dev (and test) predictions of that epoch, in each benchmark's format
WORKDIR/summary.json          per seed, and mean / std / median over seeds
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

import flax
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from electra_jax import sharding, workdir as workdir_lib
from electra_jax.config import ConfigError
from electra_jax.data.corpus import DataError
from electra_jax.finetune import config as config_lib
from electra_jax.finetune.features import IGNORE
from electra_jax.finetune.model import FinetuneModel
from electra_jax.finetune.pretrained import load_encoder, pretrained_seq_length
from electra_jax.finetune.tasks import get_task
from electra_jax.optim import layerwise_lr_decay, learning_rate_schedule, make_optimizer
from electra_jax.progress import StepBar

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PADDING_LOGIT = -1e9  # a span logit at a padding position


@flax.struct.dataclass
class FinetuneState:
    step: jax.Array
    params: Any
    opt_state: Any


def task_loss(kind: str, outputs, batch):
    """Mean loss of a batch: cross-entropy for classes and tags (ignoring unlabelled positions),
    squared error for regression, mean of start and end cross-entropy over the real tokens for spans."""
    if kind == "classification":
        return optax.softmax_cross_entropy_with_integer_labels(outputs, batch["labels"]).mean()
    if kind == "regression":
        return jnp.mean((outputs - batch["labels"]) ** 2)
    if kind == "tagging":
        labelled = batch["labels"] != IGNORE
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs, jnp.where(labelled, batch["labels"], 0))
        return jnp.sum(ce * labelled) / jnp.maximum(jnp.sum(labelled), 1)
    # an answer never starts or ends in the padding: it is no candidate (and a cut batch scores the same)
    outputs = jnp.where(batch["attention_mask"][..., None] > 0, outputs, PADDING_LOGIT)
    start = optax.softmax_cross_entropy_with_integer_labels(outputs[..., 0], batch["start_positions"])
    end = optax.softmax_cross_entropy_with_integer_labels(outputs[..., 1], batch["end_positions"])
    return ((start + end) / 2).mean()


def make_steps(model, tx, state_shardings, mesh):
    def train_step(state, batch, rng):
        def loss_fn(params):
            out = model.apply({"params": params}, *(batch[k] for k in INPUTS), deterministic=False,
                              rngs={"dropout": jax.random.fold_in(rng, state.step)})
            return task_loss(model.kind, out, batch)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return FinetuneState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), loss

    def predict_step(params, batch):
        return model.apply({"params": params}, *(batch[k] for k in INPUTS), deterministic=True)

    batch, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    train = jax.jit(train_step, donate_argnums=0, in_shardings=(state_shardings, batch, replicated),
                    out_shardings=(state_shardings, replicated))
    predict = jax.jit(predict_step, in_shardings=(state_shardings.params, batch))
    return train, predict


def batch_length(arrays: dict, rows: np.ndarray, bucket: int) -> int:
    """The sequence length a batch of `rows` is cut to: its longest real sequence (right padding)
    rounded up to a multiple of `bucket`, at most the arrays' length; their length when bucket is 0.
    From the global rows, so every process cuts the same."""
    full = arrays["input_ids"].shape[1]
    if not bucket:
        return full
    longest = int(arrays["attention_mask"][rows].sum(1).max())
    return min(full, -(-max(longest, 1) // bucket) * bucket)


def cut_rows(arrays: dict, rows: np.ndarray, length: int) -> dict:
    """`rows` of every array, its sequence axis (the arrays' second, where it is the full length) cut to `length`."""
    full = arrays["input_ids"].shape[1]
    return {k: v[rows][:, :length] if v.ndim > 1 and v.shape[1] == full else v[rows] for k, v in arrays.items()}


def _local_rows(arrays: dict, rows: np.ndarray, batch_sharding, length: int | None = None) -> dict:
    """This process's share of a global batch of `rows` (cut to `length` when given), assembled into global arrays."""
    n = len(rows) // jax.process_count()
    mine = rows[jax.process_index() * n:(jax.process_index() + 1) * n]
    local = {k: v[mine] for k, v in arrays.items()} if length is None else cut_rows(arrays, mine, length)
    return sharding.global_batch(local, batch_sharding)


def _host(x) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int):
    """The rows of each training batch of one epoch: a fresh shuffle per seed and epoch, the last
    partial batch dropped (the same order in `bench finetune --reference`'s PyTorch run)."""
    order = grain.MapDataset.range(num_examples).shuffle(seed=seed * 1000 + epoch)
    for rows in order.batch(batch_size, drop_remainder=True):
        yield np.asarray(rows)


UNKNOWN_WARNING_SHARE = 0.03


def unknown_share(arrays: dict, unk_id: int) -> float:
    """The share of the real tokens that are [UNK]."""
    real = arrays["attention_mask"] > 0
    return float(np.sum((arrays["input_ids"] == unk_id) & real) / max(int(np.sum(real)), 1))


def warn_unknown_tokens(arrays: dict, tokenizer, source: str) -> None:
    """A tokenizer from another language or domain maps much of the text to [UNK], which the model
    cannot read: say so before training (e.g. Chinese text through an English vocabulary)."""
    share = unknown_share(arrays, tokenizer.special_ids["unk"])
    if share > UNKNOWN_WARNING_SHARE:
        logging.warning("%.0f%% of the training tokens are [UNK] under the tokenizer of %s: it does not cover "
                        "this text's language or script; pretrain or prepare a tokenizer on such text", 100 * share,
                        source)


class Finetuner:
    """Reads, tokenizes and checks everything before the first compile."""

    def __init__(self, config, workdir: str, devices=None):
        config_lib.validate(config)
        self.config, self.workdir = config, os.path.abspath(workdir)
        self.task = get_task(config)
        self.encoder_cfg, self.pretrained, self.tokenizer, self.source = load_encoder(config.init, config.model.size)
        self.from_scratch = config.from_scratch or self.pretrained is None  # prepared data has no weights
        pretrained_length = None if self.from_scratch else pretrained_seq_length(config.init)
        if pretrained_length and config.max_seq_length > pretrained_length and jax.process_index() == 0:
            logging.warning("max_seq_length=%d is beyond the %d tokens %s was pretrained on: its position "
                            "embeddings past %d were never trained; fine-tuning trains them from their start",
                            config.max_seq_length, pretrained_length, config.init, pretrained_length)
        m = config.model
        self.encoder_cfg = self.encoder_cfg.replace(dropout_rate=m.dropout_rate,
                                                    attention_dropout_rate=m.attention_dropout_rate, dtype=m.dtype)
        if config.max_seq_length > self.encoder_cfg.max_position_embeddings:
            raise ConfigError(f"max_seq_length={config.max_seq_length} exceeds the encoder's "
                              f"{self.encoder_cfg.max_position_embeddings} positions")
        devices = list(devices if devices is not None else jax.devices())
        self.mesh = sharding.make_mesh(config, devices)
        self.rules = sharding.axis_rules(config)
        for name in ("batch_size", "eval_batch_size"):
            sharding.check_batch_size(f"train.{name}", config.train[name], self.mesh)
        self.splits = {}
        for split in self.task.splits:  # train first: it may define the label set
            examples = self.task.read(split)
            if examples:
                arrays, aux = self.task.featurize(examples, self.tokenizer, split)
                self.splits[split] = (examples, arrays, aux)
        if "dev" not in self.splits:
            raise DataError("no dev examples: give data.dev_file (or keep data.dev_fraction > 0)")
        warn_unknown_tokens(self.splits["train"][1], self.tokenizer, self.source)
        n_train = len(self.splits["train"][1]["input_ids"])
        if n_train < config.train.batch_size:
            raise DataError(f"{n_train} training examples, fewer than one batch of {config.train.batch_size}")
        self.steps_per_epoch = n_train // config.train.batch_size
        self.epochs = self.task.epochs()
        self.learning_rate, self.lr_decay = config_lib.resolved_hyperparameters(config, self.encoder_cfg)

    def run(self) -> dict:
        with workdir_lib.locked(self.workdir) if jax.process_index() == 0 else contextlib.nullcontext():
            return self._run()

    def _run(self) -> dict:
        if jax.process_index() == 0:
            workdir_lib.save_config(self.workdir, self.config.to_dict())
        seeds = [self.config.seed + i for i in range(self.config.num_seeds)]
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            self._build()
            results = [self.run_seed(seed) for seed in seeds]
        summary = summarize(self.task, results, seeds)
        source = f"random weights, architecture of {self.source}" if self.config.from_scratch else self.source
        summary.update(task=self.config.task, init=source, epochs=self.epochs, learning_rate=self.learning_rate,
                       layerwise_lr_decay=self.lr_decay, steps_per_epoch=self.steps_per_epoch)
        if jax.process_index() == 0:
            with open(os.path.join(self.workdir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
        return summary

    def _optimizer(self):
        t = self.config.train.to_dict()
        total = self.steps_per_epoch * self.epochs
        t.update(num_steps=total, warmup_steps=int(self.config.train.warmup_fraction * total),
                 learning_rate=self.learning_rate)
        t = ml_collections.ConfigDict(t)
        decay = layerwise_lr_decay(self.lr_decay, self.encoder_cfg.num_layers)
        return make_optimizer(t, learning_rate_schedule(t), extra=decay)

    def _build(self):
        """Model, optimizer, state shardings and the compiled steps: one set for all seeds."""
        self.model = FinetuneModel(self.encoder_cfg, kind=self.task.kind, num_outputs=self.task.num_outputs)
        self.tx = self._optimizer()
        self.plan = sharding.sharded_init(self._init_fn, self.mesh, self.rules)
        self.shardings = self.plan.shardings
        self.steps = make_steps(self.model, self.tx, self.shardings, self.mesh)

    def _init_fn(self, rng):
        ids = jnp.zeros((1, self.config.max_seq_length), jnp.int32)
        params = self.model.init(rng, ids, ids, ids)["params"]
        return FinetuneState(jnp.zeros((), jnp.int32), params, self.tx.init(params))

    def _init_state(self, seed):
        """Random head, pretrained embeddings and encoder, placed on the mesh by their logical axes."""
        state = self.plan.init(jax.random.key(seed))
        if self.from_scratch:
            return state
        return state.replace(params=sharding.place_subtrees(state.params, self.pretrained, self.shardings.params,
                                                            f"the pretrained ({self.source})"))

    def run_seed(self, seed: int) -> dict:
        cfg, task = self.config, self.task
        out_dir = os.path.join(self.workdir, f"seed_{seed}")
        os.makedirs(out_dir, exist_ok=True)
        state = self._init_state(seed)
        train_step, predict = self.steps
        batch_sharding = sharding.batch_sharding(self.mesh)
        _, train_arrays, _ = self.splits["train"]
        rng = jax.random.key(seed + 1)
        history, best = [], None
        bar = StepBar(self.steps_per_epoch * self.epochs, desc=f"{cfg.task} seed {seed}",
                      disable=jax.process_index() != 0)
        for epoch in range(1, self.epochs + 1):
            start, losses = time.perf_counter(), []
            for rows in epoch_batches(len(train_arrays["input_ids"]), cfg.train.batch_size, seed, epoch):
                length = batch_length(train_arrays, rows, cfg.train.length_bucket)
                state, loss = train_step(state, _local_rows(train_arrays, rows, batch_sharding, length), rng)
                losses.append(loss)
                bar.dispatched(loss)
            train_loss = float(np.mean(jax.device_get(losses)))  # waits for the epoch's last step
            entry = dict(epoch=epoch, step=int(state.step), train_loss=train_loss,
                         train_seconds=time.perf_counter() - start)
            # test sets have no labels: they are predicted only when an epoch is the new best
            outputs = {split: self.predict(predict, state.params, arrays) for split, (_, arrays, _) in
                       self.splits.items() if split not in ("train", "test")}
            examples, _, aux = self.splits["dev"]
            entry["dev"] = task.evaluate(examples, aux, outputs["dev"])
            for split in set(outputs) - {"dev"}:  # e.g. MNLI's mismatched dev set
                examples, _, aux = self.splits[split]
                entry["dev"].update({f"{split}_{k}": v for k, v in task.evaluate(examples, aux, outputs[split]).items()})
            entry["seconds"] = time.perf_counter() - start
            history.append(entry)
            bar.set_postfix(**{task.main_metric: f"{entry['dev'][task.main_metric]:.4f}"})
            if best is None or entry["dev"][task.main_metric] > best["dev"][task.main_metric]:
                best = entry
                if "test" in self.splits:
                    outputs["test"] = self.predict(predict, state.params, self.splits["test"][1])
                self._keep_best(out_dir, state.params, outputs)
            if jax.process_index() == 0:
                with open(os.path.join(out_dir, "metrics.json"), "w") as f:
                    json.dump(history, f, indent=2)
        bar.close()
        return dict(seed=seed, best_epoch=best["epoch"], dev=best["dev"], final_dev=history[-1]["dev"],
                    directory=out_dir, train_seconds=sum(e["train_seconds"] for e in history),
                    train_examples=self.steps_per_epoch * self.epochs * cfg.train.batch_size)

    def predict(self, predict, params, arrays) -> np.ndarray:
        """Model outputs for every row, in order (the last batch padded and the padding dropped)."""
        n, size = len(arrays["input_ids"]), self.config.train.eval_batch_size
        outputs = []
        for start in range(0, n, size):
            rows = np.arange(start, start + size) % n  # wrap around to fill the last batch
            batch = _local_rows({k: arrays[k] for k in INPUTS}, rows, sharding.batch_sharding(self.mesh))
            outputs.append(_host(predict(params, batch)))
        return np.concatenate(outputs)[:n]

    def _keep_best(self, out_dir, params, outputs):
        best_dir = os.path.join(out_dir, "best")
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(best_dir, params, force=True)
        checkpointer.wait_until_finished()
        if jax.process_index() == 0:
            for split, split_outputs in outputs.items():
                examples, _, aux = self.splits[split]
                self.task.write_predictions(out_dir, split, examples, aux, split_outputs)


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1; 0 for a single value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(task, results: list[dict], seeds: list[int]) -> dict:
    """Per metric over seeds: mean, std (n-1; 0 for one seed), median, and every seed's value."""
    table = {}
    for name in _numeric(results[0]["dev"]):
        values = [r["dev"][name] for r in results]
        mean, std = mean_std(values)
        table[name] = dict(mean=mean, std=std, median=float(np.median(values)), values=values)
    return dict(main_metric=task.main_metric, seeds=seeds, metrics=table, runs=results)


def format_summary(summary: dict) -> str:
    lines = [f"{summary['task']}: dev metrics of the best epoch over seeds {summary['seeds']}",
             f"{'metric':<18}{'mean':>10}{'std':>10}{'median':>10}"]
    for name, m in summary["metrics"].items():
        lines.append(f"{name:<18}{m['mean']:10.4f}{m['std']:10.4f}{m['median']:10.4f}")
    return "\n".join(lines)


def finetune(config, workdir: str) -> dict:
    return Finetuner(config, workdir).run()
