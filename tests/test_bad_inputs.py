"""The bad-input battery: every command, every kind of wrong input a user can give it (a wrong value,
a missing, binary, non-UTF-8, malformed or truncated file, an unwritable place), answered by a non-zero
exit code and one line on stderr that names what is wrong; no traceback, and nothing already written
changes. Most cases fail before anything is compiled, so the battery runs in-process."""
import errno
import json
import os
import shutil
import sys
import tempfile

import pytest

from conftest import REPO
from electra_jax import cli

V0 = REPO / "tests" / "fixtures" / "v0"
TINY = str(REPO / "configs" / "electra_tiny.py")
FINETUNE = {name: str(REPO / "configs" / "finetune" / f"{name}.py") for name in ("text", "tagging", "squad", "glue")}
BINARY = b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def files(tmp_path_factory, prepared):
    """Bad files of every kind, next to good ones they are variants of."""
    d = tmp_path_factory.mktemp("bad")
    (d / "binary.bin").write_bytes(BINARY)
    for name in ("binary.csv", "binary.tsv", "binary.conll", "binary.txt", "vocab.txt"):
        (d / name).write_bytes(BINARY)
    (d / "latin1.csv").write_bytes("text,label\ngood film,pos\nna\xefve plot,neg\n".encode("latin-1"))
    (d / "latin1.txt").write_bytes("caf\xe9 [MASK]\n".encode("latin-1"))
    (d / "good.txt").write_text("The film was good.\n")
    (d / "long_mask.txt").write_text("word " * 600 + "[MASK]\n")
    (d / "squad_no_context.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [
        {"qas": [{"id": "1", "question": "q?", "answers": [{"text": "a", "answer_start": 0}]}]}]}]}))
    (d / "not_a_config.py").write_bytes(BINARY)
    # a prepared dataset with a binary metadata.json, and one whose training shard lost its tail
    shutil.copytree(prepared["dir"], d / "binary_meta")
    (d / "binary_meta" / "metadata.json").write_bytes(BINARY)
    shutil.copytree(prepared["dir"], d / "truncated")
    shard = d / "truncated" / prepared["train"]["files"][0]
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
    # an export with a damaged tensor file, and a HuggingFace directory with a binary config.json
    shutil.copytree(V0 / "export", d / "damaged_export")
    data_file = next(p for p in (d / "damaged_export" / "discriminator" / "d").iterdir() if p.is_file())
    data_file.write_bytes(data_file.read_bytes()[:100])
    (d / "hf_binary").mkdir()
    (d / "hf_binary" / "config.json").write_bytes(BINARY)
    (d / "hf_binary" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    (d / "roberta").mkdir()
    (d / "roberta" / "config.json").write_text('{"model_type": "roberta"}')
    # a workdir with something in it already: no bad input may change it
    (d / "workdir").mkdir()
    (d / "workdir" / "notes.txt").write_text("keep me")
    (d / "existing_output").mkdir()
    (d / "existing_output" / "notes.txt").write_text("keep me")
    return d


EXPORT = str(V0 / "export")
CASES = {  # name: (argv with {d} for the files' directory and {data} for good prepared data, message)
    "prepare: vocabulary size 0": (["prepare", "--input", "{d}/good.txt", "--output_dir", "{d}/out", "--vocab_size",
                                    "0"], "vocab_size=0 is too small"),
    "prepare: a binary file as tokenizer": (["prepare", "--input", "{d}/good.txt", "--output_dir", "{d}/out",
                                             "--tokenizer", "{d}/binary.bin"], "binary.bin is not a SentencePiece model"),
    "prepare: a binary vocab.txt": (["prepare", "--input", "{d}/good.txt", "--output_dir", "{d}/out", "--tokenizer",
                                     "{d}/vocab.txt"], "vocab.txt:1: a NUL byte"),
    "prepare: eval fraction 2": (["prepare", "--input", "{d}/good.txt", "--output_dir", "{d}/out", "--eval_fraction",
                                  "2"], "eval_fraction=2.0 must lie in [0, 1)"),
    "prepare: a binary corpus": (["prepare", "--input", "{d}/binary.bin", "--output_dir", "{d}/out"],
                                 "binary.bin:1: a NUL byte; this is a binary file"),
    "prepare: an output under /proc": (["prepare", "--input", "{d}/good.txt", "--output_dir", "/proc/electra-jax-out",
                                        "--vocab_size", "100"], "cannot write the output directory /proc/electra-jax-out"),
    "prepare: an existing output": (["prepare", "--input", "{d}/good.txt", "--output_dir", "{d}/existing_output"],
                                    "already exists; pass --overwrite"),
    "an unknown command": (["frobnicate"], "unknown command 'frobnicate'; the commands are demo"),
    "demo: sequences too short": (["demo", "--workdir", "{d}/demo", "--seq_length", "4"],
                                  "data.seq_length=4 is too short (min 8)"),
    "bench step: the PyTorch reference of an ALiBi model": (["bench", "step", "--config", TINY, "--reference",
                                                             "--config.model.attention_bias=alibi"],
                                                           "HuggingFace BERT/ELECTRA attention has no such biases"),
    "pretrain: an unknown flag": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir", "--stpes=3"],
                                  "Unknown command line flag 'stpes'"),
    "pretrain: a value of the wrong type": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                             "--config.train.num_steps=many"], "num_steps"),
    "pretrain: data.dir that is not prepared data": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                                      "--config.data.dir={d}/nowhere"],
                                                     "nowhere is not a prepared dataset"),
    "prepare: a missing input": (["prepare", "--input", "{d}/missing.txt", "--output_dir", "{d}/out"],
                                 "missing.txt does not exist"),
    "pretrain: no data.dir": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir"], "data.dir is empty"),
    "pretrain: a binary metadata.json": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                          "--config.data.dir={d}/binary_meta"], "metadata.json:1: a NUL byte"),
    "pretrain: a truncated shard": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                     "--config.data.dir={d}/truncated", "--config.data.seq_length=64"],
                                    "damaged or truncated: prepare the data again"),
    "pretrain: an unknown config field": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                           "--config.train.foo=1"], "unknown config field 'train.foo'"),
    "pretrain: a binary config file": (["pretrain", "--config", "{d}/not_a_config.py", "--workdir", "{d}/workdir"],
                                       "cannot load the config file"),
    "pretrain: a missing config file": (["pretrain", "--config", "{d}/missing.py", "--workdir", "{d}/workdir"],
                                        "missing.py does not exist"),
    "pretrain: negative warmup": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir", "--config.data.dir={data}",
                                   "--config.train.warmup_steps=-5"], "train.warmup_steps=-5 must not be negative"),
    "pretrain: dropout 2": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir", "--config.data.dir={data}",
                             "--config.model.dropout_rate=2.0"], "dropout_rate=2.0"),
    "pretrain: keep -1 checkpoints": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                       "--config.data.dir={data}", "--config.train.keep_checkpoints=-1"],
                                      "keep_checkpoints=-1"),
    "pretrain: a mesh larger than the machine": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                                  "--config.data.dir={data}", "--config.data.seq_length=64",
                                                  "--config.mesh.data=64"],
                                                 "has 64 devices but"),
    "finetune: a CSV that is not UTF-8": (["finetune", "--config", FINETUNE["text"], "--config.init=" + EXPORT,
                                           "--config.data.train_file={d}/latin1.csv", "--workdir", "{d}/workdir"],
                                          "latin1.csv:3: not valid UTF-8"),
    "finetune: a binary CSV": (["finetune", "--config", FINETUNE["text"], "--config.init=" + EXPORT,
                                "--config.data.train_file={d}/binary.csv", "--workdir", "{d}/workdir"],
                               "binary.csv:1: a NUL byte"),
    "finetune: a binary TSV": (["finetune", "--config", FINETUNE["text"], "--config.init=" + EXPORT,
                                "--config.data.train_file={d}/binary.tsv", "--workdir", "{d}/workdir"],
                               "binary.tsv:1: a NUL byte"),
    "finetune: a binary CoNLL file": (["finetune", "--config", FINETUNE["tagging"], "--config.init=" + EXPORT,
                                       "--config.data.train_file={d}/binary.conll",
                                       "--config.data.dev_file={d}/binary.conll", "--workdir", "{d}/workdir"],
                                      "binary.conll:1: a NUL byte"),
    "finetune: SQuAD without a context": (["finetune", "--config", FINETUNE["squad"], "--config.init=" + EXPORT,
                                           "--config.data.train_file={d}/squad_no_context.json",
                                           "--config.data.dev_file={d}/squad_no_context.json", "--workdir",
                                           "{d}/workdir"], "data[0].paragraphs[0] has no 'context'"),
    "finetune: init is not a model": (["finetune", "--config", FINETUNE["glue"], "--config.init={d}",
                                       "--workdir", "{d}/workdir"], "no config.json there"),
    "finetune: a binary HuggingFace config": (["finetune", "--config", FINETUNE["text"],
                                               "--config.init={d}/hf_binary", "--config.data.train_file={d}/latin1.csv",
                                               "--workdir", "{d}/workdir"], "config.json:1: a NUL byte"),
    "predict: a binary --file": (["predict", "detect", "--ckpt", EXPORT, "--file", "{d}/binary.txt"],
                                 "binary.txt:1: a NUL byte"),
    "predict: a --file that is not UTF-8": (["predict", "fill-mask", "--ckpt", EXPORT, "--file", "{d}/latin1.txt"],
                                            "latin1.txt:1: not valid UTF-8"),
    "predict: a damaged export": (["predict", "detect", "--ckpt", "{d}/damaged_export", "some text"],
                                  "the export is damaged or incomplete"),
    "predict: top_k 0": (["predict", "fill-mask", "--ckpt", EXPORT, "--top_k", "0", "a [MASK] b"], "top_k=0"),
    "predict: a [MASK] beyond the positions": (["predict", "fill-mask", "--ckpt", EXPORT, "--file",
                                                "{d}/long_mask.txt"], "beyond the model's"),
    "predict: another model family": (["predict", "detect", "--ckpt", "{d}/roberta", "text"],
                                      "model_type is 'roberta'"),
    "convert: a binary HuggingFace config": (["convert", "from-hf", "--discriminator", "{d}/hf_binary", "--out",
                                              "{d}/converted"], "config.json:1: a NUL byte"),
    "pretrain: a config field given twice": (["pretrain", "--config", TINY, "--workdir", "{d}/workdir",
                                              "--config.data.dir={data}", "--config.train.batch_size=8",
                                              "--config.train.batch_size=16"],
                                             "--config.train.batch_size is given 2 times; give each config field once"),
    "finetune: a tuple-valued field given twice": (["finetune", "--config", FINETUNE["text"], "--config.init=" + EXPORT,
                                                    "--config.data.train_file={d}/latin1.csv",
                                                    "--config.data.text_columns=text", "--config.data.text_columns=text",
                                                    "--workdir", "{d}/workdir"],
                                                   "--config.data.text_columns is given 2 times"),
    "bench plan: no chips": (["bench", "plan", "--config", TINY, "--accelerator", "v5p", "--chips", "0"],
                             "--chips 0: plan for at least 1 chip"),
    "export: --out under a regular file": (["export", "--workdir", str(V0 / "run"), "--out", "{d}/good.txt/export"],
                                           "cannot write {d}/good.txt/export: a part of that path is a file"),
    "export: --out under /proc": (["export", "--workdir", str(V0 / "run"), "--out", "/proc/electra-jax-export"],
                                  "cannot write /proc/electra-jax-export:"),
    "predict: a directory as --file": (["predict", "detect", "--ckpt", EXPORT, "--file", "{d}"], "is a directory"),
    "predict: an empty --file": (["predict", "detect", "--ckpt", EXPORT, "--file", ""], "--file is empty"),
    "eval: missing minimal pairs": (["eval", "minimal-pairs", "--ckpt", EXPORT, "--data", "{d}/no_pairs"],
                                    "input {d}/no_pairs does not exist"),
    "eval: an odd file of alternating pairs": (["eval", "minimal-pairs", "--ckpt", EXPORT, "--data", "{d}/good.txt"],
                                               "1 non-blank lines; a file of minimal pairs alternates"),
    "export: a workdir without checkpoints": (["export", "--workdir", "{d}/workdir", "--out", "{d}/exported"],
                                              "no readable checkpoint"),
}


def snapshot(d) -> dict:
    return {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line(case, files, prepared, capsys):
    argv, message = CASES[case]
    argv = [a.replace("{d}", str(files)).replace("{data}", prepared["dir"]) for a in argv]
    before = snapshot(files)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # absl and argparse errors exit with the message
        code = 1 if isinstance(e.code, str) else e.code
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    assert message.replace("{d}", str(files)) in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(files) == before  # nothing that was there changed
    assert not any(p.name.startswith(("out", "converted", "exported")) for p in files.iterdir())


UNWRITABLE_COMMANDS = {  # command: argv with {out} for the place that cannot be written
    "export": ["export", "--workdir", str(V0 / "run"), "--out", "{out}"],
    "convert to-hf": ["convert", "to-hf", "--ckpt", EXPORT, "--out", "{out}"],
    "eval --json": ["eval", "minimal-pairs", "--ckpt", EXPORT, "--data", "{d}/pairs.txt", "--json", "{out}"],
    "pretrain": ["pretrain", "--config", TINY, "--workdir", "{out}", "--config.data.dir={data}",
                 "--config.data.seq_length=64"],
    "finetune": ["finetune", "--config", FINETUNE["text"], "--config.init=" + EXPORT, "--workdir", "{out}",
                 "--config.data.train_file={d}/labels.csv"],
}


@pytest.mark.parametrize("kind,expected", [(errno.EROFS, "the filesystem is read-only"),
                                           (errno.EACCES, "permission denied"),
                                           (errno.ENOSPC, "no space left on the device")])
@pytest.mark.parametrize("command", list(UNWRITABLE_COMMANDS))
def test_an_unwritable_output_gets_one_line_naming_the_users_path(command, kind, expected, files, prepared, tmp_path,
                                                                    capsys, monkeypatch):
    """The OS refuses the write (simulated: a read-only mount or a full disk needs privileges the
    suite may not have): one line with the path the user gave and what to do, no traceback."""
    (tmp_path / "pairs.txt").write_text("Who did she see him?\nWho did she see?\n")
    (tmp_path / "labels.csv").write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40)))
    out = tmp_path / "out" / "target"
    argv = [a.replace("{out}", str(out)).replace("{d}", str(tmp_path)).replace("{data}", prepared["dir"])
            for a in UNWRITABLE_COMMANDS[command]]
    real_makedirs, real_mkstemp = os.makedirs, tempfile.mkstemp

    def refuse(path):
        if str(path).startswith(str(tmp_path / "out")):
            raise OSError(kind, os.strerror(kind), str(path))

    monkeypatch.setattr(os, "makedirs", lambda path, *a, **k: refuse(path) or real_makedirs(path, *a, **k))
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, dir=None, **k: refuse(os.path.join(str(dir), "x"))
                        or real_mkstemp(*a, dir=dir, **k))
    (tmp_path / "out").mkdir()
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert f"cannot write {out}: {expected}" in err[0], err
