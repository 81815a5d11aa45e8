import json
import os
import random
import unicodedata

import numpy as np
import pytest

from electra_jax.data import packing, pipeline
from electra_jax.data.corpus import DataError
from electra_jax.data.prepare import PrepareOptions, load_metadata, prepare
from electra_jax.data.tokenizer import Tokenizer


def read_examples(meta, split="train"):
    from array_record.python.array_record_module import ArrayRecordReader
    out = []
    for f in meta[split]["files"]:
        reader = ArrayRecordReader(os.path.join(meta["dir"], f))
        batch = pipeline.decode_records(reader.read_all(), meta["seq_length"], pipeline.records_dtype_of(meta))
        out += [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
        reader.close()
    return out


def test_prepare_real_text(prepared):
    meta = prepared
    assert meta["vocab_size"] == 1000 and meta["seq_length"] == 64
    assert meta["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert meta["record_dtype"] == "uint16"  # a vocabulary of 1000: two bytes a token
    assert meta["train"]["examples"] > 1000 and meta["eval"]["examples"] > 20
    examples = read_examples(meta)
    assert len(examples) == meta["train"]["examples"]
    lengths, single = [], 0
    for ex in examples:
        ids, mask, types = ex["input_ids"], ex["attention_mask"], ex["token_type_ids"]
        n = int(mask.sum())
        lengths.append(n)
        assert ids[0] == 2 and ids[n - 1] == 3 and (ids[n:] == 0).all()
        seps = np.flatnonzero(ids == 3)
        assert len(seps) in (1, 2)
        single += len(seps) == 1
        # segment B (type 1) runs from after the first [SEP] through the last one
        np.testing.assert_array_equal(types[:n], (np.arange(n) > seps[0]).astype(int))
    lengths = np.array(lengths)
    assert np.mean(lengths == 64) > 0.6, "most examples fill the sequence"
    assert 0.05 < single / len(examples) < 0.4, "about 10% single-segment (plus one-sentence leftovers)"
    tok = Tokenizer(os.path.join(meta["dir"], "tokenizer.model"))
    text = tok.decode([i for i in examples[0]["input_ids"] if i > 4])
    assert len(text.split()) > 10, text


def test_build_example_splits_segments_as_the_reference():
    rng = random.Random(0)
    sentences = [[10] * 20, [11] * 20, [12] * 20, [13] * 20]
    results = [tuple(map(len, packing.build_example(sentences, 64, 64, rng))) for _ in range(1000)]
    # budget for A = (64 - 3) // 2 = 30: A takes the first sentence, and half the time the one that
    # crosses the budget; B gets the rest, trimmed to fit; 10% of the time everything goes to A.
    counts = {k: results.count(k) / len(results) for k in set(results)}
    assert set(counts) == {(20, 41), (40, 21), (62, 0)}
    assert counts[(62, 0)] == pytest.approx(0.1, abs=0.03)
    assert counts[(20, 41)] == pytest.approx(0.45, abs=0.05)
    first, second = packing.build_example([[7] * 100], 64, 64, random.Random(1))
    assert len(first) == 62 and second == []


@pytest.mark.parametrize("dtype", ["int32", "uint16"])
def test_record_round_trip(dtype):
    records = [pipeline.encode_record([5, 6, 7], [8, 9], cls_id=2, sep_id=3, dtype=dtype),
               pipeline.encode_record([4] * 20, [], cls_id=2, sep_id=3, dtype=dtype)]  # longer than the row: cut
    assert len(records[0]) == 9 * np.dtype(dtype).itemsize
    ex = pipeline.decode_records(records, 12, dtype)
    np.testing.assert_array_equal(ex["input_ids"], [[2, 5, 6, 7, 3, 8, 9, 3, 0, 0, 0, 0], [2] + [4] * 11])
    np.testing.assert_array_equal(ex["attention_mask"], [[1] * 8 + [0] * 4, [1] * 12])
    np.testing.assert_array_equal(ex["token_type_ids"], [[0] * 5 + [1] * 3 + [0] * 4, [0] * 12])
    assert {v.dtype for v in ex.values()} == {np.dtype(np.int32)}
    assert pipeline.record_dtype(65536, 512) == "uint16" and pipeline.record_dtype(65537, 512) == "int32"
    assert pipeline.records_dtype_of({}) == "int32"  # data prepared before the field existed


def _opts(tmp_path, inputs, **kw):
    kw.setdefault("tokenizer", "")
    return PrepareOptions(inputs=[str(i) for i in inputs], output_dir=str(tmp_path / "out"), vocab_size=300,
                          seq_length=32, num_workers=1, **kw)


def _text_file(shared_data, tmp_path, name="a.txt", n=400):
    src = shared_data / "pretrain" / "gutenberg_nltk_tokenized" / "carroll-alice.txt"
    lines = src.read_text(encoding="utf-8").splitlines()[:n]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_invalid_utf8_lines_are_counted_and_skipped(shared_data, tmp_path):
    path = _text_file(shared_data, tmp_path)
    with open(path, "ab") as f:
        f.write(b"caf\xe9 au lait \xff\xfe broken\nA good line after the broken one.\n")
    meta = prepare(_opts(tmp_path, [path]))
    assert meta["read_stats"]["invalid_utf8_lines"] == 1
    assert meta["read_stats"]["invalid_utf8_by_file"] == {str(path): 1}


def test_empty_files(shared_data, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="no text found"):
        prepare(_opts(tmp_path, [empty]))
    meta = prepare(_opts(tmp_path, [empty, _text_file(shared_data, tmp_path)]))
    assert meta["read_stats"]["empty_files"] == [str(empty)]


def test_a_megabyte_line_becomes_many_examples(shared_data, tmp_path):
    words = (shared_data / "pretrain" / "tinyshakespeare" / "input.txt").read_text().split()
    path = tmp_path / "long.txt"
    path.write_text(" ".join(words)[: 1 << 20] + "\n")
    prepare(_opts(tmp_path, [path], eval_fraction=0.0))
    meta = load_metadata(str(tmp_path / "out"))
    examples = read_examples(meta)
    assert meta["tokens"] > 150_000 and len(examples) > 4000
    assert all(ex["attention_mask"].sum() <= 32 for ex in examples)


def test_missing_and_malformed_inputs(tmp_path):
    with pytest.raises(DataError, match="does_not_exist.txt"):
        prepare(_opts(tmp_path, [tmp_path / "does_not_exist.txt"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        prepare(_opts(tmp_path, [bad]))
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text('{"body": "no text field here"}\n')
    with pytest.raises(DataError, match=r"nokey.jsonl:1: no 'text' field"):
        prepare(_opts(tmp_path, [nokey]))
    with pytest.raises(DataError, match="no_such_dataset"):
        prepare(PrepareOptions(tfds_name="no_such_dataset", tfds_data_dir=str(tmp_path), output_dir=str(tmp_path / "o")))
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "o")


def test_jsonl_input(shared_data, tmp_path):
    lines = (shared_data / "pretrain" / "gutenberg_nltk_tokenized" / "blake-poems.txt").read_text().splitlines()
    path = tmp_path / "docs.jsonl"
    with open(path, "w") as f:
        for i in range(0, len(lines), 20):
            f.write(json.dumps({"text": "\n".join(lines[i:i + 20]), "id": i}) + "\n")
    meta = prepare(_opts(tmp_path, [path]))
    assert meta["train"]["examples"] > 50


def test_tfds_dataset(shared_data, tmp_path, monkeypatch):
    from tfds_fixture import tiny_text
    monkeypatch.setenv(tiny_text.SOURCE_ENV, str(shared_data / "pretrain" / "wikitext-2-raw" / "wiki.valid.raw"))
    builder = tiny_text.TinyText(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare()
    meta = prepare(PrepareOptions(tfds_name="tiny_text", tfds_data_dir=str(tmp_path / "tfds"), text_key="text",
                                  output_dir=str(tmp_path / "out"), vocab_size=500, seq_length=64, num_workers=1))
    assert meta["source"]["tfds"] == "tiny_text" and meta["train"]["examples"] > 1000
    with pytest.raises(DataError, match="no feature 'body'"):
        prepare(PrepareOptions(tfds_name="tiny_text", tfds_data_dir=str(tmp_path / "tfds"), text_key="body",
                               output_dir=str(tmp_path / "out2"), vocab_size=500))


def test_chinese_text(shared_data, tmp_path):
    import csv
    with open(shared_data / "chinese" / "waimai_10k.csv", encoding="utf-8") as f:
        reviews = [row["review"] for row in csv.DictReader(f)][:4000]
    path = tmp_path / "zh.txt"
    path.write_text("\n\n".join(reviews) + "\n", encoding="utf-8")
    out = tmp_path / "zh"
    meta = prepare(PrepareOptions(inputs=[str(path)], output_dir=str(out), vocab_size=2000, seq_length=64,
                                  num_workers=2))
    tok = Tokenizer(str(out / "tokenizer.model"))
    nfkc = unicodedata.normalize("NFKC", reviews[0]).replace(" ", "")  # SentencePiece normalizes with NFKC
    assert tok.decode(tok.encode([reviews[0]])[0]).replace(" ", "") == nfkc
    assert tok.sp.encode(reviews[1]).count(1) <= 2, "few unknown pieces in Chinese text"
    assert any("\u4e00" <= ch <= "\u9fff" for i in range(5, 100) for ch in tok.id_to_piece(i))
    assert meta["train"]["examples"] > 500


def test_interrupted_prepare_leaves_nothing_and_existing_data_survives(shared_data, tmp_path, monkeypatch):
    from electra_jax.data import prepare as prepare_mod
    path = _text_file(shared_data, tmp_path)
    opts = _opts(tmp_path, [path])
    prepare(opts)
    before = sorted(os.listdir(opts.output_dir))
    with pytest.raises(DataError, match="already exists"):
        prepare(opts)

    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare_mod._ShardWriter, "close", interrupted)
    opts.overwrite = True
    with pytest.raises(KeyboardInterrupt):
        prepare(opts)
    assert sorted(os.listdir(opts.output_dir)) == before  # the old dataset is intact
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "out"]  # no half-written directory left behind
    load_metadata(opts.output_dir)


def test_pipeline_is_deterministic_and_splits_processes(prepared):
    def batches(**kw):
        it = iter(pipeline.make_dataset(prepared, "train", local_batch_size=8, seed=3, **kw))
        return [next(it)["input_ids"] for _ in range(3)]

    a, b = batches(), batches()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], batches(shuffle=False)[0])
    p0 = {tuple(r) for x in batches(process_index=0, process_count=2) for r in x}
    p1 = {tuple(r) for x in batches(process_index=1, process_count=2) for r in x}
    assert len(p0) == 24 and not (p0 & p1)


@pytest.mark.parametrize("book,first,last", [
    # the current marker form, CRLF line endings
    ("alcott__a_garland_for_girls.txt", "Produced by Charles Aldarondo and the Online Distributed",
     "The End."),
    # the 1990s form: the header ends with "*END*THE SMALL PRINT!", the footer is one "*Project Gutenberg Etext" line
    ("nesbit__five_children_and_it.txt", None, None),
])
def test_gutenberg_books_lose_their_header_and_licence(shared_data, book, first, last):
    from electra_jax.data.corpus import ReadStats, read_text_file
    path = shared_data / "pretrain" / "gutenberg_children" / book
    raw = path.read_bytes()
    assert b"\r\n" in raw and b"*** START OF" in raw or b"SMALL PRINT" in raw
    docs = list(read_text_file(str(path), ReadStats()))
    lines = [line for doc in docs for line in doc]
    text = "\n".join(lines)
    assert "\r" not in text
    assert "Project Gutenberg License" not in text and "SMALL PRINT" not in text and "START OF TH" not in text
    assert "PROJECT GUTENBERG EBOOK" not in text.upper() and not lines[-1].startswith(("End of", "*Project Gutenberg"))
    assert len(text.split()) > 0.8 * len(raw.decode("utf-8").split()) - 6000  # the licence is about 3000 words
    if first:
        assert lines[0] == first and lines[-1] == last
