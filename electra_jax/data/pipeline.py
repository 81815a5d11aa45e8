"""The examples' record format and the grain pipeline that reads prepared ArrayRecord shards.

Each process reads only its slice of the examples; the shuffle is seeded and re-seeded every epoch;
the iterator's position is part of the checkpoint, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""
from __future__ import annotations

import functools
import os

import grain
import numpy as np

from electra_jax.data.corpus import DataError


def record_dtype(vocab_size: int, seq_length: int) -> str:
    """The narrowest integer type that holds every value of a record (token ids and the segment
    length): uint16 for vocabularies up to 65,536, half the bytes of int32."""
    return "uint16" if max(vocab_size, seq_length + 1) <= np.iinfo(np.uint16).max + 1 else "int32"


def records_dtype_of(meta: dict) -> str:
    """The record type of prepared data (data prepared before the field existed is int32)."""
    return meta.get("record_dtype", "int32")


def encode_record(first: list[int], second: list[int], cls_id: int, sep_id: int, dtype: str = "int32") -> bytes:
    """Record: [length of segment A incl. [CLS] and its [SEP], token ids...] as `dtype`."""
    tokens = [cls_id] + first + [sep_id] + (second + [sep_id] if second else [])
    return np.asarray([len(first) + 2] + tokens, dtype=dtype).tobytes()


def decode_records(records, seq_length: int, dtype: str = "int32") -> dict:
    """Records -> padded input_ids, attention_mask, token_type_ids (int32, [len(records), seq_length]).

    One batch at a time, in a handful of array operations: decoding each record on its own cost the
    demo's loop ~44 ms per batch of 256 on the cores the train step runs on."""
    rows = np.zeros((len(records), seq_length + 1), np.int32)  # column 0: the length of segment A
    lengths = np.empty(len(records), np.int64)
    for i, record in enumerate(records):
        data = np.frombuffer(record, dtype=dtype)[:seq_length + 1]
        rows[i, :len(data)] = data
        lengths[i] = len(data) - 1
    positions = np.arange(seq_length)
    attention_mask = positions < lengths[:, None]
    token_type_ids = (positions >= rows[:, :1]) & attention_mask
    return dict(input_ids=rows[:, 1:], attention_mask=attention_mask.astype(np.int32),
                token_type_ids=token_type_ids.astype(np.int32))


def array_record_source(meta: dict, split: str) -> grain.sources.ArrayRecordDataSource:
    """The split's shards, checked against the metadata: a truncated or missing shard is a DataError
    naming the dataset, not a reader traceback."""
    files = [os.path.join(meta["dir"], f) for f in meta[split]["files"]]
    if not files:
        raise DataError(f"prepared data {meta['dir']} has no {split!r} examples")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"prepared data {meta['dir']}: shard {missing[0]} is missing; prepare the data again")
    try:
        source = grain.sources.ArrayRecordDataSource(files)
    except RuntimeError as e:
        raise DataError(f"prepared data {meta['dir']}: a {split} shard cannot be read ({str(e).splitlines()[0]}); "
                        f"it is damaged or truncated: prepare the data again") from None
    if len(source) != meta[split]["examples"]:
        raise DataError(f"prepared data {meta['dir']}: the {split} shards hold {len(source)} examples, the metadata "
                        f"says {meta[split]['examples']}; prepare the data again")
    return source


def read_split(meta: dict, split: str) -> dict:
    """Every example of a prepared split, decoded ([N, seq_length] arrays): for tools and evaluations."""
    source = array_record_source(meta, split)
    return decode_records([source[i] for i in range(len(source))], meta["seq_length"], records_dtype_of(meta))


def check_shards(meta: dict) -> None:
    """Open every split with examples (before a run compiles anything)."""
    for split in ("train", "eval"):
        if meta[split]["examples"]:
            array_record_source(meta, split)


def make_dataset(meta: dict, split: str, *, local_batch_size: int, seed: int, shuffle: bool = True,
                 repeat: bool = True, process_index: int = 0, process_count: int = 1,
                 worker_count: int = 0) -> grain.IterDataset:
    ds = grain.MapDataset.source(array_record_source(meta, split))
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds[process_index::process_count]
    if repeat:
        ds = ds.repeat(None)
    ds = ds.batch(local_batch_size, drop_remainder=True,
                  batch_fn=functools.partial(decode_records, seq_length=meta["seq_length"],
                                             dtype=records_dtype_of(meta)))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
    if worker_count > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it
