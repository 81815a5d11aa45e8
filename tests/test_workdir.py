"""A workdir holds one run: a resume with another model or batch is refused before anything is
touched, a second run on a busy workdir stops at once, and metrics.jsonl keeps one history."""
import json
import os

import pytest

from conftest import tiny_config
from electra_jax.config import ConfigError
from electra_jax.export import export
from electra_jax.metrics_writer import MetricsWriter, read_metrics
from electra_jax.train import pretrain
from electra_jax.workdir import WorkdirBusy, config_differences, locked


def snapshot(workdir):
    """Every file under workdir with its size and modification time."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            if name != ".lock":
                path = os.path.join(root, name)
                out[os.path.relpath(path, workdir)] = (os.path.getsize(path), os.path.getmtime(path))
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "w"
    config = tiny_config(prepared["dir"], num_steps=10, checkpoint_every=10, eval_every=1000, log_every=5)
    pretrain(config, str(workdir))
    return config, workdir


@pytest.mark.parametrize("field,value", [("model.num_layers", 3), ("train.batch_size", 8),
                                         ("model.embedding_sharing", "gdes"), ("seed", 7)])
def test_resume_with_another_configuration_is_refused_and_touches_nothing(trained, field, value):
    config, workdir = trained
    before = snapshot(workdir)
    changed = config.copy_and_resolve_references()
    section, _, key = field.rpartition(".")
    (changed[section] if section else changed)[key] = value
    with pytest.raises(ConfigError, match=rf"holds checkpoints of another configuration \({field}: .* -> "
                                          rf"{value!r}\).*another --workdir"):
        pretrain(changed, str(workdir))
    assert snapshot(workdir) == before  # no checkpoint moved aside, no config or metrics rewritten
    assert not any(n.startswith("corrupt") for n in os.listdir(workdir / "checkpoints"))


@pytest.mark.parametrize("damage", ["deleted", "edited"])
def test_the_resume_guard_reads_the_checkpoints_own_configuration(trained, tmp_path, damage):
    """config.json is only a copy: deleted, or edited to claim the new batch size, the guard still
    refuses a resume with another batch size, from the configuration the checkpoint stores."""
    import shutil
    config, workdir = trained
    copy = tmp_path / "w"
    shutil.copytree(workdir, copy)
    changed = config.copy_and_resolve_references()
    changed.train.batch_size = 8
    if damage == "deleted":
        os.remove(copy / "config.json")
    else:
        saved = json.loads((copy / "config.json").read_text())
        saved["train"]["batch_size"] = 8
        (copy / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"another configuration \(train.batch_size: 16 -> 8\)"):
        pretrain(changed, str(copy))


def test_export_still_works_after_a_refused_resume(trained, tmp_path):
    config, workdir = trained
    changed = config.copy_and_resolve_references()
    changed.model.num_layers = 3
    with pytest.raises(ConfigError):
        pretrain(changed, str(workdir))
    assert export(str(workdir), str(tmp_path / "export"))["step"] == 10


def test_resumable_changes_are_accepted():
    saved = {"train": {"num_steps": 10, "log_every": 5, "batch_size": 16}, "mesh": {"data": 1}, "size": "tiny"}
    new = {"train": {"num_steps": 20, "log_every": 1, "batch_size": 16}, "mesh": {"data": 4}, "size": "tiny"}
    assert config_differences(saved, new) == {}
    assert config_differences(saved, {**new, "train": {**new["train"], "batch_size": 32}}) == \
        {"train.batch_size": (16, 32)}
    # a field the saved run did not know yet counts as the reference's value it trained with
    assert config_differences(saved, {**new, "model": {"embedding_sharing": "tied"}}) == {}
    assert "model.embedding_sharing" in config_differences(saved, {**new, "model": {"embedding_sharing": "gdes"}})


def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_holder(tmp_path):
    with locked(str(tmp_path)):
        with pytest.raises(WorkdirBusy, match=rf"in use by host \S+ pid {os.getpid()}; .*another --workdir"):
            with locked(str(tmp_path)):
                pass
    with locked(str(tmp_path)):  # released when the holder ends
        pass


def test_metrics_after_the_restored_checkpoint_are_dropped_on_resume(tmp_path):
    writer = MetricsWriter(str(tmp_path))
    for step in (5, 10, 15, 20):
        writer.write(step, "train", {"loss": float(step)})
    writer.forget_after(10)  # a kill -9 at step 20 fell back to the checkpoint of step 10
    writer.write(15, "train", {"loss": 1.5})
    writer.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(5, 5.0), (10, 10.0), (15, 1.5)]


def test_config_json_is_written_with_the_first_checkpoint(trained):
    config, workdir = trained
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["num_layers"] == config.model.num_layers
    assert (workdir / "checkpoints" / "10").is_dir()
