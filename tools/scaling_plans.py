"""The planner's numbers behind docs/scaling.md: `bench plan --fit` for ELECTRA-Base and -Large on
each accelerator, the recipes' multi-chip runs, and NVIDIA's published ELECTRA-Base pretraining
throughput beside the planner's prediction for the same setup.

    python tools/scaling_plans.py --json docs/results/scaling_plans.json [--only per_chip,recipes,nvidia]
    python tools/scaling_plans.py --json docs/results/scaling_plans.json --markdown   # the tables of docs/scaling.md

Every plan is bf16 compute with float32 master weights, jax.nn.dot_product_attention (cuDNN flash
attention on NVIDIA GPUs) and no attention dropout, at the planner's default efficiency (50% of
the roofline). Host CPU devices stand in for the chips (the most any plan needs are started).
Compiled programs are shared between plans, so the whole run compiles each one once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

MAX_CHIPS = 16
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={MAX_CHIPS}".strip()

from electra_jax.config import apply_overrides, default_config  # noqa: E402  (after the device count)
from electra_jax.plan import format_fit, plan_fit  # noqa: E402

VOCAB = 30522
GPU_AND_TPU = ("v4", "v5e", "v5p", "a100", "h100", "rtx4090")
# (name, size, seq, batch, accelerator, chips, mesh)
PER_CHIP = [(f"{size}/{chip}", size, 512, batch, chip, 1, {}) for size, batch in (("base", 256), ("large", 2048))
            for chip in GPU_AND_TPU]
# One 24 GB GPU is the per-chip base/rtx4090 plan.
RECIPES = [
    ("recipe: Base on 8 x A100", "base", 512, 256, "a100", 8, {}),
    ("recipe: Large on TPU v4-32 (16 chips)", "large", 512, 2048, "v4", 16, {}),
]
# NVIDIA DeepLearningExamples, TensorFlow2/LanguageModeling/ELECTRA, ELECTRA-Base pretraining on
# A100-40GB with AMP: sequences per second
NVIDIA = [
    ("NVIDIA: seq 128, 1 x A100", "base", 128, 256, "a100", 1, {}, 955),
    ("NVIDIA: seq 128, 8 x A100", "base", 128, 2048, "a100", 8, {}, 7512),
    ("NVIDIA: seq 512, 1 x A100", "base", 512, 256, "a100", 1, {}, 171),
    ("NVIDIA: seq 512, 8 x A100", "base", 512, 2048, "a100", 8, {}, 1347),
]


def plan_config(size: str, seq: int, batch: int, mesh: dict):
    c = default_config(size)
    c.data.update(dir="/unused", seq_length=seq)
    c.train.batch_size = batch
    c.model.update(dtype="bfloat16", attention_impl="jax", attention_dropout_rate=0.0)
    apply_overrides(c, mesh.items())
    return c


def _chosen(plan: dict) -> str:
    r = plan["plan"]
    if r is None:
        return "| nothing fits | | | | | | |"
    return (f"| {r['remat']} | {r['micro_batch_per_chip']} x {r['grad_accum_steps']} | {r['memory_gib']:.1f} | "
            f"{r['step_seconds']:.2f} | {r['sequences_per_second']:,.0f} | {r['mfu']:.0%} | {r['days']:,.1f} |")


PLAN_COLUMNS = ["remat", "micro-batch per chip x accumulation", "memory per chip, GiB", "step, s", "sequences/s",
                "MFU", "days"]


def _table_head(*first: str) -> list[str]:
    columns = list(first) + PLAN_COLUMNS
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def markdown(results: dict) -> str:
    out = ["Per chip (one chip; Base: batch 256 x 512, 766k steps; Large: batch 2048 x 512, 400k steps):", ""]
    out += _table_head("model", "chip")
    out += [f"| {p['size']} | {p['accelerator']} " + _chosen(p) for p in results.values() if p["group"] == "per_chip"]
    out += ["", "Recipes:", ""] + _table_head("recipe", "chips", "mesh")
    out += [f"| {p['name'].removeprefix('recipe: ')} | {p['chips']} | {p['mesh_overrides'] or 'data parallel'} "
            + _chosen(p) for p in results.values() if p["group"] == "recipes"]
    out += ["", "| NVIDIA's setup (ELECTRA-Base, A100-40GB, AMP) | published sequences/s | planner | published / planner "
            "| within 2x |", "|---|---|---|---|---|"]
    for p in results.values():
        if p["group"] == "nvidia" and p["plan"]:
            ratio = p["published_over_planned"]
            out.append(f"| {p['name'].removeprefix('NVIDIA: ')} | {p['published_sequences_per_second']:,} | "
                       f"{p['plan']['sequences_per_second']:,.0f} ({p['plan']['remat']}, {p['plan']['micro_batch_per_chip']} "
                       f"x {p['plan']['grad_accum_steps']}) | {ratio:.2f} | {'yes' if 0.5 <= ratio <= 2 else 'no'} |")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True)
    p.add_argument("--only", default="per_chip,recipes,nvidia")
    p.add_argument("--markdown", action="store_true", help="print the tables of the JSON and stop")
    a = p.parse_args(argv)
    if a.markdown:
        print(markdown(json.load(open(a.json))))
        return
    groups = dict(per_chip=[r + (None,) for r in PER_CHIP], recipes=[r + (None,) for r in RECIPES], nvidia=NVIDIA)
    results = json.load(open(a.json)) if os.path.exists(a.json) else {}  # a rerun keeps what it has
    for group in a.only.split(","):
        for name, size, seq, batch, chip, chips, mesh, published in groups[group]:
            if name in results:
                continue
            start = time.perf_counter()
            plan = plan_fit(plan_config(size, seq, batch, mesh), VOCAB, chip, chips)
            plan.update(name=name, group=group, size=size, mesh_overrides=mesh, published_sequences_per_second=published,
                        planner_seconds=time.perf_counter() - start)
            if published and plan["plan"]:
                plan["published_over_planned"] = published / plan["plan"]["sequences_per_second"]
            results[name] = plan
            print(f"\n## {name}\n{format_fit(plan)}", flush=True)
            with open(a.json, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
