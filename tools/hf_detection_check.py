"""Replaced-token detection with transformers on a converted model, beside the pretraining run's
own held-out metric: the check that a converted ELECTRA behaves in transformers as it did here.

    electra-jax demo
    electra-jax export --workdir runs/demo/run --out runs/demo/export
    electra-jax convert to-hf --ckpt runs/demo/export --out runs/demo/hf
    python tools/hf_detection_check.py --run runs/demo/run --hf runs/demo/hf

The held-out split of the run's prepared data is corrupted as pretraining does it (the same share
of real tokens chosen, 85% of them [MASK], 15% kept; transformers' ElectraForMaskedLM fills them by
sampling its softmax; a position counts as replaced only where the sample differs), several passes
with fresh masks, and transformers' ElectraForPreTraining scores every real token. Its ROC AUC is
printed beside the run's last held-out `discriminator_auc` (metrics.jsonl). A research tool, not
part of the package: it needs torch and transformers (the dev extra).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
import transformers
from sklearn.metrics import roc_auc_score

from electra_jax.config import max_predictions
from electra_jax.data.prepare import load_metadata
from electra_jax.metrics_writer import read_metrics
from electra_jax.data.pipeline import read_split
from electra_jax.train import load_run_config


def corrupt(batch: dict, special: dict, mask_prob: float, limit: int, generator, rng) -> tuple:
    """(corrupted ids, replaced labels) for one pass over the examples of `batch` ([N, L] arrays)."""
    ids, real = batch["input_ids"], batch["attention_mask"].astype(bool)
    candidates = real & ~np.isin(ids, [special["cls"], special["sep"], special["mask"]])
    corrupted = ids.copy()
    chosen = np.zeros_like(real)
    for i in range(len(ids)):
        where = np.flatnonzero(candidates[i])
        count = min(max(1, int(np.round(real[i].sum() * mask_prob))), limit, len(where))
        picked = rng.choice(where, count, replace=False)
        chosen[i, picked] = True
        corrupted[i, picked[rng.random(count) < 0.85]] = special["mask"]
    with torch.no_grad():
        logits = generator(input_ids=torch.from_numpy(corrupted).long(), **torch_inputs(batch)).logits
    probs = torch.softmax(logits[torch.from_numpy(chosen)].double(), -1)
    samples = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    corrupted[chosen] = samples[:, 0].numpy()
    return corrupted, chosen & (corrupted != ids)


def torch_inputs(batch: dict) -> dict:
    """The attention mask and the segment ids ([CLS] A [SEP] B [SEP]) as the model was trained on them."""
    return {k: torch.from_numpy(batch[k]).long() for k in ("attention_mask", "token_type_ids")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python tools/hf_detection_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the pretraining workdir (its config, data and held-out metric)")
    p.add_argument("--hf", required=True, help="`electra-jax convert to-hf` output: discriminator/ and generator/")
    p.add_argument("--passes", type=int, default=13, help="passes over the held-out split, each with fresh masks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    config = load_run_config(a.run)
    meta = load_metadata(config.data.dir)
    batch = read_split(meta, "eval")
    real = batch["attention_mask"].astype(bool)
    generator = transformers.ElectraForMaskedLM.from_pretrained(os.path.join(a.hf, "generator")).eval()
    discriminator = transformers.ElectraForPreTraining.from_pretrained(os.path.join(a.hf, "discriminator")).eval()
    rng = np.random.default_rng(a.seed)
    scores, labels = [], []
    for _ in range(a.passes):
        corrupted, replaced = corrupt(batch, meta["special_ids"], config.pretrain.mask_prob, max_predictions(config),
                                      generator, rng)
        with torch.no_grad():
            logits = discriminator(input_ids=torch.from_numpy(corrupted).long(), **torch_inputs(batch)).logits.numpy()
        scores.append(logits[real])
        labels.append(replaced[real])
    labels = np.concatenate(labels)
    held_out = (read_metrics(a.run, "eval") or [{}])[-1]  # a held-out split smaller than a batch logs none
    result = dict(transformers_auc=float(roc_auc_score(labels, np.concatenate(scores))),
                  run_held_out_auc=held_out.get("discriminator_auc"), run_step=held_out.get("step"),
                  replaced_fraction=float(labels.mean()), tokens=int(labels.size), passes=a.passes,
                  seq_length=meta["seq_length"], transformers=transformers.__version__)
    line = (f"held-out replaced-token detection, {result['tokens']} tokens of {result['seq_length']}-token examples: "
            f"transformers AUC {result['transformers_auc']:.4f}")
    if result["run_held_out_auc"] is None:
        line += "; the run logged no held-out metric to compare with"
    else:
        result["difference"] = result["transformers_auc"] - result["run_held_out_auc"]
        line += (f", the run's own {result['run_held_out_auc']:.4f} (step {result['run_step']}), "
                 f"difference {result['difference']:+.4f}")
    print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
