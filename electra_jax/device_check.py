"""The accelerator check (launch/device_check.sh): the train step of ELECTRA-Small and -Base in
float32 and bfloat16 with the fused attention (model.attention_impl=jax: cuDNN flash attention on
NVIDIA GPUs in bfloat16), timed on synthetic tokens; tokens/s, MFU against the chip's datasheet
peak for the dtype, and peak memory, printed as a table and written as one JSON.

    python -m electra_jax.device_check --out device_check.json [--sizes small,base] [--steps 10]

Imports only the train step's stack (step_bench.py), so it runs on a host with jax, flax, optax,
orbax-checkpoint, sentencepiece, numpy and ml-collections.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax

from electra_jax.config import default_config
from electra_jax.step_bench import bench_step

# batch x sequence per size: Small at its pretraining length, Base at 512 (the reference's final phase)
SHAPES = {"tiny": (8, 32), "small": (128, 128), "base": (32, 512), "large": (16, 512)}
DTYPES = ("float32", "bfloat16")


def case_config(size: str, dtype: str, batch: int, seq: int):
    c = default_config(size)
    c.data.update(dir="/unused", seq_length=seq)
    c.train.batch_size = batch
    c.model.update(dtype=dtype, attention_impl="jax", attention_dropout_rate=0.0)
    return c


def run(sizes, steps: int, warmup: int, vocab_size: int, batch: int | None = None, seq: int | None = None) -> dict:
    cases = []
    for size in sizes:
        b, s = batch or SHAPES[size][0], seq or SHAPES[size][1]
        for dtype in DTYPES:
            start = time.perf_counter()
            r = bench_step(case_config(size, dtype, b, s), vocab_size, steps=steps, warmup=warmup)
            cases.append(dict(size=size, dtype=dtype, batch=b, seq_length=s, wall_seconds=time.perf_counter() - start,
                              **{k: r.get(k) for k in ("step_seconds", "tokens_per_second", "model_flops_per_second",
                                                       "mfu_nominal", "compile_seconds", "memory_bytes",
                                                       "device_peak_bytes_in_use", "loss")}))
            print(format_row(cases[-1]), flush=True)
    device = jax.devices()[0]
    return dict(device_kind=device.device_kind, platform=device.platform, devices=jax.device_count(),
                jax=jax.__version__, python=platform.python_version(), cases=cases)


def format_row(c: dict) -> str:
    mfu = f"{c['mfu_nominal']:.1%}" if c.get("mfu_nominal") is not None else "n/a (no datasheet peak)"
    peak = c.get("device_peak_bytes_in_use") or (c.get("memory_bytes") or {}).get("peak")
    memory = f"{peak / 2 ** 30:.2f} GiB" if peak else "n/a"
    return (f"{c['size']:>5} {c['dtype']:>8} {c['batch']}x{c['seq_length']}: {c['tokens_per_second']:,.0f} tokens/s, "
            f"step {c['step_seconds'] * 1e3:.1f} ms, MFU {mfu}, peak memory {memory}, compile {c['compile_seconds']:.0f} s")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the JSON to write")
    p.add_argument("--sizes", default="small,base", help=f"comma-separated, of {sorted(SHAPES)}")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--vocab_size", type=int, default=30522)
    p.add_argument("--batch", type=int, help="every case's batch (default: per size, SHAPES)")
    p.add_argument("--seq", type=int, help="every case's sequence length (default: per size, SHAPES)")
    a = p.parse_args(argv)
    sizes = a.sizes.split(",")
    unknown = [s for s in sizes if s not in SHAPES]
    if unknown:
        p.error(f"--sizes: unknown {unknown}; choose from {sorted(SHAPES)}")
    with open(a.out, "w") as f:  # an unwritable --out fails now, not after the benchmarks
        f.write("{}")
    result = run(sizes, a.steps, a.warmup, a.vocab_size, a.batch, a.seq)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
