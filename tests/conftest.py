"""Shared fixtures. Real data comes from ../shared/data through `shared_data`, which skips the test
with a message when the folder is absent (set ELECTRA_SHARED_DATA to point elsewhere)."""
import os
import pathlib
import shutil
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# One persistent XLA compilation cache for the session, the tests' subprocesses included (they
# inherit the environment): many tests compile the same small programs, each run building its own
# step, and a cache hit loads in milliseconds what takes seconds to compile. Set before jax is
# imported; a cache the caller chose is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = SESSION_XLA_CACHE = tempfile.mkdtemp(prefix="electra-jax-tests-xla-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
else:
    SESSION_XLA_CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if SESSION_XLA_CACHE:
        shutil.rmtree(SESSION_XLA_CACHE, ignore_errors=True)


def shared_data_dir() -> pathlib.Path | None:
    path = pathlib.Path(os.environ.get("ELECTRA_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (set ELECTRA_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def prepared(shared_data, tmp_path_factory):
    """Real English text (three Gutenberg books), SentencePiece 1000, sequences of 64 tokens."""
    from electra_jax.data.prepare import PrepareOptions, load_metadata, prepare
    books = shared_data / "pretrain" / "gutenberg_nltk_tokenized"
    out = tmp_path_factory.mktemp("data") / "gutenberg"
    prepare(PrepareOptions(inputs=[str(books / f) for f in ("carroll-alice.txt", "austen-persuasion.txt",
                                                             "chesterton-thursday.txt")],
                           output_dir=str(out), vocab_size=1000, seq_length=64, eval_fraction=0.05,
                           num_workers=2))
    return load_metadata(str(out))


def tiny_config(data_dir: str = "/unused", **train):
    """A model small enough to compile in seconds."""
    from electra_jax.config import default_config
    c = default_config("tiny")
    c.model.update(num_layers=2, hidden_size=64, num_heads=2, intermediate_size=128, embedding_size=32,
                   generator_fraction=0.5)
    c.data.update(dir=data_dir, seq_length=64)
    c.train.update(batch_size=16, num_steps=20, learning_rate=2e-3, warmup_steps=5, log_every=5, eval_every=10,
                   eval_steps=2, checkpoint_every=10)
    c.train.update(**train)
    return c


@pytest.fixture(scope="session")
def pretrained_export(prepared, tmp_path_factory):
    """A tiny ELECTRA pretrained here for 30 steps on `prepared`, exported: the start of the
    inference and fine-tuning tests."""
    from electra_jax.export import export
    from electra_jax.train import pretrain
    root = tmp_path_factory.mktemp("pretrained")
    pretrain(tiny_config(prepared["dir"], num_steps=30, eval_every=1000, learning_rate=1e-3), str(root / "run"))
    export(str(root / "run"), str(root / "export"))
    return root / "export"
