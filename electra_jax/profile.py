"""Where a compiled step's time goes, by kind of op: a jax.profiler trace of a few steps, read back
and matched to the compiled program's HLO.

XLA's CPU runtime records one trace event per executed op ("thunk"), named after the HLO
instruction, and runs independent ops concurrently on its threads. So each moment of the traced
window is split evenly among the ops running then; moments no op event covers get a line of their
own (dispatch between ops and steps, threads waiting, and work the runtime does not trace, such as
Eigen's matmuls when the YNNPACK library is off). The kinds come from each instruction's opcodes
(a fusion's fused opcodes included) and the JAX op name XLA keeps in its metadata (which names the
Flax module and the primitive).
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re

import jax

IDLE = "no traced op running (dispatch, waiting, work the runtime does not trace)"

_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%(\S+) = .*? ([a-z][\w-]*)\((.*)$", re.M)
_COMPUTATION = re.compile(r"^%?([\w.-]+) \(.*?\{\n(.*?)\n\}", re.M | re.S)
_OPCODE = re.compile(r"= \S+ ([a-z][\w-]*)\(")


@dataclasses.dataclass(frozen=True)
class HloOp:
    opcode: str
    op_name: str            # the JAX name path from the metadata, e.g. ".../layer_3/intermediate/dot_general"
    fused: frozenset        # opcodes inside a fusion (empty otherwise)


def hlo_ops(hlo_text: str) -> dict[str, HloOp]:
    """Instruction name -> HloOp for every instruction of an optimized HLO module's text."""
    bodies = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo_text)}
    ops = {}
    for m in _INSTRUCTION.finditer(hlo_text):
        name, opcode, rest = m.groups()
        op_name = re.search(r'op_name="([^"]*)"', rest)
        calls = re.search(r"calls=%([\w.-]+)", rest)
        fused = frozenset(_OPCODE.findall(bodies.get(calls.group(1), ""))) if calls else frozenset()
        ops[name] = HloOp(opcode, op_name.group(1) if op_name else "", fused)
    return ops


def op_kind(op: HloOp) -> str:
    """The kind of work an instruction does, in the terms of a transformer step."""
    opcodes = op.fused | {op.opcode}
    name = op.op_name
    if "_gumbel" in name or "categorical" in name or "cumsum" in name or {"iota", "log"} <= opcodes:
        return "token sampling (the generator's samples)"
    if any(k in name for k in ("bernoulli", "random_bits", "threefry", "_uniform", "random_split", "random_fold_in",
                                "random_wrap", "random_unwrap")):
        return "random bits (dropout masks, masking)"
    if opcodes & {"dot", "convolution"}:
        return "matmul"
    if opcodes & {"erf", "erfc"} or "gelu" in name or "/erf" in name:
        return "GELU"
    if "softmax" in name or "/attention/" in name and opcodes & {"exponential", "reduce"}:
        return "attention softmax"
    if "LayerNorm" in name or "_norm/" in name:
        return "LayerNorm"
    if opcodes & {"gather", "scatter", "dynamic-slice", "dynamic-update-slice"}:
        return "gather / scatter (embeddings, masked positions)"
    if "jvp(" not in name and "transpose(" not in name:
        return "optimizer update and step bookkeeping"
    if "dropout" in name or "select" in opcodes:
        return "dropout (applying the masks)"
    if opcodes <= {"copy", "transpose", "bitcast", "parameter", "reshape", "broadcast"}:
        return "copies and transposes"
    return "other elementwise"


def read_trace_events(trace_dir: str) -> list[dict]:
    """The complete ("X") events of the newest perfetto trace jax.profiler wrote under trace_dir."""
    files = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")))
    if not files:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}/plugins/profile")
    with gzip.open(files[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X"]


def time_by_kind(events: list[dict], ops: dict[str, HloOp], steps: int) -> dict:
    """Milliseconds per step by op kind, each moment shared among the ops running then, plus the
    moments when none runs. Also the per-step wall time the events span."""
    spans = [(e["ts"], e["ts"] + e["dur"], op_kind(ops[e["name"]])) for e in events if e["name"] in ops]
    if not spans:
        raise ValueError("the trace holds no events named after the program's HLO instructions")
    boundaries = sorted({t for s, e, _ in spans for t in (s, e)})
    starts = collections.defaultdict(list)
    for s, e, kind in spans:
        starts[s].append((e, kind))
    shares, running, gaps = collections.Counter(), [], []
    for t0, t1 in zip(boundaries, boundaries[1:]):
        running = [(e, k) for e, k in running if e > t0] + starts.get(t0, [])
        if running:
            for _, kind in running:
                shares[kind] += (t1 - t0) / len(running)
        else:
            shares[IDLE] += t1 - t0
            gaps.append((t1 - t0) / 1e3)
    wall = boundaries[-1] - boundaries[0]
    long_gaps = sorted(g for g in gaps if g >= 1.0)
    return dict(ms_per_step={k: v / 1e3 / steps for k, v in shares.most_common()},
                wall_ms_per_step=wall / 1e3 / steps,
                ops_per_step=len(spans) / steps,
                # how the untraced time comes: many short waits, or a few long ones
                gaps_over_1ms_per_step=len(long_gaps) / steps,
                median_gap_over_1ms=long_gaps[len(long_gaps) // 2] if long_gaps else 0.0)


def profile_calls(run_once, hlo_text: str, steps: int, trace_dir: str) -> dict:
    """Call `run_once()` (one execution of the compiled program whose optimized HLO is `hlo_text`)
    `steps` times under jax.profiler and return time_by_kind for it."""
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
            out = run_once()
        jax.block_until_ready(out)
    result = time_by_kind(read_trace_events(trace_dir), hlo_ops(hlo_text), steps)
    result["trace_dir"] = trace_dir
    return result


def format_breakdown(result: dict) -> str:
    """A markdown table: kind, ms per step, share of the traced wall time."""
    wall = result["wall_ms_per_step"]
    lines = ["| kind of op | ms per step | share |", "|---|---|---|"]
    lines += [f"| {kind} | {ms:.0f} | {100 * ms / wall:.1f}% |" for kind, ms in result["ms_per_step"].items()]
    lines.append(f"| total (traced wall time per step; {result['ops_per_step']:.0f} ops) | {wall:.0f} | 100% |")
    lines.append(f"\n{result['gaps_over_1ms_per_step']:.0f} gaps of 1 ms or more per step with no op event "
                 f"(median {result['median_gap_over_1ms']:.1f} ms)")
    return "\n".join(lines)
