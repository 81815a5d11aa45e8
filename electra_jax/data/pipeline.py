"""grain input pipeline over prepared ArrayRecord shards.

Each process reads only its slice of the examples; the shuffle is seeded and re-seeded every epoch;
the iterator's position is part of the checkpoint, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""
from __future__ import annotations

import functools
import os

import grain

from electra_jax.data import packing
from electra_jax.data.corpus import DataError


def make_dataset(meta: dict, split: str, *, local_batch_size: int, seed: int, shuffle: bool = True,
                 repeat: bool = True, process_index: int = 0, process_count: int = 1,
                 worker_count: int = 0) -> grain.IterDataset:
    files = [os.path.join(meta["dir"], f) for f in meta[split]["files"]]
    if not files:
        raise DataError(f"prepared data {meta['dir']} has no {split!r} examples")
    ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(files))
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds[process_index::process_count]
    if repeat:
        ds = ds.repeat(None)
    ds = ds.map(functools.partial(packing.decode_record, seq_length=meta["seq_length"]))
    ds = ds.batch(local_batch_size, drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
    if worker_count > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it
