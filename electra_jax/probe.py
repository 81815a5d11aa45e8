"""A linear probe on frozen features: what an encoder's last hidden states, mean-pooled over the
tokens, tell a logistic regression about a sentence-classification task. Fine-tuning can hide an
encoder's state (a few epochs move every weight); the probe reads it as it is, so it shows whether
pretraining left anything to build on."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from electra_jax.config import ConfigError
from electra_jax.finetune.pretrained import load_encoder
from electra_jax.finetune.tasks import get_task
from electra_jax.model import ElectraEncoderModel


def mean_pooled_features(cfg, params, arrays: dict, batch_size: int = 256) -> np.ndarray:
    """[N, H] mean over the real tokens of the encoder's last hidden states."""
    model = ElectraEncoderModel(cfg)

    @jax.jit
    def pooled(params, ids, mask, types):
        hidden = model.apply({"params": params}, ids, mask, types).astype(jnp.float32)
        m = mask[..., None].astype(jnp.float32)
        return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)

    keys = ("input_ids", "attention_mask", "token_type_ids")
    return np.concatenate([np.asarray(pooled(params, *(jnp.asarray(arrays[k][s:s + batch_size]) for k in keys)))
                           for s in range(0, len(arrays["input_ids"]), batch_size)])


def classification_task(config):
    """config's task, which must be a classification: the probe is a classifier."""
    task = get_task(config)
    if task.kind != "classification":
        raise ConfigError(f"task={config.task!r}: the frozen-feature probe needs a classification task (e.g. sst2), "
                          f"not a {task.kind}")
    return task


def frozen_probe_accuracy(config, from_scratch: bool = False) -> float:
    """Dev accuracy of a logistic regression trained on the frozen features of `config.init`'s
    encoder (random weights of its architecture when from_scratch), with `config`'s task and data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    task = classification_task(config)
    cfg, params, tokenizer, _ = load_encoder(config.init)
    if from_scratch:
        ids = jnp.zeros((1, config.max_seq_length), jnp.int32)
        params = nn.meta.unbox(ElectraEncoderModel(cfg).init(jax.random.key(config.seed), ids)["params"])
    split_arrays = {}
    for split in ("train", "dev"):  # train first: it defines the label set
        split_arrays[split], _ = task.featurize(task.read(split), tokenizer, split)
    x = {split: mean_pooled_features(cfg, params, a) for split, a in split_arrays.items()}
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(x["train"], split_arrays["train"]["labels"])
    return float(probe.score(x["dev"], split_arrays["dev"]["labels"]))
