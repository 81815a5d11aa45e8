"""The compute-matched study's pipeline, end to end at a few minutes' scale (checks the outputs,
not the outcome)."""
import json
import math
import runpy
import shutil
import sys

import pytest

from electra_jax.config import ConfigError
from electra_jax.study import budget_steps, pretrain_config, run_search, run_study


def smoke_config(shared_data):
    c = runpy.run_path("configs/study/small_cpu.py")["get_config"]()
    books = shared_data / "pretrain" / "gutenberg_nltk_tokenized"
    c.corpus = (str(books / "carroll-alice.txt"), str(books / "blake-poems.txt"))
    c.glue_dir = str(shared_data / "glue")
    c.vocab_size, c.seq_length = 600, 64
    c.model.update(hidden_size=64, intermediate_size=128, embedding_size=32)
    c.train.update(batch_size=16, log_every=2)
    c.pretrain_flops = 1.2e10  # about 20 steps of each objective
    c.budgets, c.seeds, c.tasks = 2, 2, ("stsb",)
    c.finetune.update(epochs=1, batch_size=16, max_train_examples=96, max_eval_examples=64)
    return c


def steps_of(c, objective, vocab):
    return budget_steps(pretrain_config(c, objective, "/unused", vocab)[0])


def test_equal_flops_give_masked_lm_more_steps(shared_data):
    c = smoke_config(shared_data)
    electra, electra_flops = pretrain_config(c, "electra", "/unused", 600)
    mlm, mlm_flops = pretrain_config(c, "mlm", "/unused", 600)
    assert mlm_flops < electra_flops and mlm.train.num_steps > electra.train.num_steps
    assert electra.train.num_steps * electra_flops == pytest.approx(mlm.train.num_steps * mlm_flops, rel=0.05)


@pytest.fixture(scope="module")
def study_run(shared_data, tmp_path_factory):
    """One study at seconds' scale with every stage on: GLUE fine-tuning, the probe, BLiMP with
    every scorer at every budget, random weights, n-gram yardsticks, few-label fine-tuning."""
    c = smoke_config(shared_data)
    zero_shot_stages = runpy.run_path("configs/study/blimp_cpu.py")["get_config"]()
    c.minimal_pairs = zero_shot_stages.minimal_pairs
    c.fewshot = zero_shot_stages.fewshot
    c.minimal_pairs.update(data=str(shared_data / "blimp"), max_pairs=4, random_seeds=(0,), ngram_orders=(1, 2))
    c.fewshot.update(sizes=(24,), epochs=(1,), seeds=2)
    workdir = tmp_path_factory.mktemp("study")
    return c, run_study(c, str(workdir)), workdir


def test_study_smoke_run(study_run):
    c, result, tmp_path = study_run
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert len(runs) == 2 * 2 * 1 + 1  # objectives x budgets x tasks, and the no-pretraining baseline
    assert {r["objective"] for r in runs.values()} == {"electra", "mlm", "scratch"}
    assert all(len(r["per_seed"]) == 2 and -100 <= r["mean"] <= 100 for r in runs.values())  # STS-B: correlations
    steps = sorted({r["step"] for r in runs.values() if r["objective"] == "electra"})
    vocab = json.loads((tmp_path / "data" / "metadata.json").read_text())["vocab_size"]
    assert steps == budget_steps(pretrain_config(c, "electra", "/unused", vocab)[0]) and len(steps) == 2
    table = result["table"].splitlines()
    assert len(table) == 2 + 4 + 1 and "average" in table[0]
    assert (tmp_path / "study.md").read_text().startswith(result["table"] + "\n")
    assert result["pretraining"] in (tmp_path / "study.md").read_text()
    # the pretraining diagnostics: ELECTRA's class-prior loss is the entropy of its logged replaced share
    *rows, scratch = [r.split(" | ") for r in result["pretraining"].splitlines()[2:]]
    budget_rows = [(o, s) for o in ("electra", "mlm") for s in steps_of(c, o, vocab)]
    assert [(r[0].strip("| "), int(r[1])) for r in rows] == budget_rows
    metrics_file = tmp_path / "pretrain" / "electra" / "metrics.jsonl"
    logged = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    window = 5 * c.train.log_every
    p = sum(near := [r["replaced_fraction"] for r in logged
                     if r["split"] == "train" and steps[-1] - window < r["step"] <= steps[-1]]) / len(near)
    assert float(rows[1][4]) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-3)
    assert 0 <= float(rows[1][5].strip(" |")) <= 1 and rows[-1][3] == "–"
    # the frozen-feature probe of every budget's encoder and of random weights, in percent
    probe = json.loads((tmp_path / "results.json").read_text())["probe"]
    assert sorted(probe) == sorted([f"{o}/{s}" for o, s in budget_rows] + ["scratch/0"])
    assert [float(r[-1].strip(" |")) for r in rows + [scratch]] == [
        pytest.approx(100 * probe[f"{r[0].strip('| ')}/{int(r[1])}"], abs=0.05) for r in rows + [scratch]]
    assert scratch[0] == "| scratch" and all(0 <= v <= 1 for v in probe.values())
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second call finds everything done and only rewrites the table
    assert run_study(c, str(tmp_path))["table"] == result["table"]


def test_missing_matplotlib_stops_the_study_before_any_work(shared_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # None makes the import fail
    with pytest.raises(SystemExit, match=r"needs matplotlib.*electra-jax\[study\]"):
        run_study(smoke_config(shared_data), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_regression_probe_task_is_refused_before_any_work(shared_data, tmp_path):
    c = smoke_config(shared_data)
    c.probe_task = "stsb"
    with pytest.raises(ConfigError, match="task='stsb'.*classification"):
        run_study(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_recipe_overrides_reach_the_pretraining_config_and_unknown_fields_are_refused(shared_data):
    c = smoke_config(shared_data)
    c.recipe.electra = (("model.embedding_sharing", "gdes"), ("train.learning_rate", 3e-4))
    c.recipe.mlm = ()
    electra, _ = pretrain_config(c, "electra", "/unused", 600)
    mlm, _ = pretrain_config(c, "mlm", "/unused", 600)
    assert (electra.model.embedding_sharing, electra.train.learning_rate) == ("gdes", 3e-4)
    assert (mlm.model.embedding_sharing, mlm.train.learning_rate) == ("tied", c.train.learning_rate)
    c.recipe.electra = (("train.learning_rat", 1.0),)
    with pytest.raises(ConfigError, match="override train.learning_rat: the config has no such field"):
        pretrain_config(c, "electra", "/unused", 600)


def test_a_search_row_keeps_the_meaning_it_was_measured_with(shared_data, tmp_path):
    """search.json is data: a candidate whose overrides changed since its row was measured is
    refused before any work, instead of being skipped as done."""
    c = smoke_config(shared_data)
    c.search.candidates = (("reference", "electra", (("train.learning_rate", 3e-4),)),)
    (tmp_path / "search.json").write_text(json.dumps({"reference": dict(objective="electra", overrides=[])}))
    with pytest.raises(SystemExit, match="search candidate 'reference'.*measured it as electra with \\[\\]"):
        run_search(c, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.json"]  # nothing prepared


def test_search_smoke_run(shared_data, tmp_path):
    c = smoke_config(shared_data)
    c.search.flops = 6e9  # about 10 steps each
    c.search.candidates = (("reference", "electra", ()),
                           ("shuffled", "electra", (("pretrain.shuffled_replacement_prob", 0.5),)),
                           ("mlm_reference", "mlm", ()))
    result = run_search(c, str(tmp_path))
    found = json.loads((tmp_path / "search.json").read_text())
    assert sorted(found) == ["mlm_reference", "random_weights", "reference", "shuffled"]
    saved = json.loads((tmp_path / "search" / "shuffled" / "config.json").read_text())
    assert saved["pretrain"]["shuffled_replacement_prob"] == 0.5
    assert 0 <= found.pop("random_weights")["probe"] <= 1
    for name, r in found.items():
        assert 0 <= r["probe"] <= 1 and r["flops"] == pytest.approx(6e9, rel=0.2)
        assert (r["objective"] == "mlm") == ("mlm_loss" in r["eval"])
    rows = result["table"].splitlines()[2:]
    # ranked by the AUC on the generator's replacements; the shuffled candidate shows its mixture's too
    aucs = [float(row.split(" | ")[3].split()[0]) for row in rows[:2]]
    assert aucs == sorted(aucs, reverse=True) and rows[2].startswith("| mlm_reference")
    shuffled = next(row for row in rows if row.startswith("| shuffled"))
    assert f"({found['shuffled']['eval']['discriminator_auc']:.3f} with shuffled)" in shuffled
    assert rows[3].startswith("| random weights") and len(rows) == 4
    trajectory = {row.split(" | ")[0][2:]: row for row in result["trajectories"].splitlines()[2:]}
    assert sorted(trajectory) == ["reference", "shuffled"]  # ELECTRA's candidates, one AUC per logged step
    assert (tmp_path / "search.md").read_text() == result["table"] + "\n\n" + result["trajectories"] + "\n"
    # search.json alone rebuilds both tables: a new machine resumes without the old run directories
    shutil.rmtree(tmp_path / "search")
    again = run_search(c, str(tmp_path))
    assert (again["table"], again["trajectories"]) == (result["table"], result["trajectories"])


def test_zero_shot_and_few_label_outputs(study_run):
    """The summary's layout: BLiMP at every budget with both ELECTRA scorers, the paired interval,
    random weights, the n-gram yardsticks, few-label scores at the last budget; dev and test apart."""
    c, result, tmp_path = study_run
    summary = json.loads((tmp_path / "study_summary.json").read_text())
    vocab = json.loads((tmp_path / "data" / "metadata.json").read_text())["vocab_size"]
    for objective in ("electra", "mlm"):
        config, step_flops = pretrain_config(c, objective, "/unused", vocab)
        assert [r["step"] for r in summary[objective]] == budget_steps(config)
        assert [r["flops"] for r in summary[objective]] == [pytest.approx(r["step"] * step_flops)
                                                            for r in summary[objective]]
    for row in summary["electra"] + summary["mlm"]:
        assert 0 <= row["blimp"] <= 100 and row["blimp_ci"][0] <= row["blimp"] <= row["blimp_ci"][1]
    assert summary["electra"][-1]["blimp_scorer"] in ("discriminator", "pll") and summary["mlm"][-1]["blimp_scorer"] == "pll"
    assert set(summary["electra"][0]["blimp_by_scorer"]) == {"discriminator", "pll"}
    for row in summary["electra"]:  # the paired interval holds the plain difference
        low, high = row["blimp_minus_mlm_ci"]
        assert low <= row["blimp_minus_mlm"] <= high
    for row in (summary["electra"][-1], summary["mlm"][-1], summary["random"][0]):
        mean, std = row["fewshot_24"]
        assert 0 <= mean <= 100 and std >= 0
    assert summary["electra"][0]["fewshot_24"] is None  # few-label runs at the last budget only
    assert [r["order"] for r in summary["ngram"]] == [1, 2]
    assert summary["evaluation"] == dict(split="test", paradigms=50, pairs=200, max_pairs_per_paradigm=4)
    results = json.loads((tmp_path / "results.json").read_text())
    dev = [k for k in results["blimp"] if k.endswith("/dev")]
    assert dev and all(len(results["blimp"][k]["paradigms"]) == 17 for k in dev)  # dev and test never mix
    tables = (tmp_path / "zero_shot.md").read_text()
    assert "| electra |" in tables and "| random |" in tables and "BLiMP field" in tables
    assert (tmp_path / "blimp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
