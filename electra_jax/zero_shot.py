"""Zero-shot evaluation: grammatical minimal pairs (BLiMP and suites laid out like it).

A model passes a pair when it scores the grammatical sentence above the ungrammatical one (a tie
counts as half a pass), so random weights sit at 50%. Two scorers:

- `pll`: a masked LM's pseudo-log-likelihood (Salazar et al., 2020): each token masked in turn,
  the log-probabilities of the true tokens summed; all masked copies of a sentence in one batch.
  For the masked-LM baseline, ELECTRA's generator and BERT-family masked-LM checkpoints.
- `discriminator`: one forward pass of ELECTRA's discriminator; the sentence's score is the sum
  over its tokens of log P(original) = log sigmoid(-logit), how real every token looks.

Overall accuracy is the mean over paradigms (as the BLiMP paper reports); its 95% interval comes
from a bootstrap over the pairs of each paradigm, and `paired_difference_ci` resamples the same
pairs for two models, so the interval of their difference accounts for the pairs they share.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from electra_jax import inference
from electra_jax.data.corpus import JSONL_SUFFIXES, DataError, expand_inputs, jsonl_records, strict_text_lines
from electra_jax.model import gather_positions

SCORERS = ("auto", "discriminator", "pll")
BOOTSTRAP_SAMPLES = 1000


@dataclasses.dataclass
class Paradigm:
    """One file of minimal pairs: good[i] is the grammatical twin of bad[i]."""
    name: str
    field: str
    phenomenon: str
    good: list[str]
    bad: list[str]


def _read_jsonl_pairs(path: str) -> Paradigm:
    good, bad, field, phenomenon = [], [], "", ""
    for lineno, record in jsonl_records(path, strict_text_lines(path)):
        if not isinstance(record, dict) or not {"sentence_good", "sentence_bad"} <= set(record):
            raise DataError(f"{path}:{lineno}: a minimal pair needs the fields sentence_good and sentence_bad")
        good.append(str(record["sentence_good"]))
        bad.append(str(record["sentence_bad"]))
        field = field or str(record.get("field", ""))
        phenomenon = phenomenon or str(record.get("linguistics_term", ""))
    stem = os.path.splitext(os.path.basename(path))[0]
    return Paradigm(stem, field, phenomenon, good, bad)


def _read_alternating_pairs(path: str) -> Paradigm:
    """A text file whose non-blank lines alternate: ungrammatical, grammatical."""
    lines = [line.strip() for line in strict_text_lines(path) if line.strip()]
    if len(lines) % 2:
        raise DataError(f"{path}: {len(lines)} non-blank lines; a file of minimal pairs alternates "
                        f"ungrammatical and grammatical lines, so it has an even number")
    stem = os.path.splitext(os.path.basename(path))[0]
    return Paradigm(stem, "", "", good=lines[1::2], bad=lines[0::2])


def read_minimal_pairs(paths: list[str]) -> list[Paradigm]:
    """Paradigms from BLiMP's folder or files (.jsonl with sentence_good / sentence_bad) and plain
    text files of alternating ungrammatical / grammatical lines; folders and globs as `prepare` reads them."""
    files = expand_inputs(paths)
    paradigms = [_read_jsonl_pairs(f) if f.endswith(JSONL_SUFFIXES) else _read_alternating_pairs(f) for f in files]
    for p, f in zip(paradigms, files):
        if not p.good:
            raise DataError(f"{f} holds no minimal pairs")
    names = collections.Counter(p.name for p in paradigms)
    if max(names.values()) > 1:
        raise DataError(f"paradigm {names.most_common(1)[0][0]!r} is given twice")
    return paradigms


def blimp_split(paradigms: list[Paradigm], split: str) -> list[Paradigm]:
    """The fixed dev / test split of paradigms: every fourth file in sorted name order is dev
    (choices are made on it), the rest is test (what reports give)."""
    ordered = sorted(paradigms, key=lambda p: p.name)
    if split == "all":
        return ordered
    dev = {p.name for p in ordered[::4]}
    if split not in ("dev", "test"):
        raise DataError(f"split {split!r}: choose all, dev or test")
    return [p for p in ordered if (p.name in dev) == (split == "dev")]


def _bucket(n: int) -> int:
    """Padded length: a multiple of 8, so a suite compiles a handful of shapes, not one per length."""
    return max(8, -(-n // 8) * 8)


class SentenceScorer:
    """Scores sentences with one network; each batch is padded to a fixed row count and a length
    bucket, so the jitted forward compiles once per bucket."""

    def __init__(self, module, params, tokenizer, scorer: str, batch_rows: int = 256):
        if scorer not in ("discriminator", "pll"):
            raise ValueError(f"scorer {scorer!r}: discriminator or pll")
        self.module, self.params, self.tokenizer, self.scorer = module, params, tokenizer, scorer
        self.batch_rows = batch_rows
        self.cls, self.sep = tokenizer.special_ids["cls"], tokenizer.special_ids["sep"]
        self.mask_id = tokenizer.special_ids["mask"]
        self.max_tokens = module.cfg.max_position_embeddings - 2
        self._discriminator = jax.jit(self._discriminator_scores)
        self._pll = jax.jit(self._masked_log_probs)

    def _discriminator_scores(self, params, ids, mask):
        """[B] sum over the sentence's tokens ([CLS] and [SEP] left out) of log sigmoid(-logit)."""
        logits = self.module.apply({"params": params}, ids, attention_mask=mask).astype(jnp.float32)
        sentence = mask.astype(bool) & (ids != self.cls) & (ids != self.sep)
        return jnp.sum(jnp.where(sentence, jax.nn.log_sigmoid(-logits), 0.0), axis=-1)

    def _masked_log_probs(self, params, ids, mask, positions, targets):
        """[B] log P(targets[b] at positions[b]) with that position masked in ids[b]; the head runs
        on the masked position alone."""
        def head_at_position(module, ids, mask, positions):
            hidden = gather_positions(module.hidden_states(ids, mask), positions[:, None])
            return module.head(hidden, module.embeddings)[:, 0]
        logits = self.module.apply({"params": params}, ids, mask, positions, method=head_at_position)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(log_probs, targets[:, None], axis=-1)[:, 0]

    def _rows(self, rows: list[list[int]]):
        """(ids, mask) of [CLS] row [SEP] sequences padded to batch_rows x bucket."""
        length = _bucket(max(len(r) for r in rows) + 2)
        ids = np.zeros((self.batch_rows, length), np.int32)
        for i, r in enumerate(rows):
            ids[i, :len(r) + 2] = [self.cls, *r, self.sep]
        lengths = np.array([len(r) + 2 for r in rows] + [0] * (self.batch_rows - len(rows)))
        return ids, (np.arange(length)[None] < lengths[:, None]).astype(np.int32)

    def score(self, sentences: list[str]) -> np.ndarray:
        """[N] float64 scores; higher means more grammatical to the model."""
        token_lists = [t[:self.max_tokens] for t in self.tokenizer.encode(sentences)]
        if any(not t for t in token_lists):
            empty = sentences[[not t for t in token_lists].index(True)]
            raise DataError(f"the sentence {empty!r} has no tokens")
        return self._score_discriminator(token_lists) if self.scorer == "discriminator" else self._score_pll(token_lists)

    def _score_discriminator(self, token_lists):
        scores = np.zeros(len(token_lists))
        order = np.argsort([len(t) for t in token_lists], kind="stable")  # similar lengths share a bucket
        for start in range(0, len(order), self.batch_rows):
            chosen = order[start:start + self.batch_rows]
            ids, mask = self._rows([token_lists[i] for i in chosen])
            scores[chosen] = np.asarray(self._discriminator(self.params, ids, mask))[:len(chosen)]
        return scores

    def _score_pll(self, token_lists):
        """Each sentence expands to one row per token (that token masked); rows of similar lengths
        are batched together and their log-probabilities summed back per sentence."""
        copies = [(s, p) for s in np.argsort([len(t) for t in token_lists], kind="stable")
                  for p in range(len(token_lists[s]))]
        scores = np.zeros(len(token_lists))
        for start in range(0, len(copies), self.batch_rows):
            chunk = copies[start:start + self.batch_rows]
            ids, mask = self._rows([token_lists[s] for s, _ in chunk])
            positions = np.zeros(self.batch_rows, np.int32)
            targets = np.zeros(self.batch_rows, np.int32)
            for row, (s, p) in enumerate(chunk):
                positions[row], targets[row] = p + 1, token_lists[s][p]  # +1: after [CLS]
                ids[row, p + 1] = self.mask_id
            log_probs = np.asarray(self._pll(self.params, ids, mask, positions, targets))[:len(chunk)]
            np.add.at(scores, [s for s, _ in chunk], log_probs)
        return scores


def load_scorer(ckpt: str, scorer: str = "auto", batch_rows: int = 256) -> SentenceScorer:
    """A SentenceScorer for a pretraining workdir, an export or a HuggingFace directory; "auto"
    picks the discriminator when the checkpoint has one, else the masked LM's pll."""
    parts = inference.network_parts(ckpt)
    if scorer == "auto":
        scorer = "discriminator" if "discriminator" in parts else "pll"
    part = "discriminator" if scorer == "discriminator" else "generator"
    if part not in parts:
        raise DataError(f"{ckpt} has no {part} (it holds {', '.join(parts) or 'no network we can load'}); "
                        f"the {scorer} scorer needs one")
    module, params, tokenizer = inference.load_network(ckpt, part)
    return SentenceScorer(module, params, tokenizer, scorer, batch_rows)


def pair_passes(good_scores: np.ndarray, bad_scores: np.ndarray) -> np.ndarray:
    """1 where the grammatical sentence scores higher, 0 where lower, 0.5 for a tie."""
    return np.where(good_scores > bad_scores, 1.0, np.where(good_scores < bad_scores, 0.0, 0.5))


def _bootstrap_overall(passes: dict[str, np.ndarray], seed: int, samples: int) -> np.ndarray:
    """[samples] overall accuracies (%), each the mean over paradigms of a resample of its pairs;
    the same seed draws the same pairs for any model scored on the same paradigms."""
    rng = np.random.default_rng(seed)
    total = np.zeros(samples)
    for name in sorted(passes):
        p = passes[name]
        total += p[rng.integers(0, len(p), (samples, len(p)))].mean(axis=1)
    return 100 * total / len(passes)


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def bootstrap_ci(passes: dict[str, np.ndarray], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """95% interval of the overall accuracy (%) by bootstrap over the pairs of each paradigm."""
    return _interval(_bootstrap_overall(passes, seed, samples))


def mean_ci(runs: list[dict[str, np.ndarray]], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """95% interval of the mean overall accuracy (%) of several runs on the same paradigms (e.g.
    random initialisations), each resampled with the same pairs."""
    return _interval(np.mean([_bootstrap_overall(p, seed, samples) for p in runs], axis=0))


def paired_difference_ci(passes_a: dict[str, np.ndarray], passes_b: dict[str, np.ndarray], seed: int = 0,
                         samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """95% interval of overall(a) - overall(b) (%, points), both resampled with the same pairs."""
    if sorted(passes_a) != sorted(passes_b):
        raise ValueError("a paired interval needs both models scored on the same paradigms")
    return _interval(_bootstrap_overall(passes_a, seed, samples) - _bootstrap_overall(passes_b, seed, samples))


def _group_means(paradigms: list[Paradigm], accuracy: dict[str, float], key: str) -> dict[str, float]:
    groups = collections.defaultdict(list)
    for p in paradigms:
        groups[getattr(p, key) or "(none)"].append(accuracy[p.name])
    return {g: float(np.mean(v)) for g, v in sorted(groups.items())}


def evaluate(paradigms: list[Paradigm], sentence_scorer: SentenceScorer, max_pairs: int | None = None) -> dict:
    """Accuracy (%) per paradigm, per field and phenomenon, overall with its 95% interval, and the
    per-pair passes (`passes`, for paired comparisons). max_pairs: the first N pairs of each paradigm."""
    chosen = [dataclasses.replace(p, good=p.good[:max_pairs], bad=p.bad[:max_pairs]) for p in paradigms]
    unique = sorted({s for p in chosen for s in p.good + p.bad})  # BLiMP repeats sentences across pairs
    start = time.perf_counter()
    scores = dict(zip(unique, sentence_scorer.score(unique)))
    seconds = time.perf_counter() - start
    passes = {p.name: pair_passes(np.array([scores[s] for s in p.good]), np.array([scores[s] for s in p.bad]))
              for p in chosen}
    accuracy = {name: float(100 * v.mean()) for name, v in passes.items()}
    pairs = sum(len(v) for v in passes.values())
    return dict(scorer=sentence_scorer.scorer, overall=float(np.mean(list(accuracy.values()))),
                overall_ci=bootstrap_ci(passes), paradigms=accuracy,
                fields=_group_means(chosen, accuracy, "field"),
                phenomena=_group_means(chosen, accuracy, "phenomenon"),
                pairs=pairs, sentences=len(unique), seconds=seconds, pairs_per_second=pairs / seconds,
                passes=passes)


def format_report(result: dict) -> str:
    """The per-phenomenon table (per paradigm for a suite of a dozen files or fewer) and the overall line."""
    by_paradigm = len(result["paradigms"]) <= 12
    rows = result["paradigms"] if by_paradigm else result["phenomena"]
    width = max(len(k) for k in rows) + 2
    lines = [f"{'paradigm' if by_paradigm else 'phenomenon':<{width}}accuracy %"]
    lines += [f"{name:<{width}}{acc:6.1f}" for name, acc in rows.items()]
    low, high = result["overall_ci"]
    lines.append(f"{'overall':<{width}}{result['overall']:6.1f}   95% CI [{low:.1f}, {high:.1f}], mean over "
                 f"{len(result['paradigms'])} paradigms, {result['pairs']} pairs, scorer {result['scorer']}, "
                 f"{result['pairs_per_second']:.0f} pairs/s")
    return "\n".join(lines)

