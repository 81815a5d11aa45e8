"""Reading fine-tuning data in each benchmark's distribution format.

Every reader returns plain Python examples (dicts) and raises DataError naming the file and line
for anything it cannot use: a missing column, an unknown label, an empty file, a ragged row.

- GLUE .tsv (header names columns; CoLA train/dev have no header), and the user's own
  CSV / TSV / JSONL text-classification files;
- CoNLL column files (token first, one tag column, blank lines between sentences);
- SQuAD 1.1 / 2.0 .json;
- the same three from tfds (glue/*, squad, conll2003), when the user has them prepared.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
import sys

from electra_jax.data.corpus import DataError, jsonl_records, read_json_file, strict_text_lines, tfds_source

csv.field_size_limit(sys.maxsize)  # reviews and SQuAD-derived rows can be long


@dataclasses.dataclass(frozen=True)
class GlueSpec:
    text_columns: tuple            # header names, or positions for header-less files
    label_column: str | int | None
    labels: tuple | None           # None: regression
    metrics: tuple
    has_header: bool = True
    dev_file: str = "dev.tsv"
    tfds_name: str = ""
    tfds_text: tuple = ()


GLUE = {
    "cola": GlueSpec((3,), 1, ("0", "1"), ("mcc",), has_header=False, tfds_name="glue/cola",
                     tfds_text=("sentence",)),
    "sst2": GlueSpec(("sentence",), "label", ("0", "1"), ("accuracy",), tfds_name="glue/sst2",
                     tfds_text=("sentence",)),
    "mrpc": GlueSpec(("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1"),
                     tfds_name="glue/mrpc", tfds_text=("sentence1", "sentence2")),
    "stsb": GlueSpec(("sentence1", "sentence2"), "score", None, ("pearson", "spearman"),
                     tfds_name="glue/stsb", tfds_text=("sentence1", "sentence2")),
    "qqp": GlueSpec(("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1"),
                    tfds_name="glue/qqp", tfds_text=("question1", "question2")),
    "mnli": GlueSpec(("sentence1", "sentence2"), "gold_label", ("contradiction", "entailment", "neutral"),
                     ("accuracy",), dev_file="dev_matched.tsv", tfds_name="glue/mnli",
                     tfds_text=("premise", "hypothesis")),
    "qnli": GlueSpec(("question", "sentence"), "label", ("entailment", "not_entailment"), ("accuracy",),
                     tfds_name="glue/qnli", tfds_text=("question", "sentence")),
    "rte": GlueSpec(("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("accuracy",),
                    tfds_name="glue/rte", tfds_text=("sentence1", "sentence2")),
    "wnli": GlueSpec(("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",), tfds_name="glue/wnli",
                     tfds_text=("sentence1", "sentence2")),
}
# Directory names of the GLUE distribution (download_glue_data.py), for --config.data.dir=glue_data.
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
             "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
# The GLUE server's file names for test predictions.
GLUE_SUBMISSION = {**GLUE_DIRS, "mnli": "MNLI-m"}
OPTIONAL_GLUE_SPLITS = ("dev_mismatched", "test")


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is empty")


def _rows(path: str, delimiter: str):
    """(line number, fields) of a delimited file. GLUE .tsv files are not quoted (their text holds
    bare quote characters), CSV files are."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(strict_text_lines(path), delimiter=delimiter, quoting=quoting)  # (MRPC has a BOM)
    for fields in reader:
        if fields and any(x.strip() for x in fields):
            yield reader.line_num, fields


def _column_index(path: str, header: list[str] | None, column) -> int:
    if isinstance(column, int):
        return column
    if header is None:
        raise DataError(f"{path}: column {column!r} named, but the file has no header; give a position")
    if column not in header:
        raise DataError(f"{path}:1: no column {column!r}; the header has {header}")
    return header.index(column)


ANY_LABEL = "any"  # `labels` value: every label string is accepted (the set is learned from the data)


def read_table(path: str, text_columns, label_column, *, has_header: bool = True, labels=ANY_LABEL,
               require_label: bool = True) -> list[dict]:
    """Rows of a .tsv/.csv/.jsonl file as {"texts": [...], "label": str|float|None, "index": int, "line": n}.

    `labels` is the closed set of label strings, ANY_LABEL, or None for a float (regression) label.
    Test files without a label column give label None."""
    _check_file(path)
    if path.endswith((".jsonl", ".json")):
        return _read_jsonl_table(path, text_columns, label_column, labels, require_label)
    delimiter = "," if path.endswith(".csv") else "\t"
    rows = _rows(path, delimiter)
    header = None
    if has_header:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path} is empty")
        header = [h.strip() for h in first[1]]
    text_idx = [_column_index(path, header, c) for c in text_columns]
    label_idx = None
    if label_column is not None and (require_label or header is None or label_column in header):
        label_idx = _column_index(path, header, label_column)
    index_idx = header.index("index") if header and "index" in header else None
    width = len(header) if header else None
    examples = []
    for line, fields in rows:
        if width is not None and len(fields) != width:
            raise DataError(f"{path}:{line}: {len(fields)} fields, the header has {width}")
        need = max(text_idx + ([label_idx] if label_idx is not None else []))
        if len(fields) <= need:
            raise DataError(f"{path}:{line}: {len(fields)} fields, column {need} is needed")
        label = None if label_idx is None else _parse_label(path, line, fields[label_idx].strip(), labels)
        index = int(fields[index_idx]) if index_idx is not None and fields[index_idx].strip().isdigit() \
            else len(examples)
        examples.append(dict(texts=[fields[i].strip().lstrip("\ufeff") for i in text_idx], label=label,
                             index=index, line=line))
    if not examples:
        raise DataError(f"{path} has a header and no rows")
    return examples


def _read_jsonl_table(path, text_columns, label_column, labels, require_label) -> list[dict]:
    examples = []
    for line, record in jsonl_records(path, strict_text_lines(path)):
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line}: a JSON object with named fields is expected")
        missing = [c for c in text_columns if c not in record]
        if missing:
            raise DataError(f"{path}:{line}: no field {missing[0]!r}; the record has {sorted(record)}")
        label = None
        if label_column is not None and (require_label or label_column in record):
            if label_column not in record:
                raise DataError(f"{path}:{line}: no field {label_column!r}; the record has {sorted(record)}")
            label = _parse_label(path, line, str(record[label_column]).strip(), labels)
        examples.append(dict(texts=[str(record[c]).strip() for c in text_columns], label=label,
                             index=record.get("idx", len(examples)), line=line))
    if not examples:
        raise DataError(f"{path} holds no records")
    return examples


def _parse_label(path, line, value: str, labels):
    if labels == ANY_LABEL:
        return value
    if labels is None:
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{path}:{line}: label {value!r} is not a number (this task is a regression)") from None
    if value not in labels:
        raise DataError(f"{path}:{line}: unknown label {value!r}; this task's labels are {list(labels)}")
    return value


def read_glue(task: str, directory: str, split: str) -> list[dict] | None:
    """One split ("train", "dev", "dev_mismatched", "test") of a GLUE task from the GLUE folder or
    the task's own; None for a test or mismatched-dev file that is not there."""
    spec = GLUE[task]
    if os.path.isdir(os.path.join(directory, GLUE_DIRS[task])):
        directory = os.path.join(directory, GLUE_DIRS[task])
    name = {"dev": spec.dev_file, "test": "test_matched.tsv" if task == "mnli" else "test.tsv"}.get(split,
                                                                                                  f"{split}.tsv")
    path = os.path.join(directory, name)
    if split in OPTIONAL_GLUE_SPLITS and not os.path.exists(path):
        return None
    if split == "test":  # test files have a header and an index column, and no labels
        text_columns = ("sentence",) if task == "cola" else spec.text_columns
        return read_table(path, text_columns, spec.label_column, labels=spec.labels, require_label=False)
    return read_table(path, spec.text_columns, spec.label_column, has_header=spec.has_header, labels=spec.labels)


def tfds_has_split(name: str, split: str, data_dir: str | None) -> bool:
    import tensorflow_datasets as tfds
    try:
        return split in tfds.builder(name, data_dir=data_dir or None).info.splits
    except Exception:  # not prepared at all: let tfds_source say so
        return True


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_glue_tfds(task: str, split: str, data_dir: str | None, name: str = "") -> list[dict]:
    """A GLUE split from tfds (`name` overrides the catalog's glue/TASK)."""
    spec = GLUE[task]
    tfds_split = {"dev": "validation_matched" if task == "mnli" else "validation",
                  "dev_mismatched": "validation_mismatched",
                  "test": "test_matched" if task == "mnli" else "test"}.get(split, split)
    source, info = tfds_source(name or spec.tfds_name, tfds_split, data_dir)
    names = info.features["label"].names if spec.labels is not None else None
    examples = []
    for i in range(len(source)):
        r = source[i]
        label = None
        if split != "test" and names is None:
            label = float(r["label"])
        elif split != "test":  # tfds names the binary labels ('not_equivalent', 'equivalent'); GLUE numbers them
            tfds_label = names[int(r["label"])]
            label = tfds_label if tfds_label in spec.labels else spec.labels[int(r["label"])]
        examples.append(dict(texts=[_text(r[k]) for k in spec.tfds_text], label=label, index=int(r["idx"]),
                             line=i))
    return examples


# ---- token tagging -----------------------------------------------------------------------------

def read_conll(path: str, label_column: int = -1) -> list[dict]:
    """Sentences of a CoNLL column file as {"words": [...], "tags": [...], "line": first line}.
    -DOCSTART- lines are document boundaries, not sentences."""
    _check_file(path)
    sentences, words, tags, start = [], [], [], 0
    for line, raw in enumerate(strict_text_lines(path), 1):
        fields = raw.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(dict(words=words, tags=tags, line=start))
            words, tags = [], []
            continue
        if len(fields) < 2 or not (-len(fields) <= label_column < len(fields)) or label_column == 0:
            raise DataError(f"{path}:{line}: {len(fields)} columns; expected the token and a tag in column "
                            f"{label_column}")
        if not words:
            start = line
        words.append(fields[0])
        tags.append(fields[label_column])
    if words:
        sentences.append(dict(words=words, tags=tags, line=start))
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return sentences


def read_conll_tfds(name: str, split: str, data_dir: str | None, feature: str = "ner") -> list[dict]:
    split = {"dev": "validation"}.get(split, split)
    source, info = tfds_source(name, split, data_dir)
    names = info.features[feature].feature.names
    return [dict(words=[_text(w) for w in r["tokens"]], tags=[names[int(t)] for t in r[feature]], line=i)
            for i, r in enumerate(source[i] for i in range(len(source)))]


# ---- SQuAD ----------------------------------------------------------------------------------------

def read_squad(path: str, *, training: bool) -> tuple[list[dict], dict]:
    """Questions of a SQuAD 1.1/2.0 .json file as {"id", "question", "context", "answers":
    [{"text", "start"}], "impossible", "article" (its index in the file)}. For training, an answer that is not at its stated place in
    the context is skipped and counted (file and question id logged); evaluation keeps every answer
    since scoring compares text only."""
    _check_file(path)
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: no top-level 'data' list; not a SQuAD file")

    def field(record, key, where, kind):
        if not isinstance(record, dict) or not isinstance(record.get(key), kind):
            raise DataError(f"{path}: {where} has no {key!r} {kind.__name__}; not a SQuAD file")
        return record[key]

    examples, skipped = [], []
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(field(article, "paragraphs", f"data[{a}]", list)):
            where = f"data[{a}].paragraphs[{p}]"
            context = field(paragraph, "context", where, str)
            for q, qa in enumerate(field(paragraph, "qas", where, list)):
                for key in ("id", "question"):
                    field(qa, key, f"{where}.qas[{q}]", str)
                impossible = bool(qa.get("is_impossible", False))
                answers = [dict(text=field(ans, "text", f"{where}.qas[{q}].answers", str),
                                start=int(field(ans, "answer_start", f"{where}.qas[{q}].answers", int)))
                           for ans in qa.get("answers", [])]
                if training and not impossible:
                    answers = answers[:1]
                    if not answers or context[answers[0]["start"]:answers[0]["start"] + len(answers[0]["text"])] \
                            != answers[0]["text"]:
                        skipped.append(qa["id"])
                        continue
                examples.append(dict(id=qa["id"], question=qa["question"], context=context, answers=answers,
                                     impossible=impossible, article=a))
    if skipped:
        logging.warning("%s: skipped %d questions whose answer is not at its answer_start (first: %s)", path,
                        len(skipped), skipped[:5])
    if not examples:
        raise DataError(f"{path} holds no usable questions")
    return examples, dict(version=str(data.get("version", "")), skipped=skipped)


def read_squad_tfds(name: str, split: str, data_dir: str | None) -> list[dict]:
    split = {"dev": "validation"}.get(split, split)
    source, _ = tfds_source(name, split, data_dir)
    examples = []
    for i in range(len(source)):
        r = source[i]
        answers = [dict(text=_text(t), start=int(s)) for t, s in zip(r["answers"]["text"],
                                                                      r["answers"]["answer_start"])]
        examples.append(dict(id=_text(r["id"]), question=_text(r["question"]), context=_text(r["context"]),
                             answers=answers, impossible=bool(r.get("is_impossible", not answers))))
    return examples
