"""The `electra-jax` command end to end, as a user runs it, in a temporary directory."""
import json
import os
import platform
import subprocess
import sys

from conftest import REPO
from electra_jax.cli import HUGE_PAGE_MALLOC, huge_page_malloc_env


def run(*args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "electra_jax.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


TINY = ["--config.model.num_layers=1", "--config.model.hidden_size=64", "--config.model.num_heads=1",
        "--config.model.intermediate_size=128", "--config.model.embedding_size=32", "--config.data.seq_length=32",
        "--config.train.batch_size=8", "--config.train.num_steps=4", "--config.train.log_every=2",
        "--config.train.eval_every=4", "--config.train.eval_steps=1"]


def test_prepare_then_pretrain(shared_data, tmp_path):
    text = shared_data / "pretrain" / "gutenberg_nltk_tokenized" / "blake-poems.txt"
    r = run("prepare", "--input", str(text), "--output_dir", "data", "--vocab_size", "400", "--seq_length", "32",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "training and" in r.stdout and (tmp_path / "data" / "metadata.json").exists()
    r = run("pretrain", "--config", str(REPO / "configs" / "electra_tiny.py"), "--workdir", "run",
            "--config.data.dir=data", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finished at step 4" in r.stdout and "TensorBoard: tensorboard --logdir" in r.stdout
    assert "loss                     generator_loss + 100 * discriminator_loss" in r.stdout  # the recipe's weight
    assert "will not convert to HuggingFace" not in r.stderr
    assert (tmp_path / "run" / "checkpoints" / "4").is_dir()

    r = run("export", "--workdir", "run", "--out", "exported", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "exported step 4 (discriminator, generator)" in r.stdout
    info = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert info["networks"]["discriminator"]["vocab_size"] == 400 and info["networks"]["discriminator"]["hidden_size"] == 64
    assert (tmp_path / "exported" / "tokenizer.model").exists()
    import orbax.checkpoint as ocp
    disc = ocp.StandardCheckpointer().restore(str(tmp_path / "exported" / "discriminator"))
    assert set(disc) == {"embeddings", "encoder", "head"}
    assert disc["encoder"]["layer_0"]["intermediate"]["kernel"].shape == (64, 128)
    r = run("export", "--workdir", "run", "--out", "exported", cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    # the small-budget recipe's model (untied embeddings, a one-layer generator) converts to HuggingFace
    r = run("convert", "to-hf", "--ckpt", "exported", "--out", "hf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    import transformers
    generator = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "hf" / "generator")
    assert generator.config.num_hidden_layers == 1 and generator.config.hidden_size == 16
    assert transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf" / "discriminator").config.num_hidden_layers == 1
    # transformers detects replaced tokens with the converted networks (tools/hf_detection_check.py)
    r = subprocess.run([sys.executable, str(REPO / "tools" / "hf_detection_check.py"), "--run", "run", "--hf", "hf",
                        "--passes", "2", "--json", "check.json"], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    check = json.loads((tmp_path / "check.json").read_text())
    assert 0 <= check["transformers_auc"] <= 1 and check["seq_length"] == 32 and check["tokens"] > 0

    # a model transformers cannot hold says so when its pretraining starts
    r = run("pretrain", "--config", str(REPO / "configs" / "electra_tiny.py"), "--workdir", "run_alibi",
            "--config.data.dir=data", "--config.model.attention_bias=alibi", *TINY,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    warned = [line for line in r.stderr.splitlines() if "will not convert to HuggingFace" in line]
    assert len(warned) == 1 and "model.attention_bias='alibi'" in warned[0]

    # a second prepare into the same directory is refused and leaves the data alone
    r = run("prepare", "--input", str(text), "--output_dir", "data", cwd=tmp_path)
    assert r.returncode == 2 and "already exists; pass --overwrite" in r.stderr


def test_every_command_has_help(tmp_path):
    for command in (["pretrain"], ["finetune"], ["study"], ["bench", "step"], ["prepare"]):
        r = run(*command, "--help", cwd=tmp_path)
        assert r.returncode == 0 and ("--config" in r.stdout or "--input" in r.stdout), (command, r.stderr[-500:])
    assert not (tmp_path / "run").exists()


def test_demo_runs_end_to_end(tmp_path):
    r = run("demo", "--workdir", "demo", "--steps", "6", "--vocab_size", "1000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "docstrings" in r.stdout and "finished at step 6" in r.stdout and "What the metrics mean" in r.stdout
    assert (tmp_path / "demo" / "run" / "metrics.jsonl").exists()
    # the same workdir at another length: refused before the data (or its run) is overwritten
    metadata = (tmp_path / "demo" / "data" / "metadata.json").read_bytes()
    r = run("demo", "--workdir", "demo", "--seq_length", "64", cwd=tmp_path)
    assert r.returncode != 0 and "holds 16-token examples; pass --seq_length 16 or a new --workdir" in r.stderr
    assert (tmp_path / "demo" / "data" / "metadata.json").read_bytes() == metadata


def test_huge_page_malloc_is_added_to_the_users_tunables_never_over_them():
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        assert huge_page_malloc_env({}) is None
        return
    assert huge_page_malloc_env({"HOME": "/h"}) == {"HOME": "/h", "GLIBC_TUNABLES": HUGE_PAGE_MALLOC}
    assert huge_page_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.arena_max=2:" + HUGE_PAGE_MALLOC
    assert huge_page_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # the user's choice stands
    assert huge_page_malloc_env({"GLIBC_TUNABLES": HUGE_PAGE_MALLOC}) is None  # after the re-exec: no loop
