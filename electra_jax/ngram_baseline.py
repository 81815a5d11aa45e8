"""How well replaced tokens can be spotted from bigram counts alone: a yardstick for the discriminator.

A share of the held-out set's real tokens is replaced with draws from the training set's unigram
distribution (replacements that look right in isolation, so only context gives them away), and
every real token is scored by how much its two neighbours predict it: log p(x_i | x_{i-1}) +
log p(x_i | x_{i+1}) - 2 log p(x_i), from add-k bigram counts over the training set. The ROC AUC
of that score (replaced vs kept) is what local word order alone tells on this data; a
discriminator below it has not yet learned what a bigram table knows.

    python -m electra_jax.ngram_baseline PREPARED_DATA_DIR [--replace_prob 0.25] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np

from electra_jax.data.pipeline import read_split
from electra_jax.data.prepare import load_metadata
from electra_jax.objective import roc_auc


def split_ids(meta: dict, split: str) -> np.ndarray:
    """Every example of a prepared split as token ids [N, seq_length] (padding included)."""
    return read_split(meta, split)["input_ids"]


class BigramCounts:
    """Counts of adjacent token pairs, kept sparse (sorted pair codes) so a 30k vocabulary fits."""

    def __init__(self, ids: np.ndarray, vocab_size: int, smoothing: float = 0.1):
        self.vocab_size, self.k = vocab_size, smoothing
        self.codes, self.counts = np.unique(ids[:, :-1].astype(np.int64) * vocab_size + ids[:, 1:], return_counts=True)
        self.as_left = np.bincount(ids[:, :-1].ravel(), minlength=vocab_size)   # c(a, .)
        self.as_right = np.bincount(ids[:, 1:].ravel(), minlength=vocab_size)   # c(., b)
        unigram = np.bincount(ids.ravel(), minlength=vocab_size) + 1.0
        self.log_unigram = np.log(unigram / unigram.sum())

    def pair_counts(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        code = left.astype(np.int64) * self.vocab_size + right
        at = np.clip(np.searchsorted(self.codes, code), 0, len(self.codes) - 1)
        return np.where(self.codes[at] == code, self.counts[at], 0)

    def neighbour_score(self, ids: np.ndarray) -> np.ndarray:
        """[N, L] log-ratio of each token given its left and right neighbours over its unigram probability."""
        left, right = ids[:, :-1], ids[:, 1:]
        pairs = self.pair_counts(left, right) + self.k
        kv = self.k * self.vocab_size
        score = np.zeros(ids.shape)
        score[:, 1:] += np.log(pairs / (self.as_left[left] + kv)) - self.log_unigram[right]   # x_i given x_{i-1}
        score[:, :-1] += np.log(pairs / (self.as_right[right] + kv)) - self.log_unigram[left]  # x_i given x_{i+1}
        return score


class NgramLM:
    """An add-k n-gram language model over token ids, counted from prepared examples: the yardstick a
    zero-shot evaluation sets beside the networks (how far word order alone gets on a test).
    A sentence's score is its log-probability from [CLS] to [SEP], the boundaries the examples carry;
    n-grams that touch padding are not counted."""

    def __init__(self, ids: np.ndarray, vocab_size: int, pad_id: int, order: int = 3, smoothing: float = 0.1):
        if order < 1 or vocab_size ** order >= 2 ** 62:
            raise ValueError(f"order {order} with a vocabulary of {vocab_size} does not fit 64-bit n-gram codes")
        self.vocab_size, self.order, self.k = vocab_size, order, smoothing
        grams = np.stack([ids[:, i:ids.shape[1] - order + 1 + i] for i in range(order)], -1).reshape(-1, order)
        grams = grams[~np.any(grams == pad_id, axis=1)]
        self.codes, self.counts = np.unique(self._code(grams), return_counts=True)
        self.context_codes, self.context_counts = np.unique(self._code(grams[:, :-1]), return_counts=True)

    def _code(self, grams: np.ndarray) -> np.ndarray:
        code = np.zeros(len(grams), np.int64)
        for column in grams.T:
            code = code * self.vocab_size + column
        return code

    @staticmethod
    def _lookup(codes, counts, query):
        at = np.clip(np.searchsorted(codes, query), 0, len(codes) - 1)
        return np.where(codes[at] == query, counts[at], 0)

    def log_prob(self, rows: list[list[int]]) -> np.ndarray:
        """[N] log-probability of each id row (its first order-1 ids are context only)."""
        scores = np.zeros(len(rows))
        for i, row in enumerate(rows):
            row = np.asarray(row, np.int64)
            grams = np.stack([row[j:len(row) - self.order + 1 + j] for j in range(self.order)], -1)
            joint = self._lookup(self.codes, self.counts, self._code(grams))
            context = (self._lookup(self.context_codes, self.context_counts, self._code(grams[:, :-1]))
                       if self.order > 1 else np.full(len(grams), self.counts.sum()))
            scores[i] = np.sum(np.log((joint + self.k) / (context + self.k * self.vocab_size)))
        return scores


class NgramScorer:
    """An NgramLM with a tokenizer, scoring sentences as zero_shot.evaluate expects."""

    def __init__(self, lm: NgramLM, tokenizer):
        self.lm, self.tokenizer, self.scorer = lm, tokenizer, f"{lm.order}-gram"
        ids = tokenizer.special_ids
        # the first token is predicted from [CLS] (and, past a bigram, from [CLS]s standing in for the start)
        self.start, self.end = [ids["cls"]] * (lm.order - 1), [ids["sep"]]

    def score(self, sentences: list[str]) -> np.ndarray:
        return self.lm.log_prob([self.start + t + self.end for t in self.tokenizer.encode(sentences)])


def bigram_detector_auc(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int, special_ids,
                        replace_prob: float = 0.25, seed: int = 0) -> float:
    counts = BigramCounts(train_ids, vocab_size)
    special = np.asarray(list(special_ids))
    real = ~np.isin(eval_ids, special)
    rng = np.random.default_rng(seed)
    chosen = (rng.random(eval_ids.shape) < replace_prob) & real
    unigram = np.exp(counts.log_unigram) * ~np.isin(np.arange(vocab_size), special)  # draw real tokens only
    corrupted = eval_ids.copy()
    corrupted[chosen] = rng.choice(vocab_size, size=int(chosen.sum()), p=unigram / unigram.sum())
    replaced = chosen & (corrupted != eval_ids)  # a draw of the original token counts as kept, as in ELECTRA
    # a low score (the neighbours do not predict the token) means replaced
    return float(roc_auc(-counts.neighbour_score(corrupted), replaced.astype(np.float32), real.astype(np.float32)))


def main(argv=None) -> float:
    p = argparse.ArgumentParser(prog="python -m electra_jax.ngram_baseline", description=__doc__.splitlines()[0])
    p.add_argument("data_dir", help="a directory written by `electra-jax prepare`")
    p.add_argument("--replace_prob", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not 0 < a.replace_prob < 1:
        p.error(f"--replace_prob={a.replace_prob} must lie in (0, 1)")
    meta = load_metadata(a.data_dir)
    train_ids = split_ids(meta, "train")
    # padding decides how many real tokens a batch of this data holds (short documents pad more)
    print(f"{train_ids.shape[0]} training examples of {meta['seq_length']} slots: "
          f"{(train_ids != meta['special_ids']['pad']).mean():.1%} real tokens, the rest padding")
    auc = bigram_detector_auc(train_ids, split_ids(meta, "eval"), meta["vocab_size"],
                              meta["special_ids"].values(), a.replace_prob, a.seed)
    print(f"bigram detector, {a.replace_prob:.0%} of held-out tokens replaced by unigram draws: ROC AUC {auc:.3f}")
    return auc


if __name__ == "__main__":
    main()
