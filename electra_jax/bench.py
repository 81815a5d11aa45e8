"""Performance measurement beyond the train step (step_bench.py): the fine-tuning step and the
batched forward, where the step's time goes, the input pipeline's rate, and fine-tuning side by
side with transformers (dev scores and examples/s). The FLOP accounting lives in flops.py.
"""
from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax import profile, sharding
from electra_jax.config import max_predictions
from electra_jax.data import pipeline
from electra_jax.data.prepare import load_metadata
from electra_jax.finetune.model import FinetuneModel
from electra_jax.finetune.run import INPUTS, Finetuner, FinetuneState, make_steps, mean_std
from electra_jax.flops import train_flops_per_step
from electra_jax.model import model_configs
from electra_jax.optim import make_optimizer
from electra_jax.step import build_training, init_train_state
from electra_jax.step_bench import SPECIAL_IDS, median_seconds, synthetic_batch

def synthetic_task_batch(batch: int, seq: int, vocab_size: int) -> dict:
    """synthetic_batch plus a 0/1 label per sequence: what both sides of the task-step comparison train on."""
    arrays = synthetic_batch(batch, seq, vocab_size)
    arrays["labels"] = arrays["input_ids"][:, 1] % 2
    return arrays


def bench_task_steps(config, vocab_size: int, steps: int = 10, warmup: int = 2, devices=None,
                     profile_dir: str | None = None) -> dict:
    """The fine-tuning train step and the batched forward (what `predict` and fine-tuning's
    evaluation run) of the config's discriminator-sized encoder under a 2-class head, compiled as
    `finetune` compiles them (finetune.run.make_steps), on the synthetic batch. Seconds per batch;
    with `profile_dir`, each one's time by kind of op too."""
    devices = list(devices if devices is not None else jax.devices())
    mesh, rules = sharding.make_mesh(config, devices), sharding.axis_rules(config)
    disc_cfg, _ = model_configs(config, vocab_size)
    model = FinetuneModel(disc_cfg, kind="classification", num_outputs=2)
    tx = make_optimizer(config.train)
    arrays = synthetic_task_batch(config.train.batch_size, config.data.seq_length, vocab_size)

    def init(rng):
        params = model.init(rng, *(jnp.asarray(arrays[k][:1]) for k in INPUTS))["params"]
        return FinetuneState(jnp.zeros((), jnp.int32), params, tx.init(params))

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        plan = sharding.sharded_init(init, mesh, rules)
        state = plan.init(jax.random.key(0))
        train, predict = make_steps(model, tx, plan.shardings, mesh)
        batch = sharding.global_batch(arrays, sharding.batch_sharding(mesh))
        rng = jax.random.key(1)
        train = train.lower(state, batch, rng).compile()
        predict = predict.lower(state.params, batch).compile()
        states = [state]

        def train_step():
            states[0], loss = train(states[0], batch, rng)
            return loss

        forward = lambda: predict(states[0].params, batch)
        result = dict(finetune_step_seconds=median_seconds(train_step, steps, warmup),
                      inference_seconds=median_seconds(forward, steps, warmup))
        if profile_dir:
            result["profile"] = {
                "finetune_step": profile.profile_calls(train_step, train.as_text(), 3, f"{profile_dir}/finetune_step"),
                "inference": profile.profile_calls(forward, predict.as_text(), 3, f"{profile_dir}/inference")}
        return result


def step_breakdown(config, vocab_size: int, repeats: int = 5) -> dict:
    """Seconds of the parts of an ELECTRA step, each jitted alone (forward + backward of the
    discriminator, of the generator at the masked positions, the optimizer update), and GFLOP/s of
    lone matmuls at the discriminator's shapes: where the step's time goes."""
    training = build_training(config, vocab_size, SPECIAL_IDS)
    model, tx = training.model, training.tx
    b, s = config.train.batch_size, config.data.seq_length
    state = nn.meta.unbox(init_train_state(model, tx, s, training.objective.max_predictions, jax.random.key(0)))
    batch = {k: jnp.asarray(v) for k, v in synthetic_batch(b, s, vocab_size).items()}
    args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    rngs = {"dropout": jax.random.key(1)}
    positions = jnp.tile(jnp.arange(1, max_predictions(config) + 1)[None], (b, 1))
    disc = jax.jit(jax.grad(lambda p: model.apply({"params": p}, *args, False, method="discriminator_logits",
                                                  rngs=rngs).sum()))
    gen = jax.jit(jax.grad(lambda p: model.apply({"params": p}, *args, positions, False, method="generator_logits",
                                                 rngs=rngs).sum()))
    update = jax.jit(lambda g, o, p: tx.update(g, o, p)[0])
    grads = disc(state.params)
    out = {"discriminator_fwd_bwd_seconds": median_seconds(lambda: disc(state.params), repeats),
           "generator_fwd_bwd_seconds": median_seconds(lambda: gen(state.params), repeats),
           "optimizer_update_seconds": median_seconds(lambda: update(grads, state.opt_state, state.params), repeats)}
    flops = train_flops_per_step(config, vocab_size)
    out["discriminator_model_flops_per_second"] = flops["discriminator"] / out["discriminator_fwd_bwd_seconds"]
    h, f = config.model.hidden_size, config.model.intermediate_size
    for m, k, n in ((b * s, h, h), (b * s, h, f), (b * s, f, h)):
        x, y = jnp.ones((m, k), config.model.dtype), jnp.ones((k, n), config.model.dtype)
        matmul = jax.jit(jnp.dot)
        out[f"matmul_{m}x{k}x{n}_flops_per_second"] = 2 * m * k * n / median_seconds(lambda: matmul(x, y), repeats)
    return out


def bench_data(data_dir: str, batch_size: int, batches: int = 200, worker_count: int = 0) -> dict:
    """Examples per second of the grain pipeline over prepared data (decode, shuffle, batch)."""
    meta = load_metadata(data_dir)
    it = iter(pipeline.make_dataset(meta, "train", local_batch_size=batch_size, seed=0, worker_count=worker_count))
    next(it)  # open files, start threads
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    return dict(examples_per_second=batches * batch_size / seconds, batches=batches, batch_size=batch_size)


# Fine-tuning as `bench finetune` compares it with transformers: the optimizer both sides can
# express exactly (Adam with bias correction, optax's linear warmup-then-decay = transformers'
# get_linear_schedule_with_warmup) and no layer-wise decay (transformers has none built in).
FINETUNE_COMPARISON = (("train.bias_correction", True), ("train.schedule", "linear"),
                       ("train.layerwise_lr_decay", 1.0))


def _throughput(runs: list[dict]) -> float:
    return sum(r["train_examples"] for r in runs) / sum(r["train_seconds"] for r in runs)


def bench_finetune(config, workdir: str, reference=None) -> dict:
    """Fine-tune config.init on config.task over config.num_seeds seeds with electra-jax and (given
    `reference`, e.g. bench_torch.finetune_reference) with transformers + torch on the same arrays,
    head and hyperparameters: dev scores (best epoch, as `finetune` reports) and training
    examples/s (compile included)."""
    for field, value in FINETUNE_COMPARISON:
        section, name = field.split(".")
        config[section][name] = value
    finetuner = Finetuner(config, os.path.join(workdir, "electra_jax"))
    summary = finetuner.run()
    main = summary["main_metric"]
    # GLUE-style metrics are fractions; the entity and SQuAD scorers report percentages
    percent = 1.0 if finetuner.task.kind in ("tagging", "span") else 100.0
    result = dict(task=config.task, init=config.init, main_metric=main, seeds=summary["seeds"], percent=percent,
                  epochs=finetuner.epochs, learning_rate=finetuner.learning_rate, batch_size=config.train.batch_size,
                  max_seq_length=config.max_seq_length, train_examples=len(finetuner.splits["train"][0]),
                  dev_examples=len(finetuner.splits["dev"][0]), settings=dict(FINETUNE_COMPARISON),
                  electra_jax=dict(dev=[r["dev"][main] for r in summary["runs"]],
                                   examples_per_second=_throughput(summary["runs"])))
    if reference is not None:
        runs = reference(finetuner, summary["seeds"])
        result["transformers"] = dict(dev=[r["dev"][main] for r in runs], examples_per_second=_throughput(runs),
                                      runs=runs)
        result["speedup_vs_reference"] = (result["electra_jax"]["examples_per_second"]
                                          / result["transformers"]["examples_per_second"])
    return result


def finetune_table(results: list[dict]) -> str:
    """One markdown row per task and framework: dev score mean ± std over seeds, examples/s."""
    lines = ["| task | train / dev examples | framework | dev score (mean ± std) | seeds | train examples/s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for framework in ("electra_jax", "transformers"):
            if framework in r:
                scores = [r.get("percent", 100.0) * v for v in r[framework]["dev"]]
                mean, std = mean_std(scores)
                values = ", ".join(f"{v:.1f}" for v in scores)
                lines.append(f"| {r['task']} ({r['main_metric']}) | {r['train_examples']} / {r['dev_examples']} | "
                             f"{framework.replace('_', '-')} | {mean:.1f} ± {std:.1f} | {values} | "
                             f"{r[framework]['examples_per_second']:.1f} |")
    return "\n".join(lines)
