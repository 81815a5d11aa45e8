"""Evaluation metrics, computed as each benchmark's official scorer does.

GLUE: accuracy, F1 of the positive class, Matthews correlation (CoLA), Pearson/Spearman (STS-B).
SQuAD: exact match and token F1 after the official answer normalization, max over gold answers.
Tagging: entity-level precision/recall/F1 with conlleval's chunk rules (an I- tag after O or after a
different type starts a new entity).
"""
from __future__ import annotations

import collections
import re
import string

import numpy as np
import scipy.stats


def accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1(y_true, y_pred, positive=1) -> float:
    t, p = np.asarray(y_true) == positive, np.asarray(y_pred) == positive
    tp = np.sum(t & p)
    return float(2 * tp / (np.sum(t) + np.sum(p))) if tp else 0.0


def matthews(y_true, y_pred) -> float:
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp, tn = float(np.sum(t & p)), float(np.sum(~t & ~p))
    fp, fn = float(np.sum(~t & p)), float(np.sum(t & ~p))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(y_true, y_pred) -> float:
    return float(scipy.stats.pearsonr(y_true, y_pred)[0]) if np.std(y_pred) > 0 else 0.0


def spearman(y_true, y_pred) -> float:
    return float(scipy.stats.spearmanr(y_true, y_pred)[0]) if np.std(y_pred) > 0 else 0.0


CLASSIFICATION = dict(accuracy=accuracy, f1=f1, mcc=matthews, pearson=pearson, spearman=spearman)


def classification_metrics(names, y_true, y_pred) -> dict:
    return {name: CLASSIFICATION[name](y_true, y_pred) for name in names}


# ---- SQuAD ------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (official SQuAD)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def squad_f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:  # unanswerable questions: right only if both are empty
        return float(gold_tokens == pred_tokens)
    common = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(examples: list[dict], predictions: dict) -> dict:
    """EM and F1 in percent, each the max over a question's gold answers ("" for no answer); with
    answerable / unanswerable breakdowns when the set has both (SQuAD 2.0)."""
    scores = {"exact": [], "f1": []}
    by_kind = {True: {"exact": [], "f1": []}, False: {"exact": [], "f1": []}}
    for ex in examples:
        golds = [a["text"] for a in ex["answers"] if normalize_answer(a["text"])] or [""]
        pred = predictions.get(ex["id"], "")
        for name, fn in (("exact", squad_exact), ("f1", squad_f1)):
            value = max(fn(g, pred) for g in golds)
            scores[name].append(value)
            by_kind[golds == [""]][name].append(value)
    out = {k: 100.0 * float(np.mean(v)) for k, v in scores.items()}
    if by_kind[True]["exact"] and by_kind[False]["exact"]:
        for kind, label in ((False, "has_answer"), (True, "no_answer")):
            out.update({f"{label}_{k}": 100.0 * float(np.mean(v)) for k, v in by_kind[kind].items()})
    return out


# ---- entity-level tagging ---------------------------------------------------------------------------

def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, kind = tag.split("-", 1)
    return prefix, kind


def chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity, by conlleval's rules for IOB1/IOB2/IOBES tags."""
    found, start, kind = set(), None, ""
    previous = ("O", "")
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = _split_tag(tag)
        p_prefix, p_type = previous
        ends = p_prefix != "O" and (
            prefix in ("O", "B", "S") or p_prefix in ("E", "S") or t != p_type or prefix == "[")
        begins = prefix != "O" and (
            prefix in ("B", "S") or p_prefix in ("O", "E", "S") or t != p_type)
        if ends and start is not None:
            found.add((kind, start, i - 1))
            start = None
        if begins:
            start, kind = i, t
        previous = (prefix, t)
    return found


def entity_metrics(gold_sentences: list[list[str]], pred_sentences: list[list[str]]) -> dict:
    """Micro precision/recall/F1 (percent) over entities, plus a per-type report and token accuracy."""
    counts = collections.defaultdict(lambda: [0, 0, 0])  # type: [correct, predicted, gold]
    correct_tokens = total_tokens = 0
    for gold, pred in zip(gold_sentences, pred_sentences):
        g, p = chunks(gold), chunks(pred)
        for kind, *_ in g:
            counts[kind][2] += 1
        for kind, *_ in p:
            counts[kind][1] += 1
        for kind, *_ in g & p:
            counts[kind][0] += 1
        correct_tokens += sum(a == b for a, b in zip(gold, pred))
        total_tokens += len(gold)

    def prf(c, n_pred, n_gold):
        precision = 100.0 * c / n_pred if n_pred else 0.0
        recall = 100.0 * c / n_gold if n_gold else 0.0
        f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return dict(precision=precision, recall=recall, f1=f, support=n_gold)

    total = [sum(v[i] for v in counts.values()) for i in range(3)]
    out = prf(*total)
    out.pop("support")
    out["token_accuracy"] = 100.0 * correct_tokens / max(total_tokens, 1)
    out["per_type"] = {kind: prf(*counts[kind]) for kind in sorted(counts)}
    return out


def entity_report(metrics: dict) -> str:
    """The per-type table, as seqeval's classification_report lays it out."""
    lines = [f"{'':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for kind, m in metrics["per_type"].items():
        lines.append(f"{kind:>12} {m['precision']:9.2f} {m['recall']:9.2f} {m['f1']:9.2f} {m['support']:9d}")
    support = sum(m["support"] for m in metrics["per_type"].values())
    lines.append(f"{'micro avg':>12} {metrics['precision']:9.2f} {metrics['recall']:9.2f} {metrics['f1']:9.2f} "
                 f"{support:9d}")
    return "\n".join(lines)
