import numpy as np
import pytest

from conftest import tiny_config
from electra_jax.data.corpus import DataError
from electra_jax.metrics_writer import read_metrics
from electra_jax.train import Trainer, pretrain


def test_tiny_electra_learns_on_real_text(prepared, tmp_path):
    c = tiny_config(prepared["dir"], num_steps=80, log_every=10, eval_every=80, learning_rate=3e-3, warmup_steps=10)
    result = pretrain(c, str(tmp_path / "run"))
    logs = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in logs] == list(range(10, 81, 10))
    first, last = logs[0], logs[-1]
    assert last["loss"] < first["loss"] - 0.5, (first["loss"], last["loss"])
    # single-batch values move by +-0.2 at this learning rate: average the second half of the run
    assert np.mean([r["generator_loss"] for r in logs[-4:]]) < first["generator_loss"] - 0.5
    assert np.mean([r["generator_accuracy"] for r in logs[-2:]]) > 0.05
    assert 0.05 < last["replaced_fraction"] < 0.2
    assert result["eval"] and np.isfinite(result["eval"]["loss"])
    assert (tmp_path / "run" / "checkpoints" / "80").is_dir()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_discriminator_learns_to_spot_random_replacements(prepared, tmp_path):
    """With a near-uniform sampling temperature the replacements are random tokens, which context
    gives away: the discriminator must beat the class prior (the loss of predicting the replaced
    share everywhere) and flag a good share of them. Guards the detection path itself, which at tiny scale
    with a real generator stays near the prior for thousands of steps (docs/study.md)."""
    c = tiny_config(prepared["dir"], num_steps=100, log_every=10, eval_every=1000, learning_rate=5e-4,
                    warmup_steps=10)
    c.pretrain.temperature = 1000.0
    pretrain(c, str(tmp_path / "run"))
    tail = read_metrics(str(tmp_path / "run"))[-3:]  # single batches: average the last three logs
    mean = {k: np.mean([r[k] for r in tail]) for k in
            ("replaced_fraction", "discriminator_loss", "discriminator_recall", "discriminator_precision")}
    p = mean["replaced_fraction"]
    prior = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert mean["discriminator_loss"] < 0.8 * prior, (mean, prior)
    assert mean["discriminator_recall"] > 0.2 and mean["discriminator_precision"] > 0.4, mean


def test_mlm_baseline_trains_with_whole_word_masking(prepared, tmp_path):
    """BERT's later recipe: the masked-LM objective over whole words of the data's tokenizer."""
    c = tiny_config(prepared["dir"], num_steps=30, log_every=10, learning_rate=3e-3)
    c.objective = "mlm"
    c.pretrain.masking = "whole_word"
    pretrain(c, str(tmp_path / "mlm"))
    logs = read_metrics(str(tmp_path / "mlm"))
    assert logs[-1]["mlm_loss"] < logs[0]["mlm_loss"]


def test_resume_continues_exactly(prepared, tmp_path, monkeypatch):
    c = tiny_config(prepared["dir"], num_steps=12, log_every=2, checkpoint_every=6, eval_every=1000)
    pretrain(c, str(tmp_path / "straight"))

    from electra_jax.checkpoint import Checkpointer
    save = Checkpointer.save

    def save_then_crash(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        if step == 6:
            self.wait()
            raise RuntimeError("simulated crash after the step-6 checkpoint")
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(c, str(tmp_path / "resumed"))
    monkeypatch.setattr(Checkpointer, "save", save)
    result = pretrain(c, str(tmp_path / "resumed"))
    assert result["step"] == 12
    straight, resumed = read_metrics(str(tmp_path / "straight")), read_metrics(str(tmp_path / "resumed"))
    assert [r["step"] for r in resumed] == [2, 4, 6, 8, 10, 12]
    for a, b in zip(straight, resumed):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], a["step"]


def test_corpus_smaller_than_one_batch_is_refused_before_compiling(prepared, tmp_path):
    c = tiny_config(prepared["dir"], batch_size=prepared["train"]["examples"] + 8 - prepared["train"]["examples"] % 8)
    with pytest.raises(DataError, match="fewer than one batch"):
        Trainer(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
