"""The step-time experiments of docs/performance.md that did not become code: each variant is the
real train step with one thing changed, timed by step_bench.bench_step in its own process (environment
variables such as the PRNG and XLA flags take effect at start-up), one after another in one run so
that their ratios to the baseline are comparable.

    python tools/perf_variants.py --config configs/electra_small.py --config.model.vocab_size=30522 \\
        --config.train.batch_size=32 --config.data.seq_length=128 [--variants a,b] [--json F] [--tasks]

--tasks times the fine-tuning step and the batched forward (bench.bench_task_steps) instead.

A research tool, not part of the package (nothing in electra_jax imports it).

Variants that replace code do so by swapping a module attribute before the step is built; they
are experiments, not options.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from electra_jax import bench, cli, objective, step, step_bench
from electra_jax import model as model_lib

# name -> (environment, config overrides, code change)
VARIANTS = {
    "baseline": ({}, [], None),
    "gumbel_max_sampling": ({}, [], "gumbel"),
    "prng_rbg": ({"JAX_DEFAULT_PRNG_IMPL": "rbg"}, [], None),
    "prng_unsafe_rbg": ({"JAX_DEFAULT_PRNG_IMPL": "unsafe_rbg"}, [], None),
    "fused_qkv": ({}, [], "fused_qkv"),
    "flattened_optimizer": ({}, [], "flatten"),
    "xla_concurrency_scheduler": ({"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}, [], None),
    "xla_onednn": ({"XLA_FLAGS": "--xla_cpu_use_onednn=true"}, [], None),
    "xla_ynnpack_off": ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}, [], None),
    "xla_no_multithread_eigen": ({"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}, [], None),
    "malloc_4k_pages": ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, [], None),  # as before huge_page_malloc_env
    "no_dropout": ({}, ["--config.model.dropout_rate=0.0", "--config.model.attention_dropout_rate=0.0"], None),
    "jax_attention_no_attention_dropout": ({}, ["--config.model.attention_impl=jax",
                                                "--config.model.attention_dropout_rate=0.0"], None),
}


def _gumbel_max(uniform, logits, temperature, block=None):
    """The sampler before: Gumbel noise over the whole vocabulary, then argmax (its key is made
    from the step's uniform numbers, which the inverse-CDF sampler would have used)."""
    rng = jax.random.key(jnp.sum(jax.lax.bitcast_convert_type(uniform, jnp.uint32)))
    logits = jax.lax.stop_gradient(logits.astype(jnp.float32))
    return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


def _fused_qkv_attention():
    """Self-attention with the Q, K and V kernels concatenated at compute time into one
    [H, 3H] matmul; the parameters stay three {kernel, bias} pairs, as checkpoints have them."""

    class KernelAndBias(nn.Module):
        cfg: object
        features: int

        @nn.compact
        def __call__(self, in_features):
            names = ("embed", "heads")
            kernel = self.param("kernel", model_lib._dense_init(self.cfg, names), (in_features, self.features),
                                self.cfg.param_dtype)
            return kernel, self.param("bias", model_lib._zeros(names[-1:]), (self.features,), self.cfg.param_dtype)

    class FusedQKVAttention(nn.Module):
        cfg: object

        @nn.compact
        def __call__(self, x, mask, deterministic: bool):
            c = self.cfg
            parts = [KernelAndBias(c, c.hidden_size, name=n)(x.shape[-1]) for n in ("query", "key", "value")]
            qkv = jnp.dot(x.astype(c.dtype), jnp.concatenate([k for k, _ in parts], 1).astype(c.dtype)) \
                + jnp.concatenate([b for _, b in parts]).astype(c.dtype)
            q, k, v = (t.reshape(*t.shape[:-1], c.num_heads, -1) for t in jnp.split(qkv, 3, axis=-1))
            rng = self.make_rng("dropout") if not deterministic and c.attention_dropout_rate > 0 else None
            bias = model_lib.alibi_logits(c.num_heads, x.shape[-2]).astype(q.dtype) if c.attention_bias == "alibi" else None
            y = nn.dot_product_attention(q, k, v, bias=bias, mask=mask, dropout_rng=rng, dropout_rate=c.attention_dropout_rate,
                                         deterministic=deterministic, dtype=c.dtype)
            return model_lib.dense_layer(c, c.hidden_size, ("heads", "embed"), "output")(
                y.reshape(*y.shape[:-2], c.hidden_size))

    model_lib.SelfAttention = FusedQKVAttention


def _apply_code_change(change: str | None) -> None:
    if change == "gumbel":
        objective.sample_tokens = _gumbel_max
    elif change == "fused_qkv":
        _fused_qkv_attention()
    elif change == "flatten":  # optax.flatten: the optimizer over one concatenated vector
        make = step.make_optimizer
        step.make_optimizer = lambda *a, **k: optax.flatten(make(*a, **k))


def _run_one(name: str, argv: list[str]) -> dict:
    env, overrides, _ = VARIANTS[name]
    base_env = cli.huge_page_malloc_env(os.environ) or os.environ  # what an electra-jax command runs with
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name] + argv + overrides,
                         capture_output=True, text=True, env={**base_env, **env})
    if out.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--one":
        _apply_code_change(VARIANTS[argv[1]][2])
        def flags_of(flags, fv):
            flags.DEFINE_integer("steps", 6, "timed steps", flag_values=fv)
            flags.DEFINE_bool("tasks", False, "time the fine-tuning step and the forward", flag_values=fv)
        fv = cli._config_command_flags(argv[2:], "perf_variants", flags_of)
        if not fv.config.model.vocab_size:
            raise SystemExit("perf_variants: set --config.model.vocab_size (the vocabulary of the synthetic batches)")
        if fv.tasks:
            tasks = bench.bench_task_steps(fv.config, fv.config.model.vocab_size, steps=fv.steps, warmup=1)
            print(json.dumps(dict(variant=argv[1], step_seconds=tasks["inference_seconds"], **tasks)))
            return
        result = step_bench.bench_step(fv.config, fv.config.model.vocab_size, steps=fv.steps, warmup=1)
        print(json.dumps(dict(variant=argv[1], step_seconds=result["step_seconds"], loss=result["loss"])))
        return
    names, out_file = list(VARIANTS), None
    rest = []
    for a in argv:
        if a.startswith("--variants="):
            names = a.split("=", 1)[1].split(",")
        elif a.startswith("--json="):
            out_file = a.split("=", 1)[1]
        else:
            rest.append(a)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    results = []
    for name in names:
        results.append(_run_one(name, rest))
        base = results[0]["step_seconds"]
        print(f"{name:40s} {results[-1]['step_seconds']:.3f} s  ({results[-1]['step_seconds'] / base:.2f}x the first)"
              + (f"  fine-tuning step {results[-1]['finetune_step_seconds']:.3f} s" if "--tasks" in rest else ""),
              flush=True)
    if out_file:
        with open(out_file, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
