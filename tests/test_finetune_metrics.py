"""Fine-tuning metrics against scikit-learn / scipy / seqeval on the same arrays, and hand-made
SQuAD and conlleval cases."""
import numpy as np
import pytest
import scipy.stats

from electra_jax.finetune import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rs = np.random.RandomState(seed)
    y, p = rs.randint(0, 2, 200), rs.randint(0, 2, 200)
    p[:120] = y[:120]  # correlated, like a trained model
    assert metrics.accuracy(y, p) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    assert metrics.f1(y, p) == pytest.approx(sklearn_metrics.f1_score(y, p))
    assert metrics.matthews(y, p) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p))
    g, q = rs.uniform(0, 5, 100), rs.uniform(0, 5, 100)
    assert metrics.pearson(g, q + g) == pytest.approx(scipy.stats.pearsonr(g, q + g)[0])
    assert metrics.spearman(g, q + g) == pytest.approx(scipy.stats.spearmanr(g, q + g)[0])


def test_degenerate_predictions_score_zero_not_nan():
    y = np.array([0, 1, 1, 0])
    assert metrics.matthews(y, np.ones(4)) == 0.0 == sklearn_metrics.matthews_corrcoef(y, np.ones(4))
    assert metrics.f1(y, np.zeros(4)) == 0.0
    assert metrics.pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0


def test_squad_normalization_and_scores():
    assert metrics.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert metrics.squad_exact("the Denver Broncos", "Denver Broncos.") == 1.0
    # pred "Denver Broncos team", gold "Broncos": precision 1/3, recall 1 -> F1 0.5
    assert metrics.squad_f1("Broncos", "Denver Broncos team") == pytest.approx(0.5)
    assert metrics.squad_f1("a", "the") == 1.0  # both normalize to nothing
    examples = [dict(id="q1", answers=[dict(text="Santa Clara"), dict(text="Levi's Stadium")]),
                dict(id="q2", answers=[dict(text="1990")]),
                dict(id="q3", answers=[])]  # unanswerable (2.0)
    m = metrics.squad_metrics(examples, {"q1": "Levi's Stadium", "q2": "in 1990", "q3": ""})
    assert m["exact"] == pytest.approx(100 * 2 / 3)
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)  # q2: P 1/2, R 1 -> 2/3
    assert m["no_answer_exact"] == 100.0 and m["has_answer_exact"] == 50.0
    assert metrics.squad_metrics(examples[2:], {"q3": "something"})["exact"] == 0.0


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    (["I-PER", "I-PER", "O"], {("PER", 0, 1)}),                     # I- after O starts an entity
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 2)}),  # a type change starts one too
    (["B-ORG", "B-ORG", "I-ORG"], {("ORG", 0, 0), ("ORG", 1, 2)}),
    (["O", "O"], set()),
])
def test_conlleval_chunks(tags, expected):
    assert metrics.chunks(tags) == expected


def test_entity_metrics_match_seqeval(shared_data):
    seqeval = pytest.importorskip("seqeval.metrics")
    from electra_jax.data.task_readers import read_conll
    gold = [s["tags"] for s in read_conll(str(shared_data / "conll2003" / "valid.txt"))[:400]]
    rs = np.random.RandomState(0)
    kinds = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    # corrupt 15% of the tags at random, including stray I- tags
    pred = [[kinds[rs.randint(len(kinds))] if rs.rand() < 0.15 else t for t in s] for s in gold]
    ours = metrics.entity_metrics(gold, pred)
    assert ours["precision"] == pytest.approx(100 * seqeval.precision_score(gold, pred))
    assert ours["recall"] == pytest.approx(100 * seqeval.recall_score(gold, pred))
    assert ours["f1"] == pytest.approx(100 * seqeval.f1_score(gold, pred))
    report = seqeval.classification_report(gold, pred, output_dict=True)
    for kind in ("PER", "LOC", "ORG", "MISC"):
        assert ours["per_type"][kind]["f1"] == pytest.approx(100 * report[kind]["f1-score"])
        assert ours["per_type"][kind]["support"] == report[kind]["support"]
    assert "micro avg" in metrics.entity_report(ours)


def test_squad_decoding_over_windows():
    """Hand-made logits over two windows of one context: the best span lies in the second window,
    a higher-scoring span whose start lacks max context in its window is ignored, and SQuAD 2.0
    answers "" when the [CLS] score wins by more than the threshold."""
    from electra_jax.finetune import features, squad
    context = "The quick brown fox jumps over the lazy dog ."
    spans = features.context_words(context)  # 10 words
    ex = [dict(id="q", context=context, answers=[dict(text="lazy dog", start=35)])]
    # window 0 holds words 0-5 at positions 3-8, window 1 words 4-9 at positions 3-8 (question = 1 token)
    w0 = features.SquadWindow(0, {3 + i: i for i in range(6)}, {3 + i: i < 5 for i in range(6)})
    w1 = features.SquadWindow(0, {3 + i: 4 + i for i in range(6)}, {3 + i: i >= 1 for i in range(6)})
    start, end = np.zeros((2, 10)), np.zeros((2, 10))
    start[0, 8], end[0, 8] = 9.0, 9.0  # word 5 in window 0, where it lacks max context: skipped
    start[1, 6], end[1, 7] = 5.0, 5.0  # words 7-8, "lazy dog": 10 beats any start with end 9 (0 + 9)
    start[:, 0], end[:, 0] = 1.0, 1.0  # [CLS]
    predictions, null_odds = squad.decode(ex, [w0, w1], [spans], start, end)
    assert predictions == {"q": "lazy dog"} and null_odds["q"] == pytest.approx(2.0 - 10.0)
    assert metrics.squad_metrics(ex, predictions)["exact"] == 100.0
    start[:, 0], end[:, 0] = 6.0, 6.0  # null 12 vs best span 10
    assert squad.decode(ex, [w0, w1], [spans], start, end, allow_null=True, null_threshold=1.0)[0] == {"q": ""}
    assert squad.decode(ex, [w0, w1], [spans], start, end, allow_null=True, null_threshold=3.0)[0] == {"q": "lazy dog"}
    # a span longer than max_answer_length is not a candidate
    assert squad.decode(ex, [w0, w1], [spans], start, end, max_answer_length=1)[0] != {"q": "lazy dog"}
