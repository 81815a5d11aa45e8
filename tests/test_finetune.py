"""Fine-tuning end to end on the real shared data, from a tiny model pretrained here."""
import csv
import json
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import ConfigError
from electra_jax.data.corpus import DataError
from electra_jax.finetune.config import finetune_config
from electra_jax.finetune.model import FinetuneModel
from electra_jax.finetune.run import INPUTS, Finetuner, batch_length, cut_rows, finetune, task_loss, unknown_share
from electra_jax.model import ModelConfig
from electra_jax.optim import layerwise_lr_decay


def quick_config(task, init, **data):
    c = finetune_config(task)
    c.init = str(init)
    c.max_seq_length = 64
    c.train.update(epochs=1, batch_size=16, eval_batch_size=32)  # learning rate: the reference default (3e-4)
    c.data.update(**data)
    return c


def test_layerwise_decay_scales_each_depth():
    cfg = ModelConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_layers=3, num_heads=2,
                      intermediate_size=32, max_position_embeddings=16)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = FinetuneModel(cfg, kind="classification", num_outputs=3).init(jax.random.key(0), ids)["params"]
    params = flax.linen.meta.unbox(params)
    tx = layerwise_lr_decay(0.5, cfg.num_layers)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params))
    def scale(*path):
        values = np.unique(np.concatenate([np.ravel(x) for x in jax.tree.leaves(_at(updates, path))]))
        assert len(values) == 1, values
        return float(values[0])
    assert scale("head") == 1.0
    assert scale("encoder", "layer_2") == 0.5      # the top layer: one decay step below the head
    assert scale("encoder", "layer_0") == 0.125
    assert scale("encoder", "embeddings_project") == scale("embeddings") == 0.0625


@pytest.mark.parametrize("kind", ["classification", "tagging", "span"])
def test_training_batches_are_cut_to_their_longest_sequence_without_changing_the_loss(kind):
    lengths = np.array([5, 9, 17, 3, 12, 20])
    rs = np.random.RandomState(0)
    mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int32)
    arrays = dict(input_ids=rs.randint(5, 50, (6, 32)) * mask, attention_mask=mask, token_type_ids=np.zeros((6, 32), np.int32))
    if kind == "tagging":
        arrays["labels"] = np.where(mask > 0, rs.randint(0, 3, (6, 32)), -1)
    elif kind == "span":
        arrays.update(start_positions=np.minimum(lengths - 1, 2), end_positions=lengths - 1)
    else:
        arrays["labels"] = rs.randint(0, 3, 6)
    assert batch_length(arrays, np.array([0, 1, 3]), 8) == 16       # longest 9, rounded up to 8s
    assert batch_length(arrays, np.arange(6), 8) == 24
    assert batch_length(arrays, np.arange(6), 0) == batch_length(arrays, np.arange(6), 64) == 32  # never past the arrays
    cfg = ModelConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    model = FinetuneModel(cfg, kind=kind, num_outputs=2 if kind == "span" else 3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))["params"]
    rows = np.array([4, 0, 2])
    def loss(batch):
        return float(task_loss(kind, model.apply({"params": params}, *(batch[k] for k in INPUTS)), batch))
    cut = cut_rows(arrays, rows, batch_length(arrays, rows, 8))
    assert cut["input_ids"].shape == (3, 24) and (kind != "tagging" or cut["labels"].shape == (3, 24))
    assert loss(cut) == pytest.approx(loss(cut_rows(arrays, rows, 32)), rel=1e-5)


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.fixture(scope="module")
def sst2_run(shared_data, pretrained_export, tmp_path_factory):
    c = quick_config("sst2", pretrained_export, dir=str(shared_data / "glue" / "SST-2"), max_train_examples=6000)
    c.train.epochs = 2
    workdir = tmp_path_factory.mktemp("sst2")
    return finetune(c, str(workdir)), workdir


def test_sst2_beats_the_majority_class(sst2_run, shared_data):
    summary, workdir = sst2_run
    with open(shared_data / "glue" / "SST-2" / "dev.tsv") as f:
        labels = [row["label"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    majority = max(labels.count("0"), labels.count("1")) / len(labels)
    assert summary["metrics"]["accuracy"]["mean"] > majority + 0.04, (summary["metrics"], majority)
    history = json.loads((workdir / "seed_0" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]
    rows = (workdir / "seed_0" / "dev_predictions.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction\tlabel" and len(rows) == 1 + len(labels)
    predicted = [r.split("\t") for r in rows[1:]]
    assert np.mean([p == g for _, p, g in predicted]) == pytest.approx(summary["runs"][0]["dev"]["accuracy"])
    assert os.path.isdir(workdir / "seed_0" / "best")


def test_ner_writes_tagged_conll_and_entity_scores(shared_data, pretrained_export, tmp_path):
    conll = shared_data / "conll2003"
    c = quick_config("ner", pretrained_export, train_file=str(conll / "train.txt"), dev_file=str(conll / "valid.txt"),
                     max_train_examples=800, max_eval_examples=200)
    summary = finetune(c, str(tmp_path))
    dev = summary["runs"][0]["dev"]
    assert {"precision", "recall", "f1", "token_accuracy"} <= set(dev) and set(dev["per_type"]) <= {
        "PER", "LOC", "ORG", "MISC"}
    blocks = (tmp_path / "seed_0" / "dev_predictions.conll").read_text().strip().split("\n\n")
    assert len(blocks) == 200 and all(len(line.split()) == 3 for b in blocks for line in b.splitlines())


def test_squad_writes_predictions_mapped_to_context_text(shared_data, pretrained_export, tmp_path):
    dev = str(shared_data / "squad" / "v1.1" / "dev-v1.1.json")
    c = quick_config("squad", pretrained_export, train_file=dev, dev_file=dev, max_train_examples=300,
                     max_eval_examples=60)
    c.max_seq_length = 128
    c.squad.update(max_query_length=32, doc_stride=64)
    summary = finetune(c, str(tmp_path))
    predictions = json.loads((tmp_path / "seed_0" / "dev_predictions.json").read_text())
    assert len(predictions) == 60 and {"exact", "f1"} <= set(summary["runs"][0]["dev"])
    contexts = {q["id"]: p["context"] for a in json.load(open(dev))["data"] for p in a["paragraphs"]
                for q in p["qas"]}
    assert all(text and text in contexts[qid] for qid, text in predictions.items())


def test_seeds_glue_test_predictions_and_a_sharded_run_from_the_command_line(shared_data, pretrained_export, tmp_path):
    wnli = tmp_path / "WNLI"
    wnli.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (wnli / name).write_text((shared_data / "glue" / "WNLI" / name).read_text())
    with open(shared_data / "glue" / "WNLI" / "dev.tsv") as f:  # a test file: no label column
        rows = [line.rstrip("\n").split("\t") for line in f]
    (wnli / "test.tsv").write_text("".join("\t".join(r[:3]) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "electra_jax.cli", "finetune", "--config", "configs/finetune/glue.py",
           "--config.task=wnli", f"--config.init={pretrained_export}", f"--config.data.dir={tmp_path}",
           "--config.num_seeds=2", "--config.train.epochs=1", "--config.max_seq_length=64",
           "--config.train.batch_size=16", "--workdir", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "accuracy" in r.stdout and "median" in r.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    values = [run["dev"]["accuracy"] for run in summary["runs"]]
    assert summary["seeds"] == [0, 1] and summary["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert summary["metrics"]["accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
    submission = (tmp_path / "run" / "seed_1" / "WNLI.tsv").read_text().splitlines()
    assert submission[0] == "index\tprediction" and len(submission) == 72
    assert [line.split("\t")[0] for line in submission[1:]] == [r[0] for r in rows[1:]]
    assert {line.split("\t")[1] for line in submission[1:]} <= {"0", "1"}

    # the same run data parallel x FSDP over 4 (fake CPU) devices: the same losses and predictions
    sharded = [a for a in cmd[:-1] if a != "--config.num_seeds=2"]
    r = subprocess.run(sharded + [str(tmp_path / "sharded"), "--config.num_seeds=1", "--config.mesh.data=2",
                                  "--config.mesh.fsdp=2"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    one, four = (json.loads((tmp_path / d / "seed_0" / "metrics.json").read_text()) for d in ("run", "sharded"))
    np.testing.assert_allclose([e["train_loss"] for e in four], [e["train_loss"] for e in one], rtol=1e-5)
    predictions = [(tmp_path / d / "seed_0" / "WNLI.tsv").read_text() for d in ("run", "sharded")]
    assert predictions[0] == predictions[1]


def test_bad_inputs_fail_before_any_work(shared_data, pretrained_export, tmp_path):
    bad = tmp_path / "train.csv"
    bad.write_text("review,stars\ngreat,5\n")
    c = quick_config("text", pretrained_export, train_file=str(bad), text_columns=("review",))
    with pytest.raises(DataError, match=r"train.csv:1: no column 'label'"):
        Finetuner(c, str(tmp_path / "run"))
    c = quick_config("sst2", "")
    with pytest.raises(ConfigError, match="init is empty"):
        Finetuner(c, str(tmp_path / "run"))
    c = quick_config("stsb", pretrained_export, dir=str(shared_data / "glue" / "STS-B"))
    c.max_seq_length = 1024
    with pytest.raises(ConfigError, match="exceeds the encoder's"):
        Finetuner(c, str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="task='qa' is unknown"):
        Finetuner(quick_config("qa", pretrained_export), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_new_language_from_its_labelled_file_alone(shared_data, tmp_path):
    """The README's new-language workflow on real Chinese reviews: `prepare` trains a tokenizer on
    the labelled CSV's text column, and fine-tuning starts from that prepared data (a tokenizer, no
    weights) with a tiny encoder trained from scratch."""
    from electra_jax import cli
    reviews = shared_data / "chinese" / "waimai_10k.csv"
    assert cli.main(["prepare", "--input", str(reviews), "--text_key", "review", "--output_dir",
                     str(tmp_path / "zh"), "--vocab_size", "3000", "--seq_length", "64", "--num_workers", "1"]) == 0
    c = quick_config("text", tmp_path / "zh", train_file=str(reviews), text_columns=("review",),
                     max_train_examples=4000)
    c.train.epochs = 2
    tuner = Finetuner(c, str(tmp_path / "run"))
    assert tuner.from_scratch and tuner.encoder_cfg.hidden_size == 128 and tuner.encoder_cfg.vocab_size <= 3000
    assert unknown_share(tuner.splits["train"][1], tuner.tokenizer.special_ids["unk"]) < 0.01
    summary = tuner.run()
    dev = summary["runs"][0]["dev"]
    rows = (tmp_path / "run" / "seed_0" / "dev_predictions.tsv").read_text().splitlines()[1:]
    gold = [r.split("\t")[2] for r in rows]
    majority = max(gold.count("0"), gold.count("1")) / len(gold)
    assert len(gold) == round(0.1 * 11987) and summary["init"].startswith("no pretrained weights")
    assert dev["accuracy"] > majority + 0.1 and dev["f1"] > 0.5, (dev, majority)


@pytest.mark.parametrize("task, builder, name", [("sst2", "TinyGlueSst2", "tiny_glue_sst2"),
                                                 ("ner", "TinyConll", "tiny_conll"),
                                                 ("squad", "TinySquad", "tiny_squad")])
def test_tasks_read_from_tfds(shared_data, pretrained_export, tmp_path, monkeypatch, task, builder, name):
    """tfds datasets with the catalog's features (glue/sst2, conll2003, squad), built locally."""
    from tfds_fixture import tiny_tasks
    monkeypatch.setenv(tiny_tasks.SHARED_ENV, str(shared_data))
    getattr(tiny_tasks, builder)(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
    c = quick_config(task, pretrained_export, source="tfds", tfds_name=name, tfds_data_dir=str(tmp_path / "tfds"))
    if task == "squad":
        c.max_seq_length = 128
        c.squad.update(max_query_length=32, doc_stride=64)
    summary = finetune(c, str(tmp_path / "run"))
    assert summary["runs"][0]["dev"][summary["main_metric"]] >= 0
    sizes = {"sst2": 872 - 600, "ner": 100, "squad": 50}
    outputs = {"sst2": "dev_predictions.tsv", "ner": "dev_predictions.conll", "squad": "dev_predictions.json"}
    text = (tmp_path / "run" / "seed_0" / outputs[task]).read_text()
    count = {"sst2": lambda t: len(t.splitlines()) - 1, "ner": lambda t: len(t.strip().split("\n\n")),
             "squad": lambda t: len(json.loads(t))}[task](text)
    assert count == sizes[task]


def test_fine_tuning_beyond_the_pretrained_length_warns_once(shared_data, pretrained_export, tmp_path, caplog):
    """The export records the 64 tokens it was pretrained on; positions past them were never trained."""
    from electra_jax.finetune.pretrained import pretrained_seq_length
    assert pretrained_seq_length(str(pretrained_export)) == 64
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n" + "".join(f"sentence number {i},{'ab'[i % 2]}\n" for i in range(40)))
    config = finetune_config("text")
    config.init, config.data.train_file = str(pretrained_export), str(labelled)
    for length, warned in ((64, 0), (128, 1)):
        config.max_seq_length = length
        caplog.clear()
        with caplog.at_level("WARNING"):
            Finetuner(config, str(tmp_path / str(length)))
        said = [r.message for r in caplog.records if "was pretrained on" in r.message]
        assert len(said) == warned and all("max_seq_length=128 is beyond the 64 tokens" in m for m in said)


def test_prepared_data_that_is_mostly_padding_is_reported(tmp_path, capsys):
    from electra_jax import cli
    (tmp_path / "short.txt").write_text("".join(f"Line {i} is short.\n\n" for i in range(300)))
    assert cli.main(["prepare", "--input", str(tmp_path / "short.txt"), "--output_dir", str(tmp_path / "data"),
                     "--vocab_size", "60", "--seq_length", "512"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "of every 512-token example is text" in line]
    assert len(warning) == 1 and "prepare again with a smaller --seq_length" in warning[0]
