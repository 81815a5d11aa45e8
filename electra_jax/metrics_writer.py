"""Metrics to TensorBoard (tensorboardX: no TensorFlow needed) and to metrics.jsonl, from process 0."""
from __future__ import annotations

import json
import os

import jax
from tensorboardX import SummaryWriter


class MetricsWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.logdir = os.path.join(workdir, "tensorboard")
        self.jsonl = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(self.logdir)

    def forget_after(self, step: int) -> None:
        """Drop the metrics.jsonl rows of steps after `step`: a run resumed from an older checkpoint
        logs those steps again, and one history per step is what readers expect."""
        if not self.enabled or not os.path.exists(self.jsonl):
            return
        with open(self.jsonl) as f:
            rows = f.readlines()
        kept = [r for r in rows if r.strip() and json.loads(r)["step"] <= step]
        if len(kept) != len(rows):
            with open(self.jsonl + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(self.jsonl + ".tmp", self.jsonl)

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        for k, v in values.items():
            self._tb.add_scalar(f"{split}/{k}", v, step)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(dict(step=step, split=split, **values)) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str, split: str = "train") -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]
