"""A run planner for accelerators we do not have: the train step compiled for N devices (host CPU
devices standing in for the chips), its compiled cost read back, and a roofline over a chip's
published peak, memory bandwidth and interconnect.

What it reads from the compiled per-device program: FLOPs (XLA's cost analysis, recomputation
under remat included), the bytes each collective moves (all-reduce, all-gather, reduce-scatter,
all-to-all, collective-permute, from their shapes and replica groups), and XLA's memory analysis.
What it counts from the program itself: the activations the backward pass keeps (jax's saved
residuals, which model.remat changes), and from them the step's memory per chip and the HBM
traffic a fused accelerator program cannot avoid (hbm_traffic_bytes).

The model, stated once: compute time = FLOPs / peak (bf16 peak for bfloat16 compute; the float32
rate otherwise), memory time = that traffic / HBM bandwidth, and the chip does whichever is longer
(perfect overlap of the two); collectives run on a ring over the chip's interconnect and are not
overlapped with compute. That roofline is a floor; real steps reach a fraction of it (`efficiency`,
the share of the roofline a tuned step achieves: a stated assumption, default 0.5).
XLA's CPU compiler fuses far less than the TPU/GPU compilers: its `bytes accessed` is reported
beside (xla_cpu_bytes_seconds) but not used, and its memory analysis does not show what remat saves.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

import jax
import flax.linen as nn
from jax._src.ad_checkpoint import saved_residuals  # public only as print_saved_residuals

from electra_jax import sharding
from electra_jax.step_bench import SPECIAL_IDS
from electra_jax.flops import train_flops_per_step
from electra_jax.step import build_training, init_params, make_train_step, plan_train_state, train_state_bytes

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str
    bf16_flops: float        # dense bf16/fp16 matmul peak per chip
    float32_flops: float     # what float32 compute runs at (see `float32_note`)
    hbm_bytes: float
    hbm_bytes_per_second: float
    link_bytes_per_second: float  # interconnect bandwidth per chip, one direction
    float32_note: str


# Vendor datasheet figures per chip.
ACCELERATORS = {
    "v4": Accelerator("TPU v4", 275e12, 275e12, 32 * GIB, 1.2e12, 2.7e11,
                      "float32 matmuls run as one bf16 pass at JAX's default precision on TPU"),
    "v5e": Accelerator("TPU v5e", 197e12, 197e12, 16 * GIB, 8.19e11, 2.0e11,
                       "float32 matmuls run as one bf16 pass at JAX's default precision on TPU"),
    "v5p": Accelerator("TPU v5p", 459e12, 459e12, 95 * GIB, 2.765e12, 6.0e11,
                       "float32 matmuls run as one bf16 pass at JAX's default precision on TPU"),
    "v100": Accelerator("V100 SXM2 16GB", 125e12, 15.7e12, 16 * GIB, 9.0e11, 1.5e11,
                        "no TF32 on Volta: float32 runs on the CUDA cores (15.7 TFLOP/s)"),
    "a100": Accelerator("A100 SXM 40GB", 312e12, 156e12, 40 * GIB, 1.555e12, 3.0e11,
                        "float32 matmuls run as TF32 on the tensor cores (156 TFLOP/s)"),
    "h100": Accelerator("H100 SXM", 989e12, 495e12, 80 * GIB, 3.35e12, 4.5e11,
                        "float32 matmuls run as TF32 on the tensor cores (495 TFLOP/s)"),
    # a 24 GB workstation card: bf16 with float32 accumulation runs at half the fp16-accumulate
    # rate on GeForce parts; GPUs talk over PCIe 4.0 x16 (no NVLink)
    "rtx4090": Accelerator("RTX 4090 24GB", 165e12, 82.6e12, 24 * GIB, 1.008e12, 3.2e10,
                           "float32 matmuls run as TF32 on the tensor cores (82.6 TFLOP/s)"),
}

# What `plan_fit` tries, cheapest in compute first, and the share of a chip's memory a plan may
# fill (the rest: XLA's workspace, fragmentation, the runtime's own buffers).
REMAT_CHOICES = ("none", "dots_with_no_batch_dims_saveable", "full")
MEMORY_HEADROOM = 0.9

_COLLECTIVE = re.compile(
    r"= (\(.*?\)|\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\((.*)$", re.M)
_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
_BYTES = dict(pred=1, s8=1, u8=1, s16=2, u16=2, f16=2, bf16=2, s32=4, u32=4, f32=4, s64=8, u64=8, f64=8)


def _shape_bytes(shape_text: str) -> int:
    return sum(_BYTES[t] * math.prod(int(d) for d in dims.split(",") if d) for t, dims in _ARRAY.findall(shape_text))


def _group_size(attributes: str, default: int) -> int:
    """Devices per replica group, in each of the three ways HLO prints the groups."""
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", attributes)
    if mesh:
        sizes = {name: int(size) for name, size in re.findall(r"'(\w+)'=(\d+)", mesh.group(1))}
        return math.prod(sizes[name] for name in re.findall(r"'(\w+)'", mesh.group(2)))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attributes)
    if iota:
        return int(iota.group(2))
    listed = re.search(r"replica_groups=\{\{([\d,]*)\}", attributes)
    if listed and listed.group(1):
        return len(listed.group(1).split(","))
    return default


def collective_seconds(hlo_text: str, devices: int, link_bytes_per_second: float) -> dict:
    """Bytes each chip sends for the program's collectives and the time on a ring: all-reduce
    2(n-1)/n x size, all-gather and reduce-scatter (n-1)/n x the full size, all-to-all (n-1)/n x
    size, collective-permute the size."""
    by_kind, seconds = {}, 0.0
    for result, kind, attributes in _COLLECTIVE.findall(hlo_text):
        if kind == "all-gather" and result.startswith("("):  # async start: (operand, result)
            result = result.rsplit(",", 1)[-1]
        size, n = _shape_bytes(result), _group_size(attributes, devices)
        if kind == "reduce-scatter":
            size *= n  # the result is one shard; the ring moves the whole
        factor = {"all-reduce": 2 * (n - 1) / n, "collective-permute": 1.0}.get(kind, (n - 1) / n)
        sent = factor * size
        by_kind[kind] = by_kind.get(kind, 0.0) + sent
        seconds += sent / link_bytes_per_second
    return dict(bytes_sent_by_kind=by_kind, seconds=seconds)


_ACTIVATION_LINES: dict = {}


def activation_bytes(config, vocab_size: int, batch_size: int) -> int:
    """Bytes the backward pass keeps from the forward pass for `batch_size` sequences: the saved
    residuals of the training loss as jax's autodiff (and model.remat's policy) leaves them, the
    parameters excluded. A count of the program, not of a compiler's schedule: XLA's CPU memory
    analysis does not show what remat saves, because the CPU scheduler runs every recomputation
    as early as it can; accelerator compilers schedule for memory.
    (jax.ad_checkpoint.print_saved_residuals prints the same list.)
    Every residual is either per sequence or independent of the batch, so the count is a line in
    the batch size: traced at 1 and 2 sequences once per model, objective and length."""
    key = (json.dumps([config.model.to_dict(), config.pretrain.to_dict(), config.objective, config.data.seq_length],
                      sort_keys=True, default=str), vocab_size)
    if key not in _ACTIVATION_LINES:
        one, two = (_traced_activation_bytes(config, vocab_size, b) for b in (1, 2))
        _ACTIVATION_LINES[key] = (one - (two - one), two - one)
    constant, per_sequence = _ACTIVATION_LINES[key]
    return constant + per_sequence * batch_size


def _traced_activation_bytes(config, vocab_size: int, batch_size: int) -> int:
    training = build_training(config, vocab_size, SPECIAL_IDS)
    params = jax.eval_shape(lambda: nn.unbox(init_params(training.model, config.data.seq_length,
                                                         training.objective.max_predictions, jax.random.key(0))))
    batch = {k: jax.ShapeDtypeStruct((batch_size, config.data.seq_length), jax.numpy.int32)
             for k in ("input_ids", "attention_mask", "token_type_ids")}
    loss = lambda p, b: training.loss_fn(p, training.model, b, jax.random.key(0), training.objective)[0]
    return sum(math.prod(aval.shape) * aval.dtype.itemsize for aval, source in saved_residuals(loss, params, batch)
               if not source.startswith("from the argument"))


def compile_step(config, vocab_size: int, devices) -> tuple:
    """The real train step lowered and compiled for `devices` under the config's mesh; returns
    (compiled, mesh, the train state's shapes)."""
    mesh = sharding.make_mesh(config, devices)
    rules = sharding.axis_rules(config)
    training = build_training(config, vocab_size, SPECIAL_IDS)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        plan = plan_train_state(training, config.data.seq_length, mesh, rules)
        step = make_train_step(training, plan.shardings, mesh)
        batch = {k: jax.ShapeDtypeStruct((config.train.batch_size, config.data.seq_length), jax.numpy.int32,
                                         sharding=sharding.batch_sharding(mesh))
                 for k in ("input_ids", "attention_mask", "token_type_ids")}
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding.replicated(mesh))
        return step.lower(plan.abstract, batch, rng).compile(), mesh, plan.abstract


def checked_accelerator(accelerator: str, efficiency: float) -> Accelerator:
    if accelerator not in ACCELERATORS:
        raise ValueError(f"--accelerator={accelerator!r}: choose one of {sorted(ACCELERATORS)}")
    if not 0 < efficiency <= 1:
        raise ValueError(f"--efficiency={efficiency}: a share of the roofline, in (0, 1]")
    return ACCELERATORS[accelerator]


def stand_in_devices(devices, chips: int) -> list:
    """The first `chips` devices of this process (host CPU devices stand in for the chips)."""
    devices = list(devices if devices is not None else jax.devices())
    if len(devices) < chips:
        raise ValueError(f"--chips={chips} but this process has {len(devices)} devices: run with "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={chips}")
    return devices[:chips]


_PROGRAM_COSTS: dict = {}


def program_costs(config, vocab_size: int, devices) -> dict:
    """What the compiled per-chip program of a step costs, whatever the chip: XLA's FLOPs and bytes
    accessed, its memory (arguments + temporaries + outputs - donated), the bytes its collectives
    send, the parameter bytes. Remembered per (config, devices): plans for several accelerators
    compile each program once."""
    key = (config.to_json_best_effort(sort_keys=True), vocab_size, tuple(d.id for d in devices))
    if key not in _PROGRAM_COSTS:
        compiled, mesh, state = compile_step(config, vocab_size, devices)
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        memory = compiled.memory_analysis()
        _PROGRAM_COSTS[key] = dict(
            mesh=dict(mesh.shape), flops=cost["flops"], bytes_accessed=cost["bytes accessed"],
            memory_bytes=(memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
                          - memory.alias_size_in_bytes),
            collective_bytes=collective_seconds(compiled.as_text(), len(devices), 1.0)["bytes_sent_by_kind"],
            parameter_bytes=sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params)))
    return _PROGRAM_COSTS[key]


_STATE_BYTES: dict = {}


def state_bytes(config, vocab_size: int, devices) -> dict:
    """step.train_state_bytes, remembered across the plans of one model: the parameters' and
    optimizer state's shapes and shardings do not depend on the batch, the accumulation or remat."""
    shaped = config.copy_and_resolve_references()
    shaped.train.update(batch_size=0, grad_accum_steps=1)
    shaped.model.remat = "none"
    key = (shaped.to_json_best_effort(sort_keys=True), vocab_size, tuple(d.id for d in devices))
    if key not in _STATE_BYTES:
        _STATE_BYTES[key] = train_state_bytes(config, vocab_size, devices)
    return _STATE_BYTES[key]


def hbm_traffic_bytes(config, vocab_size: int, devices) -> dict:
    """The bytes a step must move through a chip's HBM at least, by what they are: the parameters
    read by the forward and twice by the backward (inputs' and weights' gradients) and the gradients
    written; the optimizer reading and writing its state (parameters and moments) and reading the
    gradients; the activations the forward keeps, written once and read back by the backward
    (activation_bytes, for the chip's share of the batch). Intermediates a fused kernel keeps on
    chip are not counted, so this is a floor, as a tuned accelerator program approaches it; XLA's
    CPU compiler fuses far less, and its `bytes accessed` (reported beside) is several times this."""
    state = state_bytes(config, vocab_size, devices)
    mesh = sharding.make_mesh(config, devices)
    per_chip_batch = config.train.batch_size // sharding.data_parallel_size(mesh)
    parameters = 4 * state["params_per_device"]
    optimizer = 2 * state["per_device"] + state["params_per_device"]
    activations = 2 * activation_bytes(config, vocab_size, per_chip_batch)
    return dict(parameters=parameters, optimizer=optimizer, activations=activations,
                total=parameters + optimizer + activations)


def plan_run(config, vocab_size: int, accelerator: str, chips: int, efficiency: float = 0.5, devices=None) -> dict:
    """Memory per chip, roofline step time, tokens/s, days and chip-hours to config.train.num_steps."""
    chip = checked_accelerator(accelerator, efficiency)
    devices = stand_in_devices(devices, chips)
    costs = program_costs(config, vocab_size, devices)
    traffic = hbm_traffic_bytes(config, vocab_size, devices)
    bf16 = config.model.dtype == "bfloat16"
    peak = chip.bf16_flops if bf16 else chip.float32_flops
    compute = costs["flops"] / peak
    hbm = traffic["total"] / chip.hbm_bytes_per_second
    collectives = sum(costs["collective_bytes"].values()) / chip.link_bytes_per_second
    roofline = max(compute, hbm) + collectives
    step = roofline / efficiency
    tokens = config.train.batch_size * config.data.seq_length
    steps = config.train.num_steps
    model_flops = train_flops_per_step(config, vocab_size)["total"]
    return dict(
        accelerator=chip.name, chips=chips, mesh=costs["mesh"], compute_dtype=config.model.dtype,
        peak_flops_per_chip=peak, float32_note=None if bf16 else chip.float32_note,
        memory_per_chip_gib=costs["memory_bytes"] / GIB, hbm_per_chip_gib=chip.hbm_bytes / GIB,
        fits=costs["memory_bytes"] <= chip.hbm_bytes, parameter_bytes=costs["parameter_bytes"],
        xla_flops_per_chip=costs["flops"], model_flops_per_step=model_flops,
        hbm_traffic_bytes_per_chip=traffic, xla_cpu_bytes_accessed_per_chip=costs["bytes_accessed"],
        collective_bytes_sent_per_chip=costs["collective_bytes"],
        compute_seconds=compute, memory_seconds=hbm, collective_seconds=collectives,
        xla_cpu_bytes_seconds=costs["bytes_accessed"] / chip.hbm_bytes_per_second,
        roofline_step_seconds=roofline, efficiency=efficiency, step_seconds=step,
        tokens_per_second=tokens / step, sequences_per_second=config.train.batch_size / step,
        mfu=model_flops / step / (peak * chips),
        num_steps=steps, days=steps * step / 86400, chip_hours=steps * step * chips / 3600,
        assumptions=("max(compute, HBM traffic floor) per step + ring collectives not overlapped, divided by the "
                     "efficiency; FLOPs and collectives from XLA's CPU compiler for the per-chip program"))


def memory_per_chip(config, vocab_size: int, devices, micro_batch_per_chip: int) -> dict:
    """Bytes per chip of a step: parameters and optimizer state (from their shardings), gradients
    (sharded as the parameters; twice with accumulation: the running sum and the micro-batch's),
    and the activations one micro-batch keeps for the backward pass (activation_bytes, which
    model.remat changes). Counted from the program, so it holds for any accelerator's compiler."""
    state = state_bytes(config, vocab_size, devices)
    accumulating = config.train.get("grad_accum_steps", 1) > 1
    gradients = state["params_per_device"] * (2 if accumulating else 1)
    activations = activation_bytes(config, vocab_size, micro_batch_per_chip)
    return dict(state=state["per_device"], gradients=gradients, activations=activations,
                total=state["per_device"] + gradients + activations)


def plan_fit(config, vocab_size: int, accelerator: str, chips: int, efficiency: float = 0.5, devices=None) -> dict:
    """For each of REMAT_CHOICES, the largest micro-batch per chip (a power of two) whose step fits
    MEMORY_HEADROOM of the chip's memory, the accumulation that makes up config.train.batch_size,
    and the step's time: the micro-batch step planned by plan_run (its compiled FLOPs include what
    remat recomputes) times the accumulation steps. The fastest fitting row is the plan."""
    chip = checked_accelerator(accelerator, efficiency)
    devices = stand_in_devices(devices, chips)
    mesh = sharding.make_mesh(config, devices)
    data_parallel = sharding.data_parallel_size(mesh)
    batch = config.train.batch_size
    per_chip = batch // data_parallel
    micro_sizes = [m for m in (2 ** i for i in range(per_chip.bit_length(), -1, -1)) if m <= per_chip and not per_chip % m]
    rows = []
    for remat in REMAT_CHOICES:
        c = config.copy_and_resolve_references()
        c.model.remat = remat
        for micro in micro_sizes:
            c.train.grad_accum_steps = per_chip // micro
            memory = memory_per_chip(c, vocab_size, devices, micro)
            if memory["total"] <= MEMORY_HEADROOM * chip.hbm_bytes:
                break
        else:
            rows.append(dict(remat=remat, fits=False, memory_gib=memory["total"] / GIB, micro_batch_per_chip=micro))
            continue
        accum = c.train.grad_accum_steps
        c.train.update(batch_size=micro * data_parallel, grad_accum_steps=1)
        micro_step = plan_run(c, vocab_size, accelerator, chips, efficiency, devices)
        step = accum * micro_step["step_seconds"]
        rows.append(dict(remat=remat, fits=True, micro_batch_per_chip=micro, grad_accum_steps=accum,
                         memory_gib=memory["total"] / GIB, memory_parts_gib={k: v / GIB for k, v in memory.items()},
                         step_seconds=step, sequences_per_second=batch / step,
                         tokens_per_second=batch * config.data.seq_length / step,
                         mfu=micro_step["mfu"], days=config.train.num_steps * step / 86400,
                         bound="compute" if micro_step["compute_seconds"] >= micro_step["memory_seconds"] else "HBM"))
    fitting = [r for r in rows if r["fits"]]
    best = min(fitting, key=lambda r: r["step_seconds"]) if fitting else None
    return dict(accelerator=chip.name, chips=chips, batch_size=batch, seq_length=config.data.seq_length,
                compute_dtype=config.model.dtype, hbm_per_chip_gib=chip.hbm_bytes / GIB, efficiency=efficiency,
                num_steps=config.train.num_steps, options=rows, plan=best)


def format_fit(p: dict) -> str:
    lines = [f"{p['chips']} x {p['accelerator']} ({p['hbm_per_chip_gib']:.0f} GiB), batch {p['batch_size']} x "
             f"{p['seq_length']}, {p['compute_dtype']}, at {p['efficiency']:.0%} of the roofline:",
             "| remat | micro-batch per chip | accumulation | memory GiB | step s | sequences/s | MFU | days | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in p["options"]:
        if not r["fits"]:
            lines.append(f"| {r['remat']} | {r['micro_batch_per_chip']} | | {r['memory_gib']:.1f} | does not fit | | | | |")
            continue
        chosen = "**plan**" if r is p["plan"] else ""
        lines.append(f"| {r['remat']} | {r['micro_batch_per_chip']} | {r['grad_accum_steps']} | {r['memory_gib']:.1f} | "
                     f"{r['step_seconds']:.3f} | {r['sequences_per_second']:,.0f} | {r['mfu']:.0%} | {r['days']:.1f} | {chosen} |")
    return "\n".join(lines)


def format_plan(p: dict) -> str:
    lines = [
        f"{p['chips']} x {p['accelerator']} (mesh {p['mesh']}), {p['compute_dtype']} compute at "
        f"{p['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s per chip" + (f" ({p['float32_note']})" if p['float32_note'] else ""),
        f"memory per chip: {p['memory_per_chip_gib']:.2f} GiB of {p['hbm_per_chip_gib']:.0f} GiB"
        + ("" if p["fits"] else "  -- DOES NOT FIT: shard more (FSDP) or lower the batch"),
        f"per step and chip: compute {p['compute_seconds'] * 1e3:.1f} ms, HBM {p['memory_seconds'] * 1e3:.1f} ms, "
        f"collectives {p['collective_seconds'] * 1e3:.1f} ms -> roofline {p['roofline_step_seconds'] * 1e3:.1f} ms",
        f"at {p['efficiency']:.0%} of the roofline: {p['step_seconds'] * 1e3:.1f} ms per step, "
        f"{p['tokens_per_second']:,.0f} tokens/s, {p['sequences_per_second']:,.1f} sequences/s, MFU {p['mfu']:.0%}",
        f"{p['num_steps']:,} steps: {p['days']:.2f} days, {p['chip_hours']:,.0f} chip-hours",
        f"assumptions: {p['assumptions']}",
    ]
    return "\n".join(lines)
