"""Reading pretraining text: local files or a tfds dataset, as documents of sentences.

Text files follow the reference's format: one sentence per line, a blank line between documents.
.jsonl files hold one document per line in a text field (its newlines split sentences); .csv and
.tsv files (a header row) one document per row, in the column the text field names.
Lines that are not valid UTF-8 are counted and skipped; everything else that is wrong raises
DataError naming the file (and line).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import json
import itertools
import logging
import os
import re
from typing import Iterable, Iterator

Document = list[str]
TEXT_SUFFIXES = (".txt", ".text", ".raw")
JSONL_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES, TSV_SUFFIXES = (".csv",), (".tsv",)
READABLE_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + CSV_SUFFIXES + TSV_SUFFIXES


class DataError(ValueError):
    """Input data that cannot be used; the message names the file."""


@dataclasses.dataclass
class ReadStats:
    files: int = 0
    documents: int = 0
    lines: int = 0
    invalid_utf8_lines: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    empty_files: list = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        return dict(files=self.files, documents=self.documents, lines=self.lines,
                    invalid_utf8_lines=sum(self.invalid_utf8_lines.values()),
                    invalid_utf8_by_file=dict(self.invalid_utf8_lines), empty_files=list(self.empty_files))


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, directories (searched recursively for text and jsonl files) and glob patterns."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(root, f) for root, _, names in os.walk(item) for f in names
                           if f.endswith(READABLE_SUFFIXES))
            if not found:
                raise DataError(f"directory {item} has no {'/'.join(READABLE_SUFFIXES)} files")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise DataError(f"input {item} does not exist (not a file, directory or matching pattern)")
            files += [f for f in matched if os.path.isfile(f)]
    return files


def _refuse_binary(path: str, lineno: int, raw: bytes) -> None:
    """Text never holds NUL bytes; a binary file read as text would pass as a few odd lines."""
    if b"\x00" in raw:
        raise DataError(f"{path}:{lineno}: a NUL byte; this is a binary file, not UTF-8 text")


def strict_text_lines(path: str) -> Iterator[str]:
    """Lines of a UTF-8 text file, line endings kept and a leading byte-order mark dropped, for
    files every line of which matters (labelled data, texts to predict, metadata): DataError names
    the first line that is binary or not UTF-8 instead of a UnicodeDecodeError."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            _refuse_binary(path, lineno, raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at column "
                                f"{e.start + 1}); save the file as UTF-8 text") from None
            yield line.lstrip("\ufeff") if lineno == 1 else line


def read_json_file(path: str):
    """A whole JSON file, with DataError naming the file (and line) when it is not UTF-8 JSON."""
    try:
        return json.loads("".join(strict_text_lines(path)))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _decoded_lines(path: str, stats: ReadStats) -> Iterator[str]:
    """Lines of a pretraining text file: lines that are not UTF-8 are counted and skipped (one bad
    line in a large corpus should not stop a run; `prepare` reports the count)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            stats.lines += 1
            _refuse_binary(path, lineno, raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats.invalid_utf8_lines[path] += 1
                continue
            yield line.lstrip("\ufeff").rstrip("\r\n")


# Project Gutenberg's wrapper around a book: a header (title page, licence preamble) that ends with
# a START marker, and a footer (licence) that begins with an END line. Both marker generations:
# "*** START OF THE/THIS PROJECT GUTENBERG EBOOK ..." and the 1990s "*END*THE SMALL PRINT! ...".
GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG|^\*END\*?\s*THE SMALL PRINT", re.I)
GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|^End (of )?(the )?Project Gutenberg"
                           r"|^\*?Project Gutenberg Etext of", re.I)
GUTENBERG_HEADER_LINES = 1000  # the longest header seen (old licences) is about 350 lines


def strip_gutenberg(lines: Iterator[str]) -> Iterator[str]:
    """The book alone: lines after a Project Gutenberg START marker found in the first
    GUTENBERG_HEADER_LINES lines, up to the END line; a text without the markers passes unchanged."""
    head = list(itertools.islice(lines, GUTENBERG_HEADER_LINES))
    starts = [i for i, line in enumerate(head) if GUTENBERG_START.match(line)]
    if not starts:
        yield from itertools.chain(head, lines)
        return
    for line in itertools.chain(head[starts[-1] + 1:], lines):
        if GUTENBERG_END.match(line):
            return
        yield line


def read_text_file(path: str, stats: ReadStats) -> Iterator[Document]:
    """Documents of a text file (CRLF or LF line endings); a Project Gutenberg book without its
    header and licence."""
    doc: Document = []
    for line in strip_gutenberg(_decoded_lines(path, stats)):
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def jsonl_records(path: str, lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line; DataError names the line that is not JSON."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def read_jsonl_file(path: str, stats: ReadStats, text_key: str) -> Iterator[Document]:
    for lineno, record in jsonl_records(path, _decoded_lines(path, stats)):
        if not isinstance(record, dict) or text_key not in record:
            raise DataError(f"{path}:{lineno}: no {text_key!r} field (set --text_key)")
        doc = [s.strip() for s in str(record[text_key]).splitlines() if s.strip()]
        if doc:
            yield doc


def read_table_file(path: str, stats: ReadStats, text_key: str) -> Iterator[Document]:
    """A CSV (quoted) or TSV file with a header row: each row's `text_key` column is a document, so
    the labelled file a user fine-tunes on can also train the tokenizer and the pretraining."""
    tsv = path.endswith(TSV_SUFFIXES)
    rows = csv.reader(_decoded_lines(path, stats), delimiter="\t" if tsv else ",",
                      quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header = [h.strip() for h in next(rows, [])]
    if text_key not in header:
        raise DataError(f"{path}:1: no column {text_key!r} in the header {header} (set --text_key)")
    column = header.index(text_key)
    for fields in rows:
        if len(fields) > column:
            doc = [s.strip() for s in fields[column].splitlines() if s.strip()]
            if doc:
                yield doc


def read_files(files: list[str], stats: ReadStats, text_key: str = "text") -> Iterator[Document]:
    for path in files:
        stats.files += 1
        if os.path.getsize(path) == 0:
            logging.warning("skipping empty file %s", path)
            stats.empty_files.append(path)
            continue
        before = stats.documents
        if path.endswith(JSONL_SUFFIXES):
            reader = read_jsonl_file(path, stats, text_key)
        elif path.endswith(CSV_SUFFIXES + TSV_SUFFIXES):
            reader = read_table_file(path, stats, text_key)
        else:
            reader = read_text_file(path, stats)
        for doc in reader:
            stats.documents += 1
            yield doc
        if stats.documents == before:
            logging.warning("no text in %s (%d lines not valid UTF-8)", path, stats.invalid_utf8_lines[path])
            stats.empty_files.append(path)


def tfds_source(name: str, split: str, data_dir: str | None):
    """(data source, dataset info) of a prepared tfds dataset, read without TensorFlow (ArrayRecord)."""
    import tensorflow_datasets as tfds
    try:
        return (tfds.data_source(name, split=split, data_dir=data_dir or None, download=False),
                tfds.builder(name, data_dir=data_dir or None).info)
    except Exception as e:  # tfds raises several types for "not there"; all mean the same to the user
        raise DataError(
            f"tfds dataset {name!r} (split {split!r}) is not available in data_dir={data_dir or '~/tensorflow_datasets'}: "
            f"{type(e).__name__}: {e}. Prepare it first, in ArrayRecord format, e.g. "
            f"`tfds build {name.split(':')[0]} --file_format=array_record`") from None


def read_tfds(name: str, split: str, text_key: str, data_dir: str | None, stats: ReadStats) -> Iterator[Document]:
    """Documents from a prepared tfds dataset."""
    source, _ = tfds_source(name, split, data_dir)
    stats.files += 1
    for i in range(len(source)):
        record = source[i]
        if text_key not in record:
            raise DataError(f"tfds dataset {name!r} has no feature {text_key!r}; it has {sorted(record)}")
        text = record[text_key]
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
        doc = [s.strip() for s in text.splitlines() if s.strip()]
        if doc:
            stats.documents += 1
            yield doc
