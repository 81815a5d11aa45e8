"""The `electra-jax` command: demo, prepare, pretrain, export, finetune, predict, convert."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import platform
import sys

USAGE = """usage: electra-jax COMMAND [options]

commands:
  demo       build a corpus from the Python standard library's docstrings, train a tokenizer,
             prepare the data and pretrain a tiny ELECTRA on this machine (a few minutes on CPU)
  prepare    tokenize and pack text files or a tfds dataset into ArrayRecord shards
  pretrain   pretrain from a config: --config configs/electra_small.py --workdir DIR
             [--config.data.dir=PREPARED] [--config.a.b=value ...]; resumes from DIR's checkpoints
  export     the pretrained networks alone, for fine-tuning: --workdir DIR --out EXPORT_DIR
  finetune   fine-tune on GLUE, SQuAD, CoNLL tagging or your own labelled text:
             --config configs/finetune/glue.py --config.task=sst2 --config.init=PATH --workdir DIR
  bench      step --config C [--reference] [--tasks] [--profile DIR]: step time, tokens/s, FLOPs, MFU,
             memory, compile time (and the PyTorch reference; the fine-tuning step and inference; the
             time by kind of op); data --config C --config.data.dir=D: the input pipeline's rate;
             finetune --config configs/finetune/glue.py --config.init=HF_DIR --workdir DIR [--reference]:
             dev scores and examples/s, beside transformers + torch on the same data and settings;
             plan --config C --accelerator v5p --chips 64: memory, step time, days on accelerators
  study      ELECTRA vs masked-LM pretraining at equal FLOPs, fine-tuned on GLUE tasks:
             --config configs/study/small_cpu.py --workdir DIR
  search     the recipe search behind a study: short pretraining runs of candidate recipes at the
             study's scale, ranked on held-out AUC, information gain and a frozen-feature probe
  eval       minimal-pairs --ckpt C --data PATH [--data PATH ...] [--scorer auto|discriminator|pll]
             [--json OUT]: zero-shot grammatical minimal pairs (BLiMP): accuracy per paradigm,
             phenomenon and overall with a 95% interval
  predict    fill-mask --ckpt C "The capital of France is [MASK]."  |  detect --ckpt C "some text"
  convert    from-hf --discriminator D [--generator G] --out EXPORT  |  to-hf --ckpt EXPORT --out DIR

`electra-jax COMMAND --help` for the options of one command.
"""

METRICS_HELP = """\
What the metrics mean:
  loss                     generator_loss + {discriminator_weight:g} * discriminator_loss (the joint objective)
  generator_loss/accuracy  masked-LM cross-entropy and top-1 accuracy of the small generator at the
                           masked positions (how plausible its replacements are)
  discriminator_loss       sigmoid cross-entropy of 'was this token replaced?' over all real tokens
  discriminator_accuracy   share of tokens classified right; compare with 1 - replaced_fraction,
                           the accuracy of always answering 'original'
  discriminator_precision  of the tokens flagged as replaced, the share that were
  discriminator_recall     of the replaced tokens, the share that were flagged
  discriminator_auc        probability that a replaced token scores above an original one (ROC AUC;
                           0.5 is chance): it rises before any token crosses the decision threshold
  discriminator_information_gain
                           nats: class-prior loss (the entropy of the replaced fraction) minus the
                           discriminator loss; 0 means it knows only how many tokens were replaced
  replaced_fraction        share of tokens the generator changed (it falls as the generator improves,
                           because a correct guess counts as original)
  temperature, discriminator_weight
                           the generator's sampling temperature and the discriminator loss weight at
                           this step (they change only under a curriculum; evaluation uses the final ones)"""


def discriminator_verdict(metrics: dict) -> str:
    """One line for a newcomer: did the discriminator learn to spot replaced tokens?"""
    auc, gain = metrics["discriminator_auc"], metrics["discriminator_information_gain"]
    recall, precision = metrics["discriminator_recall"], metrics["discriminator_precision"]
    facts = (f"held-out AUC {auc:.2f} (0.50 is chance), information gain {gain:.3f} nats, "
             f"it flags {recall:.0%} of the replaced tokens at {precision:.0%} precision")
    if auc >= 0.75 and gain > 0.02:
        return f"The discriminator learned to spot replaced tokens: {facts}."
    if auc >= 0.6:
        return f"The discriminator is starting to spot replaced tokens: {facts}."
    return f"The discriminator has not learned yet (it is close to guessing): {facts}."


def _prepare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="electra-jax prepare", description="Tokenize and pack a corpus.")
    p.add_argument("--input", action="append", default=[], help="text/.jsonl file, directory or glob (repeatable)")
    p.add_argument("--tfds", default="", help="a prepared tfds dataset name (ArrayRecord format), e.g. wikipedia/20230601.en")
    p.add_argument("--tfds_split", default="train")
    p.add_argument("--tfds_data_dir", default=None)
    p.add_argument("--text_key", default="text", help="the text's jsonl field, CSV/TSV column or tfds feature")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--tokenizer", default="", help="reuse a SentencePiece .model, a BERT WordPiece vocab.txt or a "
                   "HuggingFace model directory instead of training a SentencePiece model")
    p.add_argument("--cased", action="store_true", help="WordPiece: do not lowercase (cased vocabularies)")
    p.add_argument("--vocab_size", type=int, default=30522)
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--eval_fraction", type=float, default=0.01)
    p.add_argument("--num_workers", type=int, default=0, help="tokenizer processes (0: all cores)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--overwrite", action="store_true")
    return p


def cmd_prepare(argv: list[str]) -> dict:
    from electra_jax.data.prepare import PrepareOptions, padding_warning, prepare
    a = _prepare_parser().parse_args(argv)
    meta = prepare(PrepareOptions(
        inputs=a.input, tfds_name=a.tfds, tfds_split=a.tfds_split, tfds_data_dir=a.tfds_data_dir,
        text_key=a.text_key, output_dir=a.output_dir, tokenizer=a.tokenizer, vocab_size=a.vocab_size,
        lowercase=False if a.cased else None,
        seq_length=a.seq_length, eval_fraction=a.eval_fraction, num_workers=a.num_workers, seed=a.seed,
        overwrite=a.overwrite))
    stats = meta["read_stats"]
    print(f"prepared {meta['train']['examples']} training and {meta['eval']['examples']} held-out examples "
          f"({meta['tokens']} tokens, vocabulary {meta['vocab_size']}) in {os.path.abspath(a.output_dir)}")
    if stats["invalid_utf8_lines"]:
        print(f"skipped {stats['invalid_utf8_lines']} lines that are not valid UTF-8: {stats['invalid_utf8_by_file']}")
    if stats["empty_files"]:
        print(f"files with no text: {stats['empty_files']}")
    warning = padding_warning({**meta, "dir": os.path.abspath(a.output_dir)})
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return meta


def _parse_flags(fv, argv: list[str]) -> None:
    """absl parsing with --help and a one-line error instead of a traceback for a wrong flag."""
    from absl import flags
    if any(a in ("-h", "--help", "-help") for a in argv[1:]):
        print(f"usage: {argv[0]} --config FILE [--config.SECTION.KEY=VALUE ...] [flags]\n\n"
              f"{fv.get_help(include_special_flags=False).strip()}")
        raise SystemExit(0)
    config_file = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
    if "--config" in argv[1:-1]:
        config_file = argv[argv.index("--config") + 1]
    if config_file is not None and not os.path.isfile(config_file.split(":", 1)[0]):
        raise SystemExit(f"{argv[0]}: config file {config_file} does not exist")
    # one rule for every field: given twice is refused (ml_collections would append a tuple-valued
    # field's second value and let a plain field's last one win)
    fields = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    repeated = sorted({f for f in fields if fields.count(f) > 1})
    if repeated:
        raise SystemExit(f"{argv[0]}: {repeated[0]} is given {fields.count(repeated[0])} times; give each config field "
                         f"once (a tuple field takes all its values in one flag: {repeated[0]}=a,b)")
    try:
        fv(argv)
    except flags.Error as e:
        raise SystemExit(f"{argv[0]}: {e}")
    except (AttributeError, KeyError) as e:  # an override of a field the config does not have
        key = str(e).strip("'\"")
        named = [a.split("=", 1)[0][len("--config."):] for a in argv[1:] if a.startswith("--config.")
                 and key in a.split("=", 1)[0].split(".")]
        raise SystemExit(f"{argv[0]}: unknown config field {named[0] if named else key!r}; "
                         f"see the config file or --help for the fields")
    except (SyntaxError, ValueError, ImportError) as e:  # a config file that is not a Python config
        raise SystemExit(f"{argv[0]}: cannot load the config file {config_file}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}")


def _config_command_flags(argv: list[str], command: str = "pretrain", define_extra=None):
    """The flags of a config-driven command: --config FILE[:VARIANT] with --config.a.b=v overrides,
    then --workdir and the multi-host flags, or the command's own flags (`define_extra`)."""
    from absl import flags
    from ml_collections import config_flags
    fv = flags.FlagValues()
    argv = [f"electra-jax {command}"] + argv
    config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    if define_extra:  # a command with its own flags instead of --workdir and the multi-host ones
        define_extra(flags, fv)
        _parse_flags(fv, argv)
        if fv.config is None:
            raise SystemExit(f"electra-jax {command}: --config is required")
        return fv
    flags.DEFINE_string("workdir", None, "checkpoints, metrics and predictions go here", flag_values=fv)
    flags.DEFINE_string("coordinator", None, "multi-host: host:port of process 0 (auto on TPU and SLURM)",
                        flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index", flag_values=fv)
    flags.DEFINE_bool("distributed", False, "multi-host: call jax.distributed.initialize() and let it detect "
                      "the cluster (Cloud TPU, SLURM, ...)", flag_values=fv)
    _parse_flags(fv, argv)
    if fv.config is None or fv.workdir is None:
        raise SystemExit(f"electra-jax {command}: --config and --workdir are required")
    return fv


def cmd_finetune(argv: list[str]) -> dict:
    fv = _distributed_command(argv, "finetune")
    import jax
    from electra_jax.finetune.run import finetune, format_summary
    summary = finetune(fv.config, fv.workdir)
    if jax.process_index() == 0:
        print("\n" + format_summary(summary))
        best = summary["runs"][0]["directory"]
        print(f"best checkpoints, per-epoch metrics.json and predictions: {os.path.dirname(best)}/seed_*/")
        if "per_type" in summary["runs"][0]["dev"]:
            from electra_jax.finetune.metrics import entity_report
            print(entity_report(summary["runs"][0]["dev"]))
    return summary


def _distributed_command(argv: list[str], command: str):
    """Flags of a config-driven command that may span hosts; joins the cluster before jax starts."""
    fv = _config_command_flags(argv, command)
    from electra_jax import sharding
    sharding.initialize_distributed(fv.coordinator, fv.num_processes, fv.process_id, auto=fv.distributed)
    return fv


def cmd_pretrain(argv: list[str]) -> dict:
    fv = _distributed_command(argv, "pretrain")
    from electra_jax.train import pretrain
    result = pretrain(fv.config, fv.workdir)
    _print_result(result, fv.config)
    return result


def _print_result(result: dict, config) -> None:
    import jax
    if jax.process_index() != 0:
        return
    if result.get("preempted"):
        print(f"\nstopped at step {result['step']} on request; checkpoint saved. Rerun the same command to resume.")
    else:
        print(f"\nfinished at step {result['step']}")
    if result.get("skipped_steps"):
        print(f"skipped {result['skipped_steps']} updates with a non-finite loss or gradient")
    for split in ("train", "eval"):
        if result[split]:
            shown = {k: round(v, 4) for k, v in result[split].items() if k != "learning_rate"}
            print(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if "discriminator_auc" in result["eval"]:
        print(discriminator_verdict(result["eval"]))
    print(f"checkpoints: {result['checkpoints']}")
    print(f"TensorBoard: tensorboard --logdir {result['tensorboard']}")
    print(METRICS_HELP.format(discriminator_weight=config.pretrain.discriminator_weight))


def cmd_demo(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="electra-jax demo", description="Pretrain a tiny ELECTRA on stdlib docstrings.")
    p.add_argument("--workdir", default="runs/demo")
    # 1250 steps: the small-budget recipe's held-out AUC passes 0.80 with BERT's attention (docs/study.md)
    p.add_argument("--steps", type=int, default=1250)
    p.add_argument("--vocab_size", type=int, default=4000)
    # 16-token examples: the discriminator learns from a token's neighbours sooner than at 32 or 128
    # (docs/study.md, "Shorter sequences"); every batch holds the same 4096 tokens
    p.add_argument("--seq_length", type=int, default=16)
    a = p.parse_args(argv)
    from electra_jax.config import default_config, validate
    from electra_jax.data import stdlib_corpus
    from electra_jax.data.prepare import PrepareOptions, load_metadata, prepare

    workdir = os.path.abspath(a.workdir)
    corpus_path = os.path.join(workdir, "corpus", "stdlib_docstrings.txt")
    data_dir = os.path.join(workdir, "data")
    config = default_config("tiny", "small_budget")
    tokens_per_batch = config.train.batch_size * config.data.seq_length  # the tiny config's, at any length
    config.data.update(dir=data_dir, seq_length=a.seq_length)
    config.train.update(batch_size=max(1, tokens_per_batch // a.seq_length), num_steps=a.steps,
                        warmup_steps=a.steps // 10, eval_every=max(1, a.steps // 4),
                        checkpoint_every=max(1, a.steps // 2))
    validate(config)  # a bad --seq_length or --steps fails here, before the corpus is built
    prepared_length = (load_metadata(data_dir)["seq_length"]
                       if os.path.exists(os.path.join(data_dir, "metadata.json")) else None)
    if prepared_length not in (None, a.seq_length):  # refuse rather than overwrite that data and its run
        raise SystemExit(f"{data_dir} holds {prepared_length}-token examples; pass --seq_length "
                         f"{prepared_length} or a new --workdir")
    if prepared_length is None:
        print("1/3 building a corpus from the docstrings of the Python standard library ...")
        info = stdlib_corpus.write_corpus(corpus_path)
        print(f"    {info['documents']} docstrings, {info['bytes'] / 1e6:.1f} MB -> {corpus_path}")
        print("2/3 training a SentencePiece vocabulary and packing examples ...")
        prepare(PrepareOptions(inputs=[corpus_path], output_dir=data_dir, vocab_size=a.vocab_size,
                               seq_length=a.seq_length, eval_fraction=0.02, overwrite=True))
    meta = load_metadata(data_dir)
    print(f"    {meta['train']['examples']} training / {meta['eval']['examples']} held-out examples of "
          f"{a.seq_length} tokens")
    print(f"3/3 pretraining ELECTRA-Tiny for {a.steps} steps (batch {config.train.batch_size} x {a.seq_length} tokens) ...")
    from electra_jax.train import pretrain
    result = pretrain(config, os.path.join(workdir, "run"))
    _print_result(result, config)
    return result


def cmd_export(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="electra-jax export",
                                description="Pretrained networks alone (no optimizer state) + config + tokenizer.")
    p.add_argument("--workdir", required=True, help="a pretraining workdir")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from electra_jax.export import export
    from electra_jax.workdir import check_writable_location
    check_writable_location(a.out)
    info = export(a.workdir, a.out)
    print(f"exported step {info['step']} ({', '.join(info['parts'])}) to {os.path.abspath(a.out)}")
    return info


def cmd_predict(argv: list[str]):
    p = argparse.ArgumentParser(prog="electra-jax predict",
                                description="fill-mask (generator) or detect (discriminator) on texts.")
    p.add_argument("task", choices=["fill-mask", "detect"])
    p.add_argument("texts", nargs="*", help="texts; fill-mask needs [MASK] in each")
    p.add_argument("--ckpt", required=True, help="an `electra-jax export` directory or a HuggingFace directory")
    p.add_argument("--file", help="read texts from this file, one per line")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_intermixed_args(argv)
    texts = list(a.texts)
    if a.file is not None:
        from electra_jax.data.corpus import strict_text_lines
        if not a.file:
            raise SystemExit("electra-jax predict: --file is empty; give the path of a file of texts, one per line")
        if os.path.isdir(a.file):
            raise SystemExit(f"electra-jax predict: --file {a.file} is a directory; give a file of texts, one per line")
        if not os.path.isfile(a.file):
            raise SystemExit(f"electra-jax predict: --file {a.file} does not exist")
        texts += [line.strip() for line in strict_text_lines(a.file) if line.strip()]
    if not texts:
        raise SystemExit("electra-jax predict: give texts or --file")
    from electra_jax import inference
    part = "generator" if a.task == "fill-mask" else "discriminator"
    module, params, tokenizer = inference.load_network(a.ckpt, part)
    if a.task == "fill-mask":
        if any("[MASK]" not in t for t in texts):
            raise SystemExit("electra-jax predict fill-mask: every text needs a [MASK]")
        results = inference.fill_mask(module, params, tokenizer, texts, a.top_k)
    else:
        results = inference.detect(module, params, tokenizer, texts)
    if a.json:
        print(json.dumps([dict(text=t, result=r) for t, r in zip(texts, results)], ensure_ascii=False, indent=1))
        return results
    for text, result in zip(texts, results):
        print(text)
        if a.task == "fill-mask":
            for slot in result:
                print(f"  [MASK] at token {slot['position']}: " + ", ".join(
                    f"{c['token']} {c['probability']:.3f}" for c in slot["candidates"]))
        else:
            print(f"  {'token':<20} P(replaced)")
            for tok in result:
                flag = "  <- replaced?" if tok["replaced_probability"] > 0.5 else ""
                print(f"  {tok['token']:<20} {tok['replaced_probability']:.3f}{flag}")
    return results


def cmd_convert(argv: list[str]):
    p = argparse.ArgumentParser(prog="electra-jax convert", description="Between HuggingFace and electra-jax exports.")
    sub = p.add_subparsers(dest="direction", required=True)
    f = sub.add_parser("from-hf", help="HuggingFace directories -> an electra-jax export")
    f.add_argument("--discriminator", required=True)
    f.add_argument("--generator")
    f.add_argument("--out", required=True)
    t = sub.add_parser("to-hf", help="an electra-jax export -> OUT/discriminator, OUT/generator")
    t.add_argument("--ckpt", required=True)
    t.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from electra_jax import inference
    from electra_jax.workdir import check_writable_location
    check_writable_location(a.out)
    if a.direction == "from-hf":
        info = inference.from_hf(a.discriminator, a.generator, a.out)
        print(f"wrote {', '.join(info['parts'])} to {os.path.abspath(a.out)}")
    else:
        for path in inference.to_hf(a.ckpt, a.out):
            print(f"wrote {path}")


def cmd_eval(argv: list[str]) -> dict:
    from electra_jax import zero_shot
    p = argparse.ArgumentParser(prog="electra-jax eval", description="Zero-shot evaluations of a pretrained model.")
    sub = p.add_subparsers(dest="evaluation", required=True)
    m = sub.add_parser("minimal-pairs", help="grammatical minimal pairs: does the model prefer the grammatical twin?")
    m.add_argument("--ckpt", required=True, help="a pretraining workdir, an `electra-jax export` directory or a "
                   "HuggingFace ELECTRA / BERT-family directory (with a masked-LM head for pll)")
    m.add_argument("--data", action="append", required=True, help="BLiMP's folder or its .jsonl files (sentence_good / "
                   "sentence_bad), or text files of alternating ungrammatical / grammatical lines (repeatable)")
    m.add_argument("--scorer", choices=zero_shot.SCORERS, default="auto",
                   help="discriminator: ELECTRA's realness score; pll: masked-LM pseudo-log-likelihood; "
                   "auto: the discriminator when the checkpoint has one, else pll")
    m.add_argument("--split", choices=("all", "dev", "test"), default="all",
                   help="BLiMP's fixed split of paradigms: every fourth file in sorted order is dev, the rest test")
    m.add_argument("--max_pairs", type=int, default=None, help="score only the first N pairs of each paradigm")
    m.add_argument("--json", help="also write the result to this file")
    a = p.parse_args(argv)
    if a.max_pairs is not None and a.max_pairs < 1:
        raise SystemExit("electra-jax eval minimal-pairs: --max_pairs must be at least 1")
    if a.json:
        from electra_jax.workdir import check_writable_location
        check_writable_location(a.json)
    paradigms = zero_shot.blimp_split(zero_shot.read_minimal_pairs(a.data), a.split)
    result = zero_shot.evaluate(paradigms, zero_shot.load_scorer(a.ckpt, a.scorer), a.max_pairs)
    print(zero_shot.format_report(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: v for k, v in result.items() if k != "passes"}, f, indent=1)
    return result


def cmd_study(argv: list[str]) -> dict:
    fv = _config_command_flags(argv, "study")
    from electra_jax.study import run_study
    result = run_study(fv.config, fv.workdir)
    print("\n" + result["table"])
    written = {"study.md": "tables", "zero_shot.md": "BLiMP and few-label tables", "study_summary.json": "summary",
               "blimp.png": "BLiMP plot", "study.png": "GLUE plot", "results.json": "every score"}
    print("\n" + ", ".join(f"{what}: {result['workdir']}/{name}" for name, what in written.items()
                           if os.path.exists(os.path.join(result["workdir"], name))))
    return result


def cmd_search(argv: list[str]) -> dict:
    fv = _config_command_flags(argv, "search")
    from electra_jax.study import run_search
    result = run_search(fv.config, fv.workdir)
    print("\n" + result["table"])
    print(f"\ntable: {result['workdir']}/search.md, every number: {result['workdir']}/search.json")
    return result


BENCH_USAGE = ("usage: electra-jax bench step --config C [--reference] [--tasks] [--profile DIR] [--config.a.b=v ...] | "
               "bench data --config C --config.data.dir=PREPARED [--step_seconds S] | "
               "bench finetune --config configs/finetune/C.py --config.init=DIR --workdir W [--reference] | "
               "bench plan --config C --accelerator {v4,v5e,v5p,v100,a100,h100,rtx4090} --chips N [--fit]")


def _define_bench_flags(flags, fv) -> None:
    flags.DEFINE_integer("steps", 10, "timed steps (after warm-up)", flag_values=fv)
    flags.DEFINE_integer("warmup", 2, "untimed steps after compiling", flag_values=fv)
    flags.DEFINE_integer("vocab_size", 30522, "vocabulary for synthetic tokens (model.vocab_size wins if set)",
                         flag_values=fv)
    flags.DEFINE_bool("reference", False, "also run the PyTorch + transformers reference (bench extra)", flag_values=fv)
    flags.DEFINE_bool("matmul_peak", True, "measure the matmul peak for MFU", flag_values=fv)
    flags.DEFINE_bool("breakdown", False, "also time the step's parts alone (ELECTRA objective)", flag_values=fv)
    flags.DEFINE_float("step_seconds", 0.0, "bench data: the step time to compare with", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result to this file", flag_values=fv)
    flags.DEFINE_string("workdir", None, "bench finetune: where both runs write", flag_values=fv)
    flags.DEFINE_bool("tasks", False, "bench step: also time the fine-tuning step and the batched forward "
                      "(inference) at the discriminator's size", flag_values=fv)
    flags.DEFINE_string("profile", None, "bench step: trace the step into DIR and print its time by kind of op",
                        flag_values=fv)
    flags.DEFINE_string("accelerator", None, "bench plan: the chip to plan for", flag_values=fv)
    flags.DEFINE_integer("chips", 1, "bench plan: how many chips (host devices stand in for them)", flag_values=fv)
    flags.DEFINE_float("efficiency", 0.5, "bench plan: the share of the roofline a tuned step reaches",
                       flag_values=fv)
    flags.DEFINE_bool("fit", False, "bench plan: choose the micro-batch, accumulation and remat that fit the chip "
                      "and run fastest (plan.plan_fit)", flag_values=fv)


def _bench_plan(fv) -> dict:
    if fv.accelerator is None:
        raise SystemExit("electra-jax bench plan: --accelerator is required")
    if fv.chips < 1:
        raise SystemExit(f"electra-jax bench plan: --chips {fv.chips}: plan for at least 1 chip")
    # host devices stand in for the chips; XLA reads this when the backend starts, below
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} " \
                              f"--xla_force_host_platform_device_count={fv.chips}".strip()
    from electra_jax import plan
    config = fv.config
    planner, report = (plan.plan_fit, plan.format_fit) if fv.fit else (plan.plan_run, plan.format_plan)
    try:
        result = planner(config, config.model.vocab_size or fv.vocab_size, fv.accelerator, fv.chips, fv.efficiency)
    except ValueError as e:
        raise SystemExit(f"electra-jax bench plan: {e}")
    print(report(result))
    return result


def _bench_finetune(fv) -> dict:
    from electra_jax import bench
    from electra_jax.bench_torch import finetune_reference
    if not fv.workdir:
        raise SystemExit("electra-jax bench finetune: --workdir is required")
    result = bench.bench_finetune(fv.config, fv.workdir, reference=finetune_reference if fv.reference else None)
    print(json.dumps(result, indent=2))
    print("\n" + bench.finetune_table([result]))
    return result


def _bench_step(fv) -> dict:
    from electra_jax import bench, profile, step_bench
    config = fv.config
    vocab = config.model.vocab_size or fv.vocab_size
    if fv.reference:  # a model the reference cannot build is refused before any compile, not after
        from electra_jax.bench_torch import bench_reference, bench_task_reference
        from electra_jax.hf import require_bert_attention
        require_bert_attention(config.model.attention_bias)
    result = step_bench.bench_step(config, vocab, steps=fv.steps, warmup=fv.warmup, profile_dir=fv.profile)
    if fv.matmul_peak:
        result["matmul_peak_flops"] = step_bench.measured_matmul_peak(config.model.dtype)
        result["mfu_measured_peak"] = result["model_flops_per_second"] / result["matmul_peak_flops"]
    if result["device_kind"] == "cpu":
        result["cpu_peak"] = step_bench.cpu_peak_flops()
        result["mfu_physical_peak"] = result["model_flops_per_second"] / result["cpu_peak"]["peak_flops"]
    if fv.breakdown:
        result["breakdown"] = bench.step_breakdown(config, vocab)
    if fv.tasks:
        result["tasks"] = bench.bench_task_steps(config, vocab, steps=fv.steps, warmup=fv.warmup,
                                                 profile_dir=fv.profile and f"{fv.profile}/tasks")
    if fv.reference:
        result["reference"] = bench_reference(config, vocab, steps=fv.steps, warmup=fv.warmup)
        result["speedup_vs_reference"] = result["tokens_per_second"] / result["reference"]["tokens_per_second"]
        if fv.tasks:
            result["reference"]["tasks"] = bench_task_reference(config, vocab, steps=fv.steps, warmup=fv.warmup)
            result["tasks"]["speedup_vs_reference"] = {
                k: result["reference"]["tasks"][k] / result["tasks"][k] for k in result["tasks"] if k.endswith("_seconds")}
    print(json.dumps(result, indent=2))
    if "profile" in result:
        print("\npretraining step\n" + profile.format_breakdown(result["profile"]))
    for name, traced in result.get("tasks", {}).get("profile", {}).items():
        print(f"\n{name}\n" + profile.format_breakdown(traced))
    return result


def _bench_data(fv) -> dict:
    from electra_jax import bench
    config = fv.config
    result = bench.bench_data(config.data.dir, config.train.batch_size)
    if fv.step_seconds:
        result["ratio_to_step"] = result["examples_per_second"] / (config.train.batch_size / fv.step_seconds)
    print(json.dumps(result, indent=2))
    return result


BENCHES = {"step": _bench_step, "data": _bench_data, "finetune": _bench_finetune, "plan": _bench_plan}


def cmd_bench(argv: list[str]) -> dict:
    if not argv or argv[0] not in BENCHES:
        raise SystemExit(BENCH_USAGE)
    fv = _config_command_flags(argv[1:], f"bench {argv[0]}", _define_bench_flags)
    if fv.json:
        from electra_jax.workdir import check_writable_location
        check_writable_location(fv.json)
    result = BENCHES[argv[0]](fv)
    if fv.json:
        with open(fv.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


COMMANDS = {"demo": cmd_demo, "prepare": cmd_prepare, "pretrain": cmd_pretrain, "export": cmd_export,
            "finetune": cmd_finetune, "predict": cmd_predict, "convert": cmd_convert, "bench": cmd_bench,
            "eval": cmd_eval, "study": cmd_study, "search": cmd_search}


HUGE_PAGE_MALLOC = "glibc.malloc.hugetlb=1"


def huge_page_malloc_env(environ) -> dict | None:
    """`environ` with glibc's malloc.hugetlb tunable added, or None when it needs no change.

    Why: XLA's CPU runtime allocates each step's temporaries afresh (149 MB for the demo's step,
    517 MB for a pretraining step of MiniLM's shape at 16 x 64); above glibc's 32 MB mmap ceiling
    that is a new mapping every step, faulted in 4 KB page by page: 19% of the demo's CPU time was
    the kernel's. With the
    tunable, glibc asks for transparent huge pages on its mappings (2 MB each; Linux's default THP
    setting honours the request): 1.5M page faults -> 0.19M over 30 steps, and the demo's step 1.26x
    faster (docs/performance.md, "Page faults"). A GLIBC_TUNABLES that already sets it is left as it is."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGE_MALLOC]))}


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's entry point: glibc reads its tunables only at start-up, so re-exec
        env = huge_page_malloc_env(os.environ)
        if env is not None:
            os.execve(sys.executable, [sys.executable, "-m", "electra_jax.cli", *sys.argv[1:]], env)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"electra-jax: unknown command {argv[0]!r}; the commands are {', '.join(COMMANDS)} "
              f"(electra-jax --help says what each does)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax and grain are chatty at INFO
    # jax reports at INFO every accelerator plugin it did not find ("Unable to initialize backend
    # 'tpu'") on machines without one: noise there, and a real failure still raises
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    from electra_jax.config import ConfigError
    from electra_jax.data.corpus import DataError
    from electra_jax.train import NonFiniteError
    from electra_jax.hf import HFFormatError
    from electra_jax.workdir import WorkdirBusy
    except_types = (ConfigError, DataError, NonFiniteError, HFFormatError, WorkdirBusy, FileExistsError,
                    FileNotFoundError)
    try:
        COMMANDS[argv[0]](argv[1:])
    except except_types as e:
        print(f"electra-jax {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        print(f"electra-jax {argv[0]}: error: {unwritable_message(e)}", file=sys.stderr)
        return 2
    return 0


# OS errors that mean "the place the user named cannot take our output", and what to do about each
UNWRITABLE = {errno.EROFS: "the filesystem is read-only; choose a location on a writable one",
              errno.EACCES: "permission denied; choose a location you can write to",
              errno.EPERM: "permission denied; choose a location you can write to",
              errno.ENOSPC: "no space left on the device; free some space or choose another location",
              errno.EDQUOT: "the disk quota is exceeded; free some space or choose another location",
              errno.ENOTDIR: "a part of that path is a file, not a directory; choose another location",
              errno.EISDIR: "that path is a directory; give a file path"}
PARTIAL_SUFFIXES = (".partial", ".tmp")  # our temporary names next to the path the user gave


def unwritable_message(e: OSError) -> str:
    """One line naming the path the user gave (not our temporary twin of it) and what to do."""
    path = str(e.filename or "")
    for suffix in PARTIAL_SUFFIXES:
        path = path[:-len(suffix)] if path.endswith(suffix) else path
    return f"cannot write {path or 'the output'}: {UNWRITABLE[e.errno]}"


if __name__ == "__main__":
    sys.exit(main())
