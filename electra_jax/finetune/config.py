"""Fine-tuning configuration (configs/finetune/*.py start here) and its validation."""
from __future__ import annotations

import ml_collections

from electra_jax.config import MODEL_SIZES, default_config, need


def finetune_config(task: str = "sst2") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task
    c.init = ""             # pretraining workdir, `electra-jax export` dir, HuggingFace ELECTRA/BERT dir, or
                            # prepared data (its tokenizer only: an encoder of model.size from scratch)
    c.from_scratch = False  # keep init's architecture and tokenizer but not its weights: the no-pretraining baseline
    c.seed = 0
    c.num_seeds = 1         # runs seeds seed .. seed+num_seeds-1 and reports mean and std
    c.max_seq_length = 128
    c.data = ml_collections.ConfigDict(dict(
        source="files",      # "files" or "tfds"
        dir="",              # GLUE: the task folder, or the glue_data folder holding it
        train_file="", dev_file="", test_file="",  # your own files; CoNLL; SQuAD .json
        text_columns=("text",),  # header names (CSV/TSV) or fields (JSONL) holding the text(s)
        # the label's column name; for CoNLL files the tag column's position (-1: the last)
        label_column=-1 if task in ("ner", "chunk", "tagging") else "label",
        labels=(),           # closed label set; empty: every label seen in the training file
        dev_fraction=0.1,    # held out of train_file when there is no dev_file
        tfds_name="", tfds_data_dir="",
        max_train_examples=0, max_eval_examples=0,  # 0: all (smaller for quick runs)
    ))
    # size: the encoder built when init is prepared data (no weights to take a shape from)
    c.model = ml_collections.ConfigDict(dict(dropout_rate=0.1, attention_dropout_rate=0.1, dtype="float32",
                                             size="tiny"))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=32,
        eval_batch_size=64,
        # training batches are cut to their longest sequence rounded up to a multiple of this (one
        # compiled step per length; the padding cut changes no output): 0 keeps max_seq_length
        length_bucket=32,
        epochs=0,            # 0: the reference's (10 for RTE and STS-B, 2 for SQuAD, 3 otherwise)
        learning_rate=0.0,   # 0: by encoder size as the reference (3e-4 small, 1e-4 base, 5e-5 large)
        layerwise_lr_decay=0.0,  # 0: 0.8, or 0.9 for 24-layer models
        warmup_fraction=0.1,
        weight_decay=0.01,
        adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6,
        bias_correction=False,
        decay_norm_and_bias=False,
        grad_clip_norm=1.0,
        schedule="reference",
    ))
    c.squad = ml_collections.ConfigDict(dict(doc_stride=128, max_query_length=64, n_best=20,
                                             max_answer_length=30, null_threshold=0.0))
    pretraining = default_config("tiny")
    c.mesh = pretraining.mesh
    c.axis_rules = pretraining.axis_rules
    return c


def resolved_hyperparameters(config, encoder_cfg) -> tuple[float, float]:
    """(learning rate, layer-wise decay): the config's, or the reference's for this encoder size."""
    t = config.train
    lr = t.learning_rate or (3e-4 if encoder_cfg.hidden_size <= 256 else 1e-4 if encoder_cfg.hidden_size <= 768
                             else 5e-5)
    decay = t.layerwise_lr_decay or (0.9 if encoder_cfg.num_layers >= 24 else 0.8)
    return lr, decay


def validate(config) -> None:
    t = config.train
    need(bool(config.init), "init is empty: give a pretraining workdir, an `electra-jax export` directory, a "
         "HuggingFace ELECTRA/BERT directory, or prepared data to train from scratch (--config.init=PATH)")
    need(config.model.size in MODEL_SIZES, f"model.size={config.model.size!r}: choose one of {sorted(MODEL_SIZES)}")
    need(config.data.source in ("files", "tfds"), f"data.source={config.data.source!r}: choose 'files' or 'tfds'")
    need(config.num_seeds >= 1, f"num_seeds={config.num_seeds} must be at least 1")
    for name in ("dropout_rate", "attention_dropout_rate"):
        need(0 <= config.model[name] < 1, f"model.{name}={config.model[name]} must lie in [0, 1)")
    need(config.max_seq_length >= 8, f"max_seq_length={config.max_seq_length} is too short (min 8)")
    need(t.length_bucket >= 0, f"train.length_bucket={t.length_bucket} must not be negative (0: no cut)")
    need(t.batch_size > 0 and t.eval_batch_size > 0, "train.batch_size and train.eval_batch_size must be positive")
    need(t.epochs >= 0, f"train.epochs={t.epochs} must be >= 0 (0: the reference's per-task count)")
    need(t.learning_rate >= 0, f"train.learning_rate={t.learning_rate} must be >= 0")
    need(0 <= t.layerwise_lr_decay <= 1, f"train.layerwise_lr_decay={t.layerwise_lr_decay} must lie in [0, 1]")
    need(0 <= t.warmup_fraction < 1, f"train.warmup_fraction={t.warmup_fraction} must lie in [0, 1)")
    need(0 < config.data.dev_fraction < 1, f"data.dev_fraction={config.data.dev_fraction} must lie in (0, 1)")
    if config.task in ("squad", "squad_v2"):
        s = config.squad
        need(config.max_seq_length - s.max_query_length - 3 >= 16,
             f"max_seq_length={config.max_seq_length} leaves fewer than 16 context tokens after a question of "
             f"squad.max_query_length={s.max_query_length}")
        need(0 < s.doc_stride, f"squad.doc_stride={s.doc_stride} must be positive")
