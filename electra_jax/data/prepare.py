"""`electra-jax prepare`: text -> SentencePiece ids -> packed examples in ArrayRecord shards.

Output directory layout (written under a temporary name and renamed when complete, so an
interrupted prepare never leaves a dataset that training would read):
    metadata.json  tokenizer.model  train-00000-of-000NN.array_record ...  eval-00000-of-00001.array_record
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import random
import shutil
from typing import Iterable, Iterator

from tqdm import tqdm
from array_record.python.array_record_module import ArrayRecordWriter

from electra_jax.data import corpus, packing, pipeline
from electra_jax.data.corpus import DataError
from electra_jax.data.tokenizer import SPM_FILE, BaseTokenizer, load_tokenizer, train_sentencepiece

METADATA = "metadata.json"
FORMAT_VERSION = 1


@dataclasses.dataclass
class PrepareOptions:
    inputs: list[str] = dataclasses.field(default_factory=list)  # files, directories, globs
    tfds_name: str = ""         # instead of inputs: a prepared tfds dataset
    tfds_split: str = "train"
    tfds_data_dir: str | None = None
    text_key: str = "text"      # jsonl field / tfds feature holding the text
    output_dir: str = ""
    tokenizer: str = ""         # an existing SentencePiece .model, WordPiece vocab.txt or HF model dir; empty: train
    lowercase: bool | None = None  # WordPiece only: None = the HF directory's setting, else uncased
    vocab_size: int = 30522
    seq_length: int = 128
    eval_fraction: float = 0.01
    examples_per_shard: int = 50_000
    num_workers: int = 0        # 0: os.cpu_count()
    seed: int = 12345
    overwrite: bool = False
    chunk_chars: int = 1 << 18  # documents are tokenized in chunks of about this much text


def _documents(opts: PrepareOptions, stats: corpus.ReadStats) -> Iterator[corpus.Document]:
    if opts.tfds_name:
        return corpus.read_tfds(opts.tfds_name, opts.tfds_split, opts.text_key, opts.tfds_data_dir, stats)
    return corpus.read_files(corpus.expand_inputs(opts.inputs), stats, opts.text_key)


def _chunks(docs: Iterable[corpus.Document], chunk_chars: int) -> Iterator[list[corpus.Document]]:
    chunk, size = [], 0
    for doc in docs:
        chunk.append(doc)
        size += sum(len(s) for s in doc)
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


_worker_tokenizer: BaseTokenizer | None = None


def _init_worker(tokenizer_path: str, lowercase: bool | None) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_path, lowercase)


def _pack_chunk(task) -> tuple[list[bytes], list[bytes], int]:
    """Tokenize and pack one chunk of documents; deterministic in (seed, chunk index)."""
    index, docs, seq_length, eval_fraction, seed, dtype = task
    tok = _worker_tokenizer
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    packer = packing.DocumentPacker(seq_length, rng)
    flat = tok.encode([s for doc in docs for s in doc])
    train, held_out, tokens, offset = [], [], 0, 0
    cls_id, sep_id = tok.special_ids["cls"], tok.special_ids["sep"]
    for doc in docs:
        ids, offset = flat[offset:offset + len(doc)], offset + len(doc)
        for first, second in packer.pack(ids):
            # Held out per example, not per document: a corpus may be a few huge documents.
            target = held_out if rng.random() < eval_fraction else train
            target.append(pipeline.encode_record(first, second, cls_id, sep_id, dtype))
            tokens += len(first) + len(second)
    return train, held_out, tokens


class _ShardWriter:
    """Writes records to numbered ArrayRecord shards of at most `per_shard` records."""

    def __init__(self, directory: str, split: str, per_shard: int):
        self.directory, self.split, self.per_shard = directory, split, per_shard
        self.paths, self.count, self._writer, self._in_shard = [], 0, None, 0

    def write(self, record: bytes) -> None:
        if self._writer is None or self._in_shard == self.per_shard:
            self._close_shard()
            path = os.path.join(self.directory, f"{self.split}-{len(self.paths):05d}.array_record")
            self._writer, self._in_shard = ArrayRecordWriter(path, "group_size:1"), 0
            self.paths.append(path)
        self._writer.write(record)
        self._in_shard += 1
        self.count += 1

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[str]:
        """Close and rename shards to NAME-XXXXX-of-NNNNN; return the file names."""
        self._close_shard()
        names = []
        for i, path in enumerate(self.paths):
            name = f"{self.split}-{i:05d}-of-{len(self.paths):05d}.array_record"
            os.replace(path, os.path.join(self.directory, name))
            names.append(name)
        return names


def _training_sentences(opts: PrepareOptions) -> Iterator[str]:
    stats = corpus.ReadStats()
    for doc in _documents(opts, stats):
        for sentence in doc:  # SentencePiece ignores sentences over max_sentence_length: cut long lines
            for i in range(0, len(sentence), 4096):
                yield sentence[i:i + 4096]


# the 5 special tokens and enough pieces to spell any text
MIN_VOCAB_SIZE = 32


def prepare(opts: PrepareOptions) -> dict:
    """Run the whole preparation; returns the metadata written."""
    if not opts.output_dir:
        raise DataError("prepare needs an output directory (--output_dir)")
    out = os.path.abspath(opts.output_dir)
    if os.path.exists(out) and not opts.overwrite:
        raise DataError(f"output directory {out} already exists; pass --overwrite to replace it")
    if not opts.inputs and not opts.tfds_name:
        raise DataError("prepare needs input files (--input) or a tfds dataset (--tfds)")
    if opts.seq_length < 8:
        raise DataError(f"seq_length={opts.seq_length} is too short (min 8)")
    if not 0 <= opts.eval_fraction < 1:
        raise DataError(f"eval_fraction={opts.eval_fraction} must lie in [0, 1) (the share of examples held out)")
    if opts.tokenizer:
        load_tokenizer(opts.tokenizer, opts.lowercase)  # a wrong --tokenizer fails now, not after reading
    elif opts.vocab_size < MIN_VOCAB_SIZE:
        raise DataError(f"vocab_size={opts.vocab_size} is too small to train a tokenizer (min {MIN_VOCAB_SIZE})")
    # Fail on missing inputs / datasets before any long work.
    stats = corpus.ReadStats()
    first = list(itertools.islice(_documents(opts, stats), 1))
    if not first:
        raise DataError(f"no text found in {opts.inputs or opts.tfds_name} (empty files: {stats.empty_files}, "
                        f"lines not valid UTF-8: {sum(stats.invalid_utf8_lines.values())})")

    tmp = f"{out}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
    except OSError as e:
        raise DataError(f"cannot write the output directory {out}: {e.strerror}") from None
    try:
        metadata = _prepare_into(opts, tmp)
        if os.path.exists(out):  # --overwrite: swap in the new data, then drop the old
            old = f"{out}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metadata


def _prepare_into(opts: PrepareOptions, tmp: str) -> dict:
    if opts.tokenizer:
        source = load_tokenizer(opts.tokenizer, opts.lowercase)
        model_path = os.path.join(tmp, source.file_name)
        shutil.copyfile(source.path, model_path)
        tokenizer = load_tokenizer(model_path, getattr(source, "lowercase", None))
    else:
        model_path = os.path.join(tmp, SPM_FILE)
        logging.info("training a SentencePiece vocabulary of %d pieces", opts.vocab_size)
        errors: list[DataError] = []

        def sentences():  # keep our error: SentencePiece would wrap it in its own
            try:
                yield from _training_sentences(opts)
            except DataError as e:
                errors.append(e)

        try:
            tokenizer = train_sentencepiece(sentences(), model_path, opts.vocab_size)
        except RuntimeError:
            if errors:
                raise errors[0] from None
            raise
        if errors:
            raise errors[0]

    stats = corpus.ReadStats()
    dtype = pipeline.record_dtype(tokenizer.vocab_size, opts.seq_length)
    tasks = ((i, chunk, opts.seq_length, opts.eval_fraction, opts.seed, dtype)
             for i, chunk in enumerate(_chunks(_documents(opts, stats), opts.chunk_chars)))
    train = _ShardWriter(tmp, "train", opts.examples_per_shard)
    held_out = _ShardWriter(tmp, "eval", opts.examples_per_shard)
    tokens = 0
    workers = opts.num_workers or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")  # safe even when the caller has started threads (jax)
    lowercase = getattr(tokenizer, "lowercase", None)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(model_path, lowercase)) as pool:
        for train_records, eval_records, n_tokens in tqdm(pool.imap(_pack_chunk, tasks), desc="tokenize+pack",
                                                          unit="chunk"):
            for r in train_records:
                train.write(r)
            for r in eval_records:
                held_out.write(r)
            tokens += n_tokens
    if train.count == 0:
        raise DataError(f"{opts.inputs or opts.tfds_name} produced no training examples")
    metadata = dict(
        format_version=FORMAT_VERSION,
        seq_length=opts.seq_length,
        vocab_size=tokenizer.vocab_size,
        special_ids=tokenizer.special_ids,
        record_dtype=dtype,
        tokenizer=tokenizer.file_name,
        tokenizer_lowercase=lowercase,
        train=dict(examples=train.count, files=train.close()),
        eval=dict(examples=held_out.count, files=held_out.close()),
        tokens=tokens,
        source=dict(inputs=[os.path.abspath(i) for i in opts.inputs], tfds=opts.tfds_name,
                    tfds_split=opts.tfds_split, text_key=opts.text_key,
                    tokenizer=os.path.abspath(opts.tokenizer) if opts.tokenizer else "trained"),
        read_stats=stats.summary(),
        seed=opts.seed,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    with open(os.path.join(tmp, METADATA), "w") as f:
        json.dump(metadata, f, indent=2)
    return metadata


def load_metadata(data_dir: str) -> dict:
    path = os.path.join(data_dir, METADATA)
    if not os.path.isfile(path):
        raise DataError(f"{data_dir} is not a prepared dataset (no {METADATA}); run `electra-jax prepare` first")
    meta = corpus.read_json_file(path)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}; "
                        f"prepare the data again")
    meta["dir"] = os.path.abspath(data_dir)
    return meta


LOW_REAL_TOKEN_SHARE = 0.1  # below it, most of every batch is padding: the sequence length is far too long


def real_token_share(meta: dict) -> float:
    """The share of the prepared examples' slots that hold tokens rather than padding."""
    examples = meta["train"]["examples"] + meta["eval"]["examples"]
    return meta["tokens"] / max(1, examples * meta["seq_length"])


def padding_warning(meta: dict) -> str | None:
    """One line when the prepared data is mostly padding, else None."""
    share = real_token_share(meta)
    if share >= LOW_REAL_TOKEN_SHARE:
        return None
    return (f"{meta['dir']}: only {share:.1%} of every {meta['seq_length']}-token example is text, the rest padding "
            f"(the documents are far shorter); prepare again with a smaller --seq_length")


def load_data_tokenizer(meta: dict) -> BaseTokenizer:
    """The tokenizer a prepared dataset was made with."""
    return load_tokenizer(os.path.join(meta["dir"], meta["tokenizer"]), meta.get("tokenizer_lowercase"))
