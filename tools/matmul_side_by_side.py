"""The matmuls of the batched forward, alone, in jax and in torch: does the forward's gap to
PyTorch come from the matmul kernels themselves?

    python tools/matmul_side_by_side.py --config configs/electra_small.py \\
        --config.train.batch_size=32 --config.data.seq_length=128 --json F

For the config's discriminator encoder at batch x sequence, every distinct matmul shape of its
forward (the embedding projection; per layer Q, K, V and output projections, attention scores and
the weighted sum, the two feed-forward matmuls) is timed on its own, float32, in a jitted jax
function and with torch.matmul at the same thread count, and summed as often as the forward runs
it. The same run also times both whole forwards (bench.bench_task_steps and the transformers
reference), so the matmul sums can be read against them. A research tool (it needs torch).
"""
from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

from electra_jax import bench, bench_torch, cli
from electra_jax.model import model_configs
from electra_jax.step_bench import median_seconds


def forward_matmuls(cfg, batch: int, seq: int) -> list[tuple[str, tuple, tuple, int]]:
    """(name, lhs shape, rhs shape, times per forward): a leading batch dimension on both means a
    batched matmul (one per sequence and head)."""
    tokens, h, heads = batch * seq, cfg.hidden_size, cfg.num_heads
    d = h // heads
    shapes = [("q, k, v, output projections", (tokens, h), (h, h), 4 * cfg.num_layers),
              ("attention scores q k^T", (batch * heads, seq, d), (batch * heads, d, seq), cfg.num_layers),
              ("weighted sum p v", (batch * heads, seq, seq), (batch * heads, seq, d), cfg.num_layers),
              ("feed-forward in", (tokens, h), (h, cfg.intermediate_size), cfg.num_layers),
              ("feed-forward out", (tokens, cfg.intermediate_size), (cfg.intermediate_size, h), cfg.num_layers)]
    if cfg.embedding_size != h:
        shapes.insert(0, ("embedding projection", (tokens, cfg.embedding_size), (cfg.embedding_size, h), 1))
    return shapes


def time_jax(lhs: tuple, rhs: tuple, repeats: int) -> float:
    a, b = (jnp.asarray(np.random.RandomState(i).standard_normal(s), jnp.float32) for i, s in enumerate((lhs, rhs)))
    matmul = jax.jit(jnp.matmul)
    return median_seconds(lambda: matmul(a, b), repeats, warmup=2)


def time_torch(lhs: tuple, rhs: tuple, repeats: int) -> float:
    a, b = (torch.from_numpy(np.random.RandomState(i).standard_normal(s).astype(np.float32))
            for i, s in enumerate((lhs, rhs)))
    with torch.inference_mode():
        return median_seconds(lambda: torch.matmul(a, b), repeats, warmup=2)


def _flags(flags, fv) -> None:
    flags.DEFINE_integer("repeats", 20, "timed calls per matmul", flag_values=fv)
    flags.DEFINE_integer("vocab_size", 30522, "vocabulary of the synthetic batch", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result to this file", flag_values=fv)


def main(argv: list[str]) -> None:
    fv = cli._config_command_flags(argv, "matmul_side_by_side", _flags)
    config = fv.config
    torch.set_num_threads(os.cpu_count() or 1)
    disc, _ = model_configs(config, fv.vocab_size)
    batch, seq = config.train.batch_size, config.data.seq_length
    rows = []
    for name, lhs, rhs, count in forward_matmuls(disc, batch, seq):
        j, t = time_jax(lhs, rhs, fv.repeats), time_torch(lhs, rhs, fv.repeats)
        rows.append(dict(matmul=name, lhs=lhs, rhs=rhs, per_forward=count, jax_ms=j * 1e3, torch_ms=t * 1e3,
                         jax_forward_ms=count * j * 1e3, torch_forward_ms=count * t * 1e3))
    forwards = dict(jax=bench.bench_task_steps(config, fv.vocab_size)["inference_seconds"],
                    torch=bench_torch.bench_task_reference(config, fv.vocab_size)["inference_seconds"])
    result = dict(batch=batch, seq_length=seq, threads=torch.get_num_threads(), jax=jax.__version__,
                  torch=torch.__version__, matmuls=rows,
                  matmul_sum_ms={k: sum(r[f"{k}_forward_ms"] for r in rows) for k in ("jax", "torch")},
                  forward_ms={k: v * 1e3 for k, v in forwards.items()})
    print("| matmul | shapes | per forward | jax ms | torch ms | torch / jax |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['matmul']} | {r['lhs']} x {r['rhs']} | {r['per_forward']} | {r['jax_ms']:.2f} | "
              f"{r['torch_ms']:.2f} | {r['torch_ms'] / r['jax_ms']:.2f} |")
    s, f = result["matmul_sum_ms"], result["forward_ms"]
    print(f"| all the forward's matmuls | | | {s['jax']:.0f} | {s['torch']:.0f} | {s['torch'] / s['jax']:.2f} |")
    print(f"| the whole forward | | | {f['jax']:.0f} | {f['torch']:.0f} | {f['torch'] / f['jax']:.2f} |")
    if fv.json:
        with open(fv.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
