"""The n-gram yardsticks (electra_jax/ngram_baseline.py): bigram replaced-token detection, the n-gram LM."""
import collections

import numpy as np
import pytest

from electra_jax.data.prepare import load_metadata
from electra_jax.ngram_baseline import BigramCounts, NgramLM, bigram_detector_auc, main, split_ids

SPECIAL = (0, 1, 2, 3, 4)


def cyclic_text(rows, length, vocab, seed):
    """Each token is its predecessor + 1 (mod the non-special ids): word order says everything."""
    start = np.random.default_rng(seed).integers(0, vocab - 5, size=(rows, 1))
    return 5 + (start + np.arange(length)) % (vocab - 5)


def test_sparse_pair_counts_equal_a_dense_count():
    ids = np.random.default_rng(0).integers(0, 12, size=(40, 9))
    dense = np.zeros((12, 12), int)
    np.add.at(dense, (ids[:, :-1].ravel(), ids[:, 1:].ravel()), 1)
    counts = BigramCounts(ids, 12)
    a, b = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    np.testing.assert_array_equal(counts.pair_counts(a, b), dense)


def test_order_that_determines_each_token_is_detected_almost_perfectly():
    auc = bigram_detector_auc(cyclic_text(400, 32, 60, 0), cyclic_text(100, 32, 60, 1), 60, SPECIAL)
    assert auc > 0.95


def test_text_without_order_gives_chance():
    rng = np.random.default_rng(0)
    auc = bigram_detector_auc(rng.integers(5, 60, (400, 32)), rng.integers(5, 60, (200, 32)), 60, SPECIAL)
    assert auc == pytest.approx(0.5, abs=0.05)


def test_command_on_prepared_text(prepared, capsys):
    auc = main([prepared["dir"]])
    assert 0.55 < auc < 1.0  # real English: word order gives much of it away
    out = capsys.readouterr().out
    assert f"ROC AUC {auc:.3f}" in out
    meta = load_metadata(prepared["dir"])
    ids = split_ids(meta, "train")
    assert f"{(ids != meta['special_ids']['pad']).mean():.1%} real tokens" in out


def test_a_replace_share_outside_0_1_is_refused(prepared, capsys):
    with pytest.raises(SystemExit):
        main([prepared["dir"], "--replace_prob", "1.5"])
    assert "--replace_prob=1.5 must lie in (0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_lm_matches_counting_by_hand(order):
    """Add-k n-gram log-probabilities against a direct count; n-grams touching padding not counted."""
    rng = np.random.default_rng(order)
    ids = rng.integers(1, 7, size=(40, 12))
    ids[:, -3:] = 0  # padding
    vocab, k = 7, 0.1
    lm = NgramLM(ids, vocab, pad_id=0, order=order, smoothing=k)
    grams = collections.Counter(tuple(row[i:i + order]) for row in ids for i in range(len(row) - order + 1)
                                if 0 not in row[i:i + order])
    contexts = collections.Counter()
    for gram, n in grams.items():
        contexts[gram[:-1]] += n
    row = [3, 1, 4, 1, 5, 2, 6]
    expected = sum(np.log((grams[tuple(row[i:i + order])] + k) / (contexts[tuple(row[i:i + order - 1])] + k * vocab))
                   for i in range(len(row) - order + 1))
    assert lm.log_prob([row])[0] == pytest.approx(expected, rel=1e-12)
