"""Fine-tuning readers and features on the real shared data, and the bad inputs."""
import json
import logging

import numpy as np
import pytest

from electra_jax.data import task_readers as readers
from electra_jax.data.corpus import DataError
from electra_jax.data.tokenizer import load_tokenizer
from electra_jax.finetune import features
from electra_jax.finetune.run import UNKNOWN_WARNING_SHARE, unknown_share, warn_unknown_tokens


@pytest.fixture(scope="module")
def tok(prepared):
    return load_tokenizer(prepared["dir"] + "/tokenizer.model")


@pytest.mark.parametrize("task, n, first_label", [("cola", 1043, "1"), ("sst2", 872, "1"), ("mrpc", 408, "1"),
                                                  ("stsb", 1500, 5.0), ("qnli", 5463, "entailment"),
                                                  ("wnli", 71, "0")])
def test_glue_dev_sets_read_completely(shared_data, task, n, first_label):
    rows = readers.read_glue(task, str(shared_data / "glue"), "dev")
    assert len(rows) == n and rows[0]["label"] == first_label
    assert len(rows[0]["texts"]) == len(readers.GLUE[task].text_columns)
    assert all(t for r in rows for t in r["texts"])


def test_mrpc_byte_order_mark_and_pairs(shared_data):
    rows = readers.read_glue("mrpc", str(shared_data / "glue" / "MRPC"), "train")
    assert len(rows) == 3668 and rows[0]["texts"][0].startswith("Amrozi accused his brother")


def test_bad_tables_name_file_and_line(tmp_path):
    bad = tmp_path / "dev.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nbad film\tmaybe\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: unknown label 'maybe'"):
        readers.read_table(str(bad), ("sentence",), "label", labels=("0", "1"))
    with pytest.raises(DataError, match=r"dev.tsv:1: no column 'text'"):
        readers.read_table(str(bad), ("text",), "label")
    bad.write_text("sentence\tlabel\ngood film\t1\nragged\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: 1 fields, the header has 2"):
        readers.read_table(str(bad), ("sentence",), "label")
    bad.write_text("")
    with pytest.raises(DataError, match="dev.tsv is empty"):
        readers.read_table(str(bad), ("sentence",), "label")
    with pytest.raises(DataError, match="does not exist"):
        readers.read_table(str(tmp_path / "nope.csv"), ("sentence",), "label")
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"text": "a", "label": "p"}\n{"txt": "b", "label": "n"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: no field 'text'"):
        readers.read_table(str(jsonl), ("text",), "label")


def test_chinese_csv_reads(shared_data):
    rows = readers.read_table(str(shared_data / "chinese" / "online_shopping_10_cats.csv"), ("review",), "label")
    assert len(rows) > 62000 and {r["label"] for r in rows} == {"0", "1"}
    assert not any(r["texts"][0].startswith("\ufeff") for r in rows)  # stray BOMs removed


def test_conll_reader_counts(shared_data):
    sentences = readers.read_conll(str(shared_data / "conll2003" / "valid.txt"))
    assert len(sentences) == 3250 and sum(len(s["words"]) for s in sentences) == 51362
    chunks = readers.read_conll(str(shared_data / "conll2003" / "valid.txt"), label_column=2)
    assert chunks[0]["tags"][0].endswith("NP")


def test_conll_bad_line(tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text("EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"train.txt:2: 1 columns"):
        readers.read_conll(str(bad))


def test_tags_sit_on_first_sub_tokens(tok):
    sentences = [dict(words=["Unbelievably", "Alice", "ran", "."], tags=["O", "B-PER", "O", "O"])]
    arrays, aux = features.tagging_features(sentences, tok, 32, ("O", "B-PER", "I-PER"))
    pieces = [tok.encode([w])[0] for w in sentences[0]["words"]]
    assert aux["first_position"][0] == list(np.cumsum([1] + [len(p) for p in pieces[:-1]]))
    labelled = np.flatnonzero(arrays["labels"][0] != features.IGNORE)
    assert labelled.tolist() == aux["first_position"][0]
    assert arrays["labels"][0, aux["first_position"][0][1]] == 1
    assert arrays["input_ids"][0, 0] == tok.special_ids["cls"]
    assert arrays["input_ids"][0, arrays["attention_mask"][0].sum() - 1] == tok.special_ids["sep"]


def test_squad_answer_not_in_context_is_skipped_and_counted(tmp_path):
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "a", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "b", "question": "Capital?", "answers": [{"text": "Berlin", "answer_start": 0}]}]}]}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    examples, info = readers.read_squad(str(path), training=True)
    assert [e["id"] for e in examples] == ["a"] and info["skipped"] == ["b"]
    assert len(readers.read_squad(str(path), training=False)[0]) == 2  # scoring keeps every question
    path.write_text("{not json")
    with pytest.raises(DataError, match="train.json:1: not valid JSON"):
        readers.read_squad(str(path), training=True)


def test_squad_windows_map_every_answer_back(shared_data, tok):
    """Every answer (all gold answers, as training targets) of the first real dev article, through
    sliding windows: the target tokens map back to the answer's exact text. Answers that begin or
    end inside a word ("8" of "18") can only map to whole words; they are rare."""
    examples, _ = readers.read_squad(str(shared_data / "squad" / "v1.1" / "dev-v1.1.json"), training=False)
    article = [dict(e, answers=[a]) for e in examples[:300] for a in e["answers"]]  # the first article
    arrays, windows, spans = features.squad_features(article, tok, 160, doc_stride=16, max_query_length=24,
                                                     training=True)
    assert len(windows) > len({e["context"] for e in article})  # contexts need several windows
    found = {}
    for w, window in enumerate(windows):
        s, e = int(arrays["start_positions"][w]), int(arrays["end_positions"][w])
        if s:
            ex = article[window.example]
            text = ex["context"][spans[window.example][window.token_to_word[s]][0]:
                                 spans[window.example][window.token_to_word[e]][1]]
            found.setdefault(window.example, set()).add(text)
    inside_word = 0
    for i, ex in enumerate(article):
        a = ex["answers"][0]
        end = a["start"] + len(a["text"])
        mid_word = (a["start"] > 0 and ex["context"][a["start"] - 1].isalnum() and a["text"][0].isalnum()) or \
                   (end < len(ex["context"]) and ex["context"][end].isalnum() and a["text"][-1].isalnum())
        if mid_word:
            inside_word += 1
            continue
        assert found.get(i) == {a["text"].strip()}, (a, found.get(i))
    assert inside_word < 0.03 * len(article)  # 13 of 898 here; 76 of 34,726 over the whole dev set


def test_a_tokenizer_that_does_not_cover_the_text_is_reported(shared_data, tok, caplog):
    """English SentencePiece (the fixture's) over Chinese reviews: most tokens are [UNK]; a warning
    says so before training. English text stays under the threshold and is not reported."""
    reviews = (shared_data / "chinese" / "waimai_10k.csv").read_text(encoding="utf-8").splitlines()[1:200]
    english = (shared_data / "pretrain" / "gutenberg_nltk_tokenized" / "carroll-alice.txt").read_text().splitlines()[:200]

    def arrays(texts):
        ids = [t[:64] for t in tok.encode(texts)]
        padded = np.zeros((len(ids), 64), np.int32)
        for i, row in enumerate(ids):
            padded[i, :len(row)] = row
        return dict(input_ids=padded, attention_mask=(padded > 0).astype(np.int32) | (np.arange(64) == 0))

    assert unknown_share(arrays(reviews), tok.special_ids["unk"]) > 0.3
    assert unknown_share(arrays(english), tok.special_ids["unk"]) < UNKNOWN_WARNING_SHARE
    with caplog.at_level(logging.WARNING):
        warn_unknown_tokens(arrays(english), tok, "english-spm")
        assert not caplog.records
        warn_unknown_tokens(arrays(reviews), tok, "english-spm")
    assert len(caplog.records) == 1 and "are [UNK] under the tokenizer of english-spm" in caplog.records[0].message


def test_squad_without_a_dev_file_holds_out_whole_articles(shared_data):
    """SQuAD from one file (the shared data has only dev-v1.1.json): data.dev_fraction of its
    articles become the dev set, with every gold answer; training never sees their contexts."""
    from electra_jax.finetune.config import finetune_config
    from electra_jax.finetune.tasks import get_task
    c = finetune_config("squad")
    c.data.train_file = str(shared_data / "squad" / "v1.1" / "dev-v1.1.json")
    c.data.dev_fraction = 0.2
    task = get_task(c)
    train, dev = task.read("train"), task.read("dev")
    everything, _ = readers.read_squad(c.data.train_file, training=False)
    articles = {e["article"] for e in everything}
    dev_articles, train_articles = {e["article"] for e in dev}, {e["article"] for e in train}
    assert not dev_articles & train_articles and len(dev_articles) == round(0.2 * len(articles))
    assert len(dev) == sum(e["article"] in dev_articles for e in everything)
    assert {e["context"] for e in dev}.isdisjoint({e["context"] for e in train})
    assert max(len(e["answers"]) for e in dev) > 1  # scoring keeps every gold answer


def _task(name, **data):
    from electra_jax.finetune.config import finetune_config
    from electra_jax.finetune.tasks import get_task
    c = finetune_config(name)
    c.data.update(**data)
    return get_task(c)


def test_a_label_column_that_is_not_a_label_is_refused(shared_data, tmp_path):
    """Free text in the label column (or the text column named as the label) would train an
    N-way classifier on N rows; the rule: more distinct values than half the rows is text."""
    from electra_jax.config import ConfigError
    rows = [line.split("\t") for line in (shared_data / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:81]]
    free_text = tmp_path / "free_text.tsv"
    free_text.write_text("review\tlabel\n" + "".join(f"{s.strip()}\t{s.strip()[:30]}\n" for s, _ in rows))
    with pytest.raises(DataError, match=r"column 'label' has \d+ distinct values in 80 rows, which looks like text"):
        _task("text", train_file=str(free_text), text_columns=("review",)).read("train")
    with pytest.raises(ConfigError, match="data.label_column='review' is also one of data.text_columns"):
        _task("text", train_file=str(free_text), text_columns=("review",), label_column="review").read("train")
    real = tmp_path / "real.tsv"
    real.write_text("review\tlabel\n" + "".join(f"{s.strip()}\t{y}\n" for s, y in rows))
    assert len(_task("text", train_file=str(real), text_columns=("review",)).read("train")) == 72  # 10% held out


def test_a_dev_tag_never_seen_in_training_is_refused(tmp_path):
    """The rule of every task kind: a dev label the model cannot predict stops the run, naming it."""
    (tmp_path / "train.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n")
    (tmp_path / "dev.txt").write_text("Paris NNP B-NP B-LOC\nsleeps VBZ B-VP O\n")
    task = _task("ner", train_file=str(tmp_path / "train.txt"), dev_file=str(tmp_path / "dev.txt"))
    assert len(task.read("train")) == 2
    with pytest.raises(DataError, match=r"dev data has tags \['B-LOC'\] outside the label set"):
        task.read("dev")
