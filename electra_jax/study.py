"""The compute-matched study (paper Table 1 / Figure 4 at small scale): ELECTRA against masked-LM
pretraining of the same encoder for the same pretraining FLOPs, each budget's checkpoint scored
zero-shot on grammatical minimal pairs (BLiMP), fine-tuned with few labels, probed frozen, and
(optionally) fine-tuned on GLUE tasks with several seeds.

    electra-jax study --config configs/study/blimp_cpu.py --workdir W

W/data/                prepared corpus (shared by both objectives: same tokenizer, same data order)
W/pretrain/OBJECTIVE/  the two pretraining runs (checkpoints at every budget)
W/finetune/OBJECTIVE/STEP/TASK/   fine-tuning runs (summary.json per task); W/finetune/scratch/TASK/
                       the same encoder with random weights, the no-pretraining baseline
W/exports/OBJECTIVE/STEP/         each budget's checkpoint, exported (the start of its fine-tuning)
W/results.json         every score and the frozen-feature probes (electra_jax/probe.py); W/study.md the
                       tables; W/study.png GLUE score against FLOPs
W/random_exports/OBJECTIVE/SEED/  random-weight networks of each objective (the zero-shot baselines)
W/fewshot/OBJECTIVE/STEP/N/       few-label fine-tuning runs
W/study_summary.json   per objective and budget: FLOPs, BLiMP (test paradigms) with its interval and
                       scorer, few-label scores, ELECTRA minus masked LM; W/zero_shot.md its tables;
                       W/blimp.png BLiMP against FLOPs

Every stage is skipped when its output exists, so an interrupted study resumes where it stopped.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os

import numpy as np

from electra_jax import probe, zero_shot
from electra_jax.config import apply_overrides, default_config
from electra_jax.data.prepare import PrepareOptions, load_data_tokenizer, load_metadata, prepare
from electra_jax.export import export, export_random
from electra_jax.finetune.config import finetune_config as base_finetune_config
from electra_jax.finetune.run import finetune, mean_std
from electra_jax.flops import train_flops_per_step
from electra_jax.metrics_writer import read_metrics
from electra_jax.ngram_baseline import NgramLM, NgramScorer, split_ids
from electra_jax.objective import binary_entropy
from electra_jax.train import pretrain

OBJECTIVES = ("electra", "mlm")
# The GLUE score of each task, as the GLUE leaderboard averages it.
TASK_SCORE = {"cola": ("mcc",), "sst2": ("accuracy",), "mrpc": ("accuracy", "f1"), "stsb": ("pearson", "spearman"),
              "qnli": ("accuracy",), "rte": ("accuracy",), "wnli": ("accuracy",)}


def save_results(results: dict, path: str) -> None:
    """Write a results file (search.json, results.json) after every finished stage: the resume point."""
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def recipe(study, objective: str) -> tuple:
    """The study config's overrides for one objective (its recipe); () in configs written before."""
    return tuple(study.get("recipe", {}).get(objective, ()))


def pretrain_config(study, objective: str, data_dir: str, vocab_size: int, overrides=None, flops_budget=None,
                    budgets=None):
    """The pretraining config of one objective (its recipe, or `overrides` instead), with as many
    steps as the FLOP budget buys and a checkpoint at each of `budgets` equal parts of it."""
    budgets = budgets or study.budgets
    c = default_config(study.size)
    c.objective = objective
    c.model.update(study.model.to_dict())
    c.data.update(dir=data_dir, seq_length=study.seq_length)
    c.train.update(study.train.to_dict())
    c.seed = study.seed
    apply_overrides(c, recipe(study, objective) if overrides is None else overrides)
    flops = train_flops_per_step(c, vocab_size)["total"]
    steps = max(budgets, int(round((flops_budget or study.pretrain_flops) / flops)))
    # keep every checkpoint: a preemption adds one, and it must not push a budget's out
    c.train.update(num_steps=steps, checkpoint_every=math.ceil(steps / budgets), keep_checkpoints=0,
                   warmup_steps=int(study.warmup_fraction * steps), eval_every=steps)
    return c, flops


def budget_steps(config) -> list[int]:
    """The steps whose checkpoints are the FLOP budgets (not the ones a preemption saved)."""
    t = config.train
    return sorted({min(k * t.checkpoint_every, t.num_steps) for k in range(1, t.num_steps // t.checkpoint_every + 2)})


def finetune_config(study, task: str, init: str):
    c = base_finetune_config(task)
    c.init, c.num_seeds, c.seed = init, study.seeds, study.seed
    c.max_seq_length = study.finetune.max_seq_length
    c.data.update(dir=study.glue_dir, max_train_examples=study.finetune.max_train_examples,
                  max_eval_examples=study.finetune.max_eval_examples)
    c.train.update(epochs=study.finetune.epochs, batch_size=study.finetune.batch_size)
    return c


def task_score(summary: dict, task: str) -> tuple[float, float, list[float]]:
    """(mean, std, per-seed) of the task's GLUE score in percent (the mean of its metrics)."""
    per_seed = np.mean([summary["metrics"][m]["values"] for m in TASK_SCORE[task]], axis=0) * 100
    return (*mean_std(per_seed), per_seed.tolist())


def study_probe_task(study) -> str:
    """The frozen-feature probe's task; '' (no probe) for study configs written before it existed."""
    return study.get("probe_task", "")


def check_study(study) -> None:
    """What would otherwise fail after the pretraining: the plot's and the probe's libraries, the probe task."""
    needs = ["matplotlib"] + (["sklearn"] if study_probe_task(study) else [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"electra-jax study needs {', '.join(missing)}, which is not installed: "
                         f"pip install 'electra-jax[study]'")
    if study_probe_task(study):
        probe.classification_task(finetune_config(study, study_probe_task(study), ""))
    if study.get("minimal_pairs"):  # a missing or malformed suite fails here, not after the pretraining
        zero_shot.read_minimal_pairs([study.minimal_pairs.data])


def study_data(study, workdir: str) -> dict:
    """The study's corpus, tokenized and packed once in WORKDIR/data (or the data `prepared_data`
    names, prepared elsewhere: a machine without the raw corpus); its metadata."""
    if study.get("prepared_data"):
        return load_metadata(study.prepared_data)
    data_dir = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(data_dir, "metadata.json")):
        prepare(PrepareOptions(inputs=list(study.corpus), output_dir=data_dir, vocab_size=study.vocab_size,
                               seq_length=study.seq_length, eval_fraction=0.01))
    return load_metadata(data_dir)


def run_search(study, workdir: str) -> dict:
    """The recipe search: a short pretraining run of every candidate in `study.search.candidates`
    at the study's scale (same data, model and FLOPs each), read on held-out pretraining signals
    (the discriminator's AUC and information gain, the masked-LM loss) and the frozen-feature
    probe. No fine-tuning and no dev-set score: the study's comparison is run once, afterwards.

    WORKDIR/search/NAME/ the runs, WORKDIR/search.json every number, WORKDIR/search.md the table."""
    check_study(study)
    workdir = os.path.abspath(workdir)
    results_file = os.path.join(workdir, "search.json")
    results = {}
    if os.path.exists(results_file):
        with open(results_file) as f:
            results = json.load(f)
    for name, objective, overrides in study.search.candidates:  # a measured name keeps its meaning
        measured = (results[name]["objective"], results[name]["overrides"]) if name in results else None
        if measured not in (None, (objective, [list(o) for o in overrides])):
            raise SystemExit(f"search candidate {name!r}: {results_file} measured it as {measured[0]} with "
                             f"{measured[1]}; the config now says {objective} with {[list(o) for o in overrides]}. "
                             f"Name the new candidate differently, or delete its row to measure it again")
    meta = study_data(study, workdir)
    for name, objective, overrides in study.search.candidates:
        if name in results:
            continue
        config, step_flops = pretrain_config(study, objective, meta["dir"], meta["vocab_size"], overrides=overrides,
                                             flops_budget=study.search.flops, budgets=1)
        run_dir = os.path.join(workdir, "search", name)
        logging.info("search %s (%s): %d steps, %s", name, objective, config.train.num_steps, overrides)
        outcome = pretrain(config, run_dir)
        if outcome["preempted"]:
            raise SystemExit("the search was stopped; rerun the same command to resume it")
        export_dir = os.path.join(workdir, "search_exports", name)
        if not os.path.exists(export_dir):
            export(run_dir, export_dir)
        accuracy = None
        if study_probe_task(study):
            accuracy = probe.frozen_probe_accuracy(finetune_config(study, study_probe_task(study), export_dir))
        # held-out metrics; a corpus whose held-out split is smaller than one batch has none, and
        # then the last training batches stand in (marked in the table)
        results[name] = dict(objective=objective, overrides=[list(o) for o in overrides],
                             steps=config.train.num_steps, flops=config.train.num_steps * step_flops,
                             eval=outcome["eval"] or outcome["train"], held_out=bool(outcome["eval"]),
                             probe=accuracy, trajectory=training_auc_by_step(run_dir, objective))
        save_results(results, results_file)
    if study_probe_task(study) and "random_weights" not in results and results:
        # the bar every pretraining must clear: the same architecture with random weights
        export_dir = os.path.join(workdir, "search_exports", next(iter(results)))
        results["random_weights"] = dict(objective="none", overrides=[], steps=0, flops=0.0, eval={},
                                         probe=probe.frozen_probe_accuracy(
                                             finetune_config(study, study_probe_task(study), export_dir), True))
        save_results(results, results_file)
    table = search_table(results)
    trajectories = search_trajectory_table(results, study.train.log_every)
    with open(os.path.join(workdir, "search.md"), "w") as f:
        f.write(table + "\n\n" + trajectories + "\n")
    return dict(results=results, table=table, trajectories=trajectories, workdir=workdir)


def generator_auc(metrics: dict) -> float:
    """The discriminator's AUC over the generator's replacements: the task every candidate shares
    (a candidate with shuffled replacements logs it apart from its mixture's)."""
    return metrics.get("discriminator_auc_generator_replacements", metrics["discriminator_auc"])


def search_table(results: dict) -> str:
    """One row per candidate, ELECTRA's ranked by held-out AUC on the generator's replacements (the
    task every candidate shares; a candidate with shuffled replacements also has its own mixture's
    AUC), then the masked-LM ones by held-out loss."""
    def recipe_text(overrides):  # each field once, at the value the last override gives it
        return ", ".join(f"{k}={v}" for k, v in dict(overrides).items()) or "reference"

    def named(name):
        return name if results[name].get("held_out", True) else f"{name} (training batches)"

    def probed(r):
        return f"{100 * r['probe']:.1f}" if r["probe"] is not None else "–"

    def auc_text(e):
        mixture = f" ({e['discriminator_auc']:.3f} with shuffled)" if "discriminator_auc_generator_replacements" in e else ""
        return f"{generator_auc(e):.3f}{mixture}"
    lines = ["| candidate | recipe | steps | held-out AUC | information gain (nats) | recall | "
             "masked-LM accuracy | masked-LM loss | frozen-feature probe |", "|---|---|---|---|---|---|---|---|---|"]
    electra = sorted((n for n, r in results.items() if r["objective"] == "electra"),
                     key=lambda n: -generator_auc(results[n]["eval"]))
    mlm = sorted((n for n, r in results.items() if r["objective"] == "mlm"), key=lambda n: results[n]["eval"]["mlm_loss"])
    for name in electra:
        r, e = results[name], results[name]["eval"]
        lines.append(f"| {named(name)} | {recipe_text(r['overrides'])} | {r['steps']} | {auc_text(e)} | "
                     f"{e['discriminator_information_gain']:.4f} | {e['discriminator_recall']:.3f} | "
                     f"{e['generator_accuracy']:.3f} (generator) | {e['generator_loss']:.3f} | {probed(r)} |")
    for name in mlm:
        r, e = results[name], results[name]["eval"]
        lines.append(f"| {named(name)} | {recipe_text(r['overrides'])} | {r['steps']} | – | – | – | {e['mlm_accuracy']:.3f} | "
                     f"{e['mlm_loss']:.3f} | {probed(r)} |")
    if "random_weights" in results:
        lines.append(f"| random weights | no pretraining | 0 | – | – | – | – | – | {probed(results['random_weights'])} |")
    return "\n".join(lines)


def training_auc_by_step(run_dir: str, objective: str) -> dict[str, float]:
    """The discriminator's AUC at each logged training step (the generator's replacements alone
    where some were shuffled), kept in search.json so the table outlives the run directories."""
    if objective != "electra":
        return {}
    return {str(r["step"]): generator_auc(r) for r in read_metrics(run_dir, "train")}


def search_trajectory_table(results: dict, every: int) -> str:
    """How each ELECTRA candidate's discriminator AUC moved during its run (training batches, at the
    temperature of that step), from search.json; candidates searched before it kept them are left out."""
    runs = {name: {int(step): auc for step, auc in r["trajectory"].items()}
            for name, r in results.items() if r["objective"] == "electra" and r.get("trajectory")}
    last = max((step for auc in runs.values() for step in auc), default=0)
    steps = list(range(every, last + 1, every))
    lines = ["| candidate | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, auc in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{auc[s]:.3f}" if s in auc else "–" for s in steps) + " |")
    return "\n".join(lines)


def run_study(study, workdir: str) -> dict:
    check_study(study)
    workdir = os.path.abspath(workdir)
    meta = study_data(study, workdir)
    data_dir = meta["dir"]
    results_file = os.path.join(workdir, "results.json")
    results = {"runs": {}}
    if os.path.exists(results_file):
        with open(results_file) as f:
            results = json.load(f)

    def finetune_once(objective, step, flops, task, init, from_scratch=False):
        key = f"{objective}/{step}/{task}"
        if key in results["runs"]:
            return
        c = finetune_config(study, task, init)
        c.from_scratch = from_scratch
        summary = finetune(c, os.path.join(workdir, "finetune", objective, str(step), task))
        mean, std, per_seed = task_score(summary, task)
        results["runs"][key] = dict(objective=objective, step=step, pretrain_flops=flops, task=task, mean=mean,
                                    std=std, per_seed=per_seed)
        save_results(results, results_file)

    budgets, step_flops_by_objective = {}, {}
    for objective in OBJECTIVES:
        config, step_flops = pretrain_config(study, objective, data_dir, meta["vocab_size"])
        step_flops_by_objective[objective] = step_flops
        run_dir = os.path.join(workdir, "pretrain", objective)
        logging.info("%s: %d steps of %.3g FLOPs", objective, config.train.num_steps, step_flops)
        if pretrain(config, run_dir)["preempted"]:
            raise SystemExit(f"pretraining {objective} was stopped; rerun the same command to resume the study")
        budgets[objective] = budget_steps(config)
        for step in budgets[objective]:
            export_dir = os.path.join(workdir, "exports", objective, str(step))
            if not os.path.exists(export_dir):
                export(run_dir, export_dir, step=step)
            for task in study.tasks:
                finetune_once(objective, step, step * step_flops, task, export_dir)
    for task in study.tasks:  # the no-pretraining baseline: the same encoder and tokenizer, random weights
        finetune_once("scratch", 0, 0.0, task, final_export(workdir, budgets), from_scratch=True)
    if study_probe_task(study):
        probe_all(study, workdir, budgets, results, results_file)
    if study.get("minimal_pairs"):
        evaluate_zero_shot(study, workdir, meta, budgets, results, results_file)
    if study.get("fewshot"):
        fewshot_all(study, workdir, budgets, results, results_file)
    zero_shot_tables = ""
    if study.get("minimal_pairs"):
        summary = study_summary(study, results, budgets, step_flops_by_objective)
        with open(os.path.join(workdir, "study_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        zero_shot_tables = zero_shot_report(summary, results)
        with open(os.path.join(workdir, "zero_shot.md"), "w") as f:
            f.write(zero_shot_tables + "\n")
        plot_zero_shot(summary, results, os.path.join(workdir, "blimp.png"))
    table = markdown_table(results, study.tasks) if study.tasks else zero_shot_tables
    pretraining = pretraining_table(workdir, budgets, window=5 * study.train.log_every, probe=results.get("probe", {}))
    with open(os.path.join(workdir, "study.md"), "w") as f:
        f.write(table + "\n\nWhat each objective had learned at each budget (training batches, mean of the logged "
                "steps in the last " + str(5 * study.train.log_every) + ")" + probe_caption(study) + ":\n\n"
                + pretraining + "\n")
    if study.tasks:
        plot(results, study.tasks, os.path.join(workdir, "study.png"))
    return dict(results=results, table=table, pretraining=pretraining, workdir=workdir)


def probe_all(study, workdir: str, budgets: dict, results: dict, results_file: str) -> None:
    """The frozen-feature probe of every budget's encoder and of random weights, once each."""
    accuracies = results.setdefault("probe", {})
    encoders = [(f"{o}/{step}", os.path.join(workdir, "exports", o, str(step)), False)
                for o, steps in budgets.items() for step in steps]
    encoders.append(("scratch/0", encoders[-1][1], True))
    for key, init, from_scratch in encoders:
        if key not in accuracies:
            accuracies[key] = probe.frozen_probe_accuracy(finetune_config(study, study_probe_task(study), init), from_scratch)
            save_results(results, results_file)


def _points(results: dict, tasks) -> dict:
    """{(objective, step): {task: run, ..., "flops": F}} for the checkpoints with every task done."""
    points = {}
    for run in results["runs"].values():
        points.setdefault((run["objective"], run["step"]), {"flops": run["pretrain_flops"]})[run["task"]] = run
    return {k: v for k, v in sorted(points.items()) if all(t in v for t in tasks)}


def glue_average(point: dict, tasks) -> tuple[float, float]:
    """Mean over tasks of the task scores; its std from the per-seed averages over tasks."""
    return mean_std(np.mean([point[t]["per_seed"] for t in tasks], axis=0))


def markdown_table(results: dict, tasks) -> str:
    header = "| objective | pretraining FLOPs | step | " + " | ".join(tasks) + " | average |"
    lines = [header, "|" + "---|" * (len(tasks) + 4)]
    for (objective, step), point in _points(results, tasks).items():
        cells = [f"{point[t]['mean']:.1f} ± {point[t]['std']:.1f}" for t in tasks]
        avg, avg_std = glue_average(point, tasks)
        lines.append(f"| {objective} | {point['flops']:.2e} | {step} | " + " | ".join(cells)
                     + f" | **{avg:.1f}** ± {avg_std:.1f} |")
    return "\n".join(lines)


def probe_caption(study) -> str:
    if not study_probe_task(study):
        return ""
    return (f", and the {study_probe_task(study)} dev accuracy (%) of a logistic regression on the encoder's frozen, "
            f"mean-pooled last hidden states")


def pretraining_table(workdir: str, budgets: dict, window: int, probe: dict) -> str:
    """Per objective and budget step: the masked-LM accuracy (ELECTRA: its generator's); for ELECTRA,
    the discriminator's loss beside the class-prior loss, and its recall of replaced tokens; and the
    frozen-feature probe's accuracy when there is one (with random weights in the last row)."""

    def probed(key):
        return f"{100 * probe[key]:.1f}" if key in probe else "–"
    lines = ["| objective | step | masked-LM accuracy | discriminator loss | class-prior loss | discriminator recall "
             "| frozen-feature probe |", "|---|---|---|---|---|---|---|"]
    for objective, steps in budgets.items():
        rows = read_metrics(os.path.join(workdir, "pretrain", objective))
        for step in steps:
            near = [r for r in rows if step - window < r["step"] <= step]
            if not near:
                continue
            mean = {k: float(np.mean([r[k] for r in near])) for k in near[0] if k != "split"}
            if objective == "electra":
                lines.append(f"| {objective} | {step} | {mean['generator_accuracy']:.3f} | "
                             f"{mean['discriminator_loss']:.3f} | {float(binary_entropy(mean['replaced_fraction'])):.3f} | "
                             f"{mean['discriminator_recall']:.3f} | {probed(f'{objective}/{step}')} |")
            else:
                lines.append(f"| {objective} | {step} | {mean['mlm_accuracy']:.3f} | – | – | – | "
                             f"{probed(f'{objective}/{step}')} |")
    if "scratch/0" in probe:
        lines.append(f"| scratch | 0 | – | – | – | – | {probed('scratch/0')} |")
    return "\n".join(lines)


def plot(results: dict, tasks, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    points = _points(results, tasks)
    pretrained = [p["flops"] for (o, _), p in points.items() if o in OBJECTIVES]
    one_budget = bool(pretrained) and max(pretrained) < 2 * min(pretrained)  # a FLOP axis would be one point
    for i, objective in enumerate(OBJECTIVES):
        rows = [(p["flops"], *glue_average(p, tasks)) for (o, _), p in points.items() if o == objective]
        if rows:
            x, y, err = map(np.array, zip(*rows))
            ax.errorbar(np.full(len(x), i) if one_budget else x, y, yerr=err, marker="o", capsize=3,
                        label={"electra": "ELECTRA", "mlm": "masked LM (BERT)"}[objective])
    scratch = [p for (o, _), p in points.items() if o == "scratch"]
    if scratch:
        ax.axhline(glue_average(scratch[0], tasks)[0], color="gray", linestyle="--", label="no pretraining")
    if one_budget:
        ax.set_xticks(range(len(OBJECTIVES)), [f"{o}\n{min(pretrained):.2g} FLOPs" for o in OBJECTIVES])
        ax.set_xlim(-0.5, len(OBJECTIVES) - 0.5)
    else:
        ax.set_xscale("log")
        ax.set_xlabel("pretraining FLOPs")
    ax.set_ylabel(f"dev score, mean of {', '.join(tasks)}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- zero-shot minimal pairs (BLiMP) and few-label fine-tuning --------------------------------------------

SCORERS_OF = {"electra": ("discriminator", "pll"), "mlm": ("pll",)}


def final_export(workdir: str, budgets: dict) -> str:
    """The last budget's export of the first objective: the architecture and tokenizer the
    random-weight baselines take."""
    objective = next(iter(budgets))
    return os.path.join(workdir, "exports", objective, str(budgets[objective][-1]))




def evaluate_zero_shot(study, workdir: str, meta: dict, budgets: dict, results: dict, results_file: str) -> None:
    """BLiMP (or another minimal-pair suite) scored by every encoder with each scorer it has, on
    the test paradigms at every budget; at the last budget also on the dev paradigms (which pick
    ELECTRA's reported scorer); random weights of both objectives (several initialisations); and
    the n-gram yardsticks counted from the study's own training data."""
    mp = study.minimal_pairs
    paradigms = zero_shot.read_minimal_pairs([mp.data])
    splits = {split: zero_shot.blimp_split(paradigms, split) for split in ("dev", "test")}
    scored = results.setdefault("blimp", {})

    def score(key, split, make_scorer):
        if f"{key}/{split}" in scored:
            return
        logging.info("minimal pairs: %s on the %s paradigms", key, split)
        r = zero_shot.evaluate(splits[split], make_scorer(), mp.max_pairs)
        r["passes"] = {name: v.tolist() for name, v in r["passes"].items()}
        scored[f"{key}/{split}"] = r
        save_results(results, results_file)

    for objective, steps in budgets.items():
        for step in steps:
            export_dir = os.path.join(workdir, "exports", objective, str(step))
            for scorer in SCORERS_OF[objective]:
                for split in ("test", "dev") if step == steps[-1] else ("test",):
                    score(f"{objective}/{step}/{scorer}", split,
                          lambda: zero_shot.load_scorer(export_dir, scorer, mp.batch_rows))
    for objective in budgets:
        for seed in mp.random_seeds:
            export_dir = os.path.join(workdir, "random_exports", objective, str(seed))
            if not os.path.exists(export_dir):
                config, _ = pretrain_config(study, objective, meta["dir"], meta["vocab_size"])
                export_random(config, export_dir, seed)
            for scorer in SCORERS_OF[objective]:
                for split in ("test", "dev"):
                    score(f"random_{objective}/{seed}/{scorer}", split,
                          lambda: zero_shot.load_scorer(export_dir, scorer, mp.batch_rows))
    if any(f"ngram/{order}/test" not in scored for order in mp.ngram_orders):
        train_ids, tokenizer = split_ids(meta, "train"), load_data_tokenizer(meta)
        for order in mp.ngram_orders:
            lm = NgramLM(train_ids, meta["vocab_size"], meta["special_ids"]["pad"], order)
            for split in ("test", "dev"):
                score(f"ngram/{order}", split, lambda: NgramScorer(lm, tokenizer))


def fewshot_all(study, workdir: str, budgets: dict, results: dict, results_file: str) -> None:
    """Few-label fine-tuning of each objective's last-budget encoder and of random weights: the
    task's first-seeded random subset of each size, several seeds; the score is the last epoch's
    dev accuracy (no epoch is picked on the dev set)."""
    fs = study.fewshot
    done = results.setdefault("fewshot", {})
    encoders = [(objective, steps[-1], os.path.join(workdir, "exports", objective, str(steps[-1])), False)
                for objective, steps in budgets.items()]
    encoders.append(("random", 0, final_export(workdir, budgets), True))
    for objective, step, init, from_scratch in encoders:
        for size, epochs in zip(fs.sizes, fs.epochs):
            key = f"{objective}/{step}/{size}"
            if key in done:
                continue
            c = finetune_config(study, fs.task, init)
            c.from_scratch, c.num_seeds = from_scratch, fs.seeds
            c.data.update(max_train_examples=size, max_eval_examples=0)
            c.train.update(epochs=epochs, batch_size=fs.batch_size)
            summary = finetune(c, os.path.join(workdir, "fewshot", objective, str(step), str(size)))
            per_seed = [100 * r["final_dev"]["accuracy"] for r in summary["runs"]]
            mean, std = mean_std(per_seed)
            done[key] = dict(objective=objective, step=step, size=size, per_seed=per_seed, mean=mean, std=std)
            save_results(results, results_file)


def _passes(entry: dict) -> dict:
    return {name: np.asarray(v) for name, v in entry["passes"].items()}


def chosen_scorer(results: dict, objective: str, last_step: int) -> str:
    """The objective's reported scorer: the one with the higher accuracy on the dev paradigms at
    the last budget (ELECTRA has two; masked LM only pll)."""
    dev = {scorer: results["blimp"][f"{objective}/{last_step}/{scorer}/dev"]["overall"]
           for scorer in SCORERS_OF[objective]}
    return max(dev, key=dev.get)


def study_summary(study, results: dict, budgets: dict, step_flops: dict) -> dict:
    """{"electra": [row per budget], "mlm": [...], "random": [row], "ngram": [row per order]}: FLOPs,
    BLiMP test accuracy (%) with its 95% interval and scorer, every scorer's accuracy, the few-label
    means and stds at the last budget, and for ELECTRA the paired 95% interval of ELECTRA minus masked
    LM at the same budget (the same pairs resampled for both)."""
    blimp = results["blimp"]
    scorers = {o: chosen_scorer(results, o, steps[-1]) for o, steps in budgets.items()}
    summary = {}
    for objective, steps in budgets.items():
        rows = []
        for k, step in enumerate(steps):
            entry = blimp[f"{objective}/{step}/{scorers[objective]}/test"]
            row = dict(step=step, flops=step * step_flops[objective], blimp=entry["overall"], blimp_ci=entry["overall_ci"],
                       blimp_scorer=scorers[objective],
                       blimp_by_scorer={s: blimp[f"{objective}/{step}/{s}/test"]["overall"] for s in SCORERS_OF[objective]})
            for size in study.fewshot.sizes if study.get("fewshot") else ():
                shot = results["fewshot"].get(f"{objective}/{step}/{size}")
                row[f"fewshot_{size}"] = [shot["mean"], shot["std"]] if shot else None
            if objective == "electra" and "mlm" in budgets and k < len(budgets["mlm"]):
                mlm = blimp[f"mlm/{budgets['mlm'][k]}/{scorers['mlm']}/test"]
                row["blimp_minus_mlm"] = entry["overall"] - mlm["overall"]
                row["blimp_minus_mlm_ci"] = zero_shot.paired_difference_ci(_passes(entry), _passes(mlm))
            rows.append(row)
        summary[objective] = rows
    random_runs = {s: [blimp[f"random_{o}/{seed}/{s}/test"] for o in budgets if s in SCORERS_OF[o]
                       for seed in study.minimal_pairs.random_seeds] for s in ("discriminator", "pll")}
    random_row = dict(step=0, flops=0.0, blimp_scorer="mean of " + ", ".join(random_runs), blimp_by_scorer={
        s: float(np.mean([r["overall"] for r in runs])) for s, runs in random_runs.items()})
    everything = [_passes(r) for runs in random_runs.values() for r in runs]
    random_row.update(blimp=float(np.mean(list(random_row["blimp_by_scorer"].values()))),
                      blimp_ci=zero_shot.mean_ci(everything))
    for size in study.fewshot.sizes if study.get("fewshot") else ():
        shot = results["fewshot"].get(f"random/0/{size}")
        random_row[f"fewshot_{size}"] = [shot["mean"], shot["std"]] if shot else None
    summary["random"] = [random_row]
    summary["ngram"] = [dict(order=order, blimp=blimp[f"ngram/{order}/test"]["overall"],
                             blimp_ci=blimp[f"ngram/{order}/test"]["overall_ci"], blimp_scorer=f"{order}-gram")
                        for order in study.minimal_pairs.ngram_orders]
    test = blimp[f"{next(iter(budgets))}/{budgets[next(iter(budgets))][-1]}/{scorers[next(iter(budgets))]}/test"]
    summary["evaluation"] = dict(split="test", paradigms=len(test["paradigms"]), pairs=test["pairs"],
                                 max_pairs_per_paradigm=study.minimal_pairs.max_pairs)
    return summary


def zero_shot_report(summary: dict, results: dict) -> str:
    """The BLiMP learning curve (test paradigms) with the few-label scores, and BLiMP by field."""
    sizes = sorted(int(k.split("_")[1]) for k in summary["random"][0] if k.startswith("fewshot_"))
    lines = ["| model | step | training FLOPs | BLiMP test % (scorer) | 95% CI | other scorer | ELECTRA - masked LM, 95% CI | "
             + " | ".join(f"SST-2, {n} labels" for n in sizes) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(sizes)]

    def shots(row):
        return " | ".join(f"{row[f'fewshot_{n}'][0]:.1f} ± {row[f'fewshot_{n}'][1]:.1f}" if row.get(f"fewshot_{n}") else "–"
                          for n in sizes)
    for objective in ("electra", "mlm", "random"):
        for row in summary.get(objective, []):
            other = ", ".join(f"{s} {v:.1f}" for s, v in row["blimp_by_scorer"].items() if s != row["blimp_scorer"])
            diff = (f"{row['blimp_minus_mlm']:+.1f} [{row['blimp_minus_mlm_ci'][0]:+.1f}, {row['blimp_minus_mlm_ci'][1]:+.1f}]"
                    if "blimp_minus_mlm_ci" in row else "–")
            lines.append(f"| {objective} | {row['step']} | {row['flops']:.2e} | {row['blimp']:.1f} ({row['blimp_scorer']}) | "
                         f"[{row['blimp_ci'][0]:.1f}, {row['blimp_ci'][1]:.1f}] | {other or '–'} | {diff} | {shots(row)} |")
    for row in summary["ngram"]:
        lines.append(f"| {row['order']}-gram on the study's corpus | – | – | {row['blimp']:.1f} | "
                     f"[{row['blimp_ci'][0]:.1f}, {row['blimp_ci'][1]:.1f}] | – | – | " + " | ".join("–" for _ in sizes) + " |")
    # by BLiMP field, at the last budget with each model's reported scorer
    columns = {f"{o} ({rows[-1]['blimp_scorer']})": results["blimp"][f"{o}/{rows[-1]['step']}/{rows[-1]['blimp_scorer']}/test"]
               for o, rows in summary.items() if o in OBJECTIVES}
    best_ngram = max(summary["ngram"], key=lambda r: r["blimp"])["order"]
    columns[f"{best_ngram}-gram"] = results["blimp"][f"ngram/{best_ngram}/test"]
    fields = sorted({f for r in columns.values() for f in r["fields"]})
    lines += ["", "| BLiMP field (test paradigms) | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for field in fields:
        lines.append(f"| {field} | " + " | ".join(f"{r['fields'].get(field, float('nan')):.1f}" for r in columns.values()) + " |")
    return "\n".join(lines)


def plot_zero_shot(summary: dict, results: dict, path: str) -> None:
    """BLiMP test accuracy against training FLOPs, per objective and scorer; random weights and the
    n-gram yardsticks as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for objective in OBJECTIVES:
        for scorer in SCORERS_OF[objective]:
            rows = summary.get(objective, [])
            if rows:
                ax.plot([r["flops"] for r in rows], [r["blimp_by_scorer"][scorer] for r in rows], marker="o",
                        label=f"{ {'electra': 'ELECTRA', 'mlm': 'masked LM'}[objective]}, {scorer}")
    ax.axhline(summary["random"][0]["blimp"], color="gray", linestyle="--", label="random weights")
    for row, style in zip(summary["ngram"], (":", "-.", (0, (5, 1)))):
        ax.axhline(row["blimp"], color="black", linestyle=style, linewidth=0.8, label=f"{row['order']}-gram")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("BLiMP accuracy, test paradigms (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
