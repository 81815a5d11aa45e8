"""Pack what `launch/study_on_device.sh` reads on a GPU host that has no network and no
../shared/data: the study's corpus prepared here (uint16 records), BLiMP with only the fields the
evaluation reads (the pairs the config scores), SST-2, and wheels of the pure-Python and small packages such a host lacks.

    python tools/pack_device_study.py --out device_data [--corpus_mb 40] [--no_wheels]

The corpus is the children's books of ../shared/data/pretrain/gutenberg_children in sorted file
order, as many as fit `--corpus_mb` megabytes of raw text (the whole folder is 71 MB; the tool refuses
a pack over the 40 MB a device run carries). Prepared with the GPU config's vocabulary
and sequence length. A research tool, not part of the package.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys

from electra_jax.data.prepare import PrepareOptions, prepare
from electra_jax.zero_shot import read_minimal_pairs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT_MB = 40
# What the GPU host lacks (its image has jax, flax, optax, orbax, sentencepiece, numpy, scipy,
# scikit-learn, matplotlib, tqdm, tokenizers, safetensors), for Python 3.12 on x86-64.
WHEELS = ("grain==0.2.18", "array-record==0.8.6", "ml-collections==1.1.0", "tensorboardX==2.6.5", "portpicker")


def books_within(folder: str, megabytes: float) -> list[str]:
    chosen, total = [], 0
    for name in sorted(os.listdir(folder)):
        size = os.path.getsize(os.path.join(folder, name))
        if total + size > megabytes * 1e6:
            break
        chosen.append(os.path.join(folder, name))
        total += size
    return chosen


def write_blimp(source: str, out: str, max_pairs: int | None) -> int:
    """Each paradigm's first `max_pairs` pairs (the ones the study scores), with the fields read."""
    os.makedirs(out)
    pairs = 0
    for paradigm in read_minimal_pairs([source]):
        with open(os.path.join(out, f"{paradigm.name}.jsonl"), "w") as f:
            for good, bad in list(zip(paradigm.good, paradigm.bad))[:max_pairs]:
                f.write(json.dumps(dict(sentence_good=good, sentence_bad=bad, field=paradigm.field,
                                        linguistics_term=paradigm.phenomenon)) + "\n")
                pairs += 1
    return pairs


def folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files) / 1e6


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python tools/pack_device_study.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--config", default=os.path.join(REPO, "configs", "study", "blimp_gpu.py"))
    p.add_argument("--corpus_mb", type=float, default=40.0, help="raw text of the books to prepare, in MB")
    p.add_argument("--vocab_size", type=int, default=0, help="0: the config's")
    p.add_argument("--no_wheels", action="store_true", help="leave the wheels out (a host that has the packages)")
    a = p.parse_args(argv)
    if os.path.exists(a.out):
        raise SystemExit(f"{a.out} already exists; remove it or choose another --out")
    study = runpy.run_path(a.config)["get_config"]()
    books = books_within(os.path.join(a.shared, "pretrain", "gutenberg_children"), a.corpus_mb)
    if not books:
        raise SystemExit(f"--corpus_mb {a.corpus_mb} holds no book of {a.shared}/pretrain/gutenberg_children")
    meta = prepare(PrepareOptions(inputs=books, output_dir=os.path.join(a.out, "corpus"),
                                  vocab_size=a.vocab_size or study.vocab_size, seq_length=study.seq_length,
                                  eval_fraction=0.01))
    pairs = write_blimp(os.path.join(a.shared, "blimp"), os.path.join(a.out, "blimp"), study.minimal_pairs.max_pairs)
    os.makedirs(os.path.join(a.out, "glue"))
    shutil.copytree(os.path.join(a.shared, "glue", "SST-2"), os.path.join(a.out, "glue", "SST-2"))
    if not a.no_wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--platform", "manylinux2014_x86_64",
                        "--platform", "manylinux_2_28_x86_64", "-d", os.path.join(a.out, "wheels"), *WHEELS],
                       check=True)
    sizes = {part: round(folder_mb(os.path.join(a.out, part)), 1) for part in sorted(os.listdir(a.out))}
    total = sum(sizes.values())
    info = dict(books=len(books), tokens=meta["tokens"], examples=meta["train"]["examples"], pairs=pairs,
                megabytes=sizes, total_megabytes=round(total, 1))
    with open(os.path.join(a.out, "pack.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info))
    if total > LIMIT_MB:  # this tool's own new folder: removed, so the same command can run again
        shutil.rmtree(a.out)
        raise SystemExit(f"the pack came to {total:.1f} MB ({sizes}), more than the {LIMIT_MB} MB a device run "
                         f"carries; removed {a.out}: lower --corpus_mb")
    return info


if __name__ == "__main__":
    main()
