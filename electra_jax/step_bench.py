"""The timed train step on synthetic tokens (`bench step`, launch/device_check.sh) and the peaks its
FLOP rate is measured against: a matmul measured on the same devices, and a CPU's physical peak.

Imports only the train step's own stack (jax, flax, optax, step.py), so it runs on an accelerator
host where the data and logging stack is not installed.
"""
from __future__ import annotations

import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from electra_jax import profile, sharding
from electra_jax.flops import nominal_peak, train_flops_per_step
from electra_jax.step import build_training, create_train_state, make_train_step


SPECIAL_IDS = dict(pad=0, unk=1, cls=2, sep=3, mask=4)


def median_seconds(fn, repeats: int, warmup: int = 0) -> float:
    """Median wall time of fn() (JAX results waited for) over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measured_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 10, devices=None) -> float:
    """FLOP/s of a large square matmul on all the given devices (data parallel over them): the
    practical peak the model's matmuls can hope for on this machine."""
    devices = list(devices if devices is not None else jax.devices())
    mesh = jax.make_mesh((len(devices),), ("d",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    a = jax.device_put(jnp.ones((len(devices), n, n), dtype), sharding)
    b = jax.device_put(jnp.ones((len(devices), n, n), dtype), sharding)
    matmul = jax.jit(lambda x, y: jnp.einsum("dij,djk->dik", x, y))
    jax.block_until_ready(matmul(a, b))
    return 2.0 * len(devices) * n ** 3 / median_seconds(lambda: matmul(a, b), repeats)


FMA_UNITS_PER_CORE = 2  # x86 server cores since Haswell / Zen 2 issue two vector FMAs per cycle


def cpu_peak_flops(cpuinfo: str | None = None, cores: int | None = None) -> dict:
    """The physical float32 peak of the CPU cores this process may use, each factor shown:
    cores x FMA units x SIMD lanes (8 float32 with AVX2, 16 with AVX-512) x 2 FLOPs per FMA x the
    clock /proc/cpuinfo reports (turbo can run higher: the peak at that clock is a floor, not a
    ceiling). A measured rate above it means the measurement is wrong."""
    if cpuinfo is None:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    mhz = [float(line.split(":", 1)[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz")]
    cores = cores or len(os.sched_getaffinity(0))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else 4
    hz = max(mhz) * 1e6 if mhz else float("nan")
    flops_per_cycle = FMA_UNITS_PER_CORE * lanes * 2
    return dict(cores=cores, fma_units=FMA_UNITS_PER_CORE, float32_lanes=lanes, flops_per_cycle_per_core=flops_per_cycle,
                clock_hz=hz, peak_flops=cores * flops_per_cycle * hz,
                arithmetic=f"{cores} cores x {FMA_UNITS_PER_CORE} FMA units x {lanes} lanes x 2 FLOPs x "
                           f"{hz / 1e9:.3f} GHz = {cores * flops_per_cycle * hz / 1e9:.0f} GFLOP/s")


def synthetic_batch(batch: int, seq: int, vocab_size: int, seed: int = 0) -> dict:
    """Random real tokens with [CLS] ... [SEP], full length: the shape of a packed pretraining batch."""
    rs = np.random.RandomState(seed)
    ids = rs.randint(len(SPECIAL_IDS), vocab_size, size=(batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = SPECIAL_IDS["cls"], SPECIAL_IDS["sep"]
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))


def bench_step(config, vocab_size: int, steps: int = 10, warmup: int = 2, devices=None,
               profile_dir: str | None = None) -> dict:
    """Compile and time the real train step (make_train_step) on synthetic tokens; with
    `profile_dir`, also trace 3 more steps there and split their time by kind of op."""
    devices = list(devices if devices is not None else jax.devices())
    mesh = sharding.make_mesh(config, devices)
    rules = sharding.axis_rules(config)
    training = build_training(config, vocab_size, SPECIAL_IDS)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, shardings = create_train_state(training, mesh, rules, config.data.seq_length, jax.random.key(0))
        step = make_train_step(training, shardings, mesh)
        batch = sharding.global_batch(synthetic_batch(config.train.batch_size, config.data.seq_length, vocab_size),
                                      sharding.batch_sharding(mesh))
        rng = jax.random.key(1)
        start = time.perf_counter()
        compiled = step.lower(state, batch, rng).compile()
        compile_seconds = time.perf_counter() - start
        last = {"state": state}

        def run_once():  # the state is donated: each step consumes the one before
            last["state"], last["metrics"] = compiled(last["state"], batch, rng)
            return last["metrics"]

        step_seconds = median_seconds(run_once, steps, warmup)
        metrics = last["metrics"]
        traced = profile.profile_calls(run_once, compiled.as_text(), 3, profile_dir) if profile_dir else None
    memory = compiled.memory_analysis()
    flops = train_flops_per_step(config, vocab_size)
    tokens = config.train.batch_size * config.data.seq_length
    result = dict(step_seconds=step_seconds, tokens_per_second=tokens / step_seconds,
                  model_flops_per_step=flops["total"], model_flops_per_second=flops["total"] / step_seconds,
                  flops_by_part=flops, compile_seconds=compile_seconds, devices=len(devices),
                  device_kind=devices[0].device_kind, loss=float(metrics["loss"]),
                  glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))  # malloc settings move step times
    if memory is not None:
        result["memory_bytes"] = dict(arguments=memory.argument_size_in_bytes, outputs=memory.output_size_in_bytes,
                                      temporaries=memory.temp_size_in_bytes,
                                      peak=memory.argument_size_in_bytes + memory.temp_size_in_bytes
                                      + memory.output_size_in_bytes - memory.alias_size_in_bytes)
    if traced:
        result["profile"] = traced
    stats = devices[0].memory_stats() or {}  # GPUs and TPUs: what the allocator has held at most
    if "peak_bytes_in_use" in stats:
        result["device_peak_bytes_in_use"] = stats["peak_bytes_in_use"]
    peak = nominal_peak(devices[0], config.model.dtype)
    if peak:
        result["mfu_nominal"] = result["model_flops_per_second"] / (peak * len(devices))
    return result
