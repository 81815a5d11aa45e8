"""Exchange of weights with HuggingFace transformers: ELECTRA both ways, BERT-family encoders in.

    module, params = hf.load("google/electra-small-discriminator local dir")
    logits = module.apply({"params": params}, input_ids, attention_mask=mask, token_type_ids=types)
    hf.save(module, params, "out_dir", tokenizer=tok)   # transformers' from_pretrained loads it

ELECTRA's encoder is BERT's encoder (BERT is the case embedding_size == hidden_size), so a BERT
checkpoint (model_type "bert": BertModel, BertForMaskedLM, BertForSequenceClassification, ...)
loads as our encoder, and BERT's masked-LM head as our generator head. BERT's pooler and task heads
have no counterpart here (our classification head reads the [CLS] vector, as ELECTRA's does); they
are dropped with one log line naming them.

Reading needs no torch when the directory has model.safetensors; pytorch_model.bin needs torch.
torch Linear weights are [out, in]; flax kernels are [in, out].
"""
from __future__ import annotations

import collections
import json
import logging
import os

import numpy as np
from safetensors.numpy import load_file, save_file

from electra_jax.data.corpus import read_json_file
from electra_jax.model import ElectraDiscriminator, ElectraEncoderModel, ElectraGenerator, ModelConfig

log = logging.getLogger(__name__)

# Our networks, by the head they carry, and the HuggingFace ELECTRA class each is saved as.
MODULES = {"discriminator": ElectraDiscriminator, "generator": ElectraGenerator, "encoder": ElectraEncoderModel}
ELECTRA_ARCHITECTURES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM",
                         "encoder": "ElectraModel"}
# The head a checkpoint's own architecture carries that we can use; any other architecture loads as
# an encoder (its task head dropped).
HEAD_OF_ARCHITECTURE = {"ElectraForPreTraining": "discriminator", "ElectraForMaskedLM": "generator",
                        "BertForMaskedLM": "generator", "BertForPreTraining": "generator"}
MODEL_TYPES = ("electra", "bert")
CONFIG_FIELDS = dict(vocab_size="vocab_size", embedding_size="embedding_size", hidden_size="hidden_size",
                     num_layers="num_hidden_layers", num_heads="num_attention_heads",
                     intermediate_size="intermediate_size", max_position_embeddings="max_position_embeddings",
                     type_vocab_size="type_vocab_size", dropout_rate="hidden_dropout_prob",
                     attention_dropout_rate="attention_probs_dropout_prob", initializer_range="initializer_range",
                     layer_norm_eps="layer_norm_eps")
# Buffers, not weights: nothing to load, nothing to report.
IGNORED_TENSORS = ("position_ids",)


class HFFormatError(ValueError):
    """A HuggingFace directory this module cannot read; the message says what is missing."""


def _name_pairs(cfg: ModelConfig, head: str, prefix: str, model_type: str = "electra") -> list[tuple[tuple, str, bool]]:
    """(our parameter path, HF tensor name, transpose?) for every tensor of one network."""
    pairs = []

    def dense(ours, theirs):
        pairs.extend([(ours + ("kernel",), theirs + ".weight", True), (ours + ("bias",), theirs + ".bias", False)])

    def norm(ours, theirs):
        pairs.extend([(ours + ("scale",), theirs + ".weight", False), (ours + ("bias",), theirs + ".bias", False)])

    for name in ("word", "position", "token_type"):
        pairs.append((("embeddings", f"{name}_embeddings", "embedding"), f"{prefix}embeddings.{name}_embeddings.weight",
                      False))
    norm(("embeddings", "LayerNorm"), f"{prefix}embeddings.LayerNorm")
    if cfg.embedding_size != cfg.hidden_size:
        dense(("encoder", "embeddings_project"), f"{prefix}embeddings_project")
    for i in range(cfg.num_layers):
        ours, theirs = ("encoder", f"layer_{i}"), f"{prefix}encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            dense(ours + ("attention", proj), f"{theirs}.attention.self.{proj}")
        dense(ours + ("attention", "output"), f"{theirs}.attention.output.dense")
        norm(ours + ("attention_norm",), f"{theirs}.attention.output.LayerNorm")
        dense(ours + ("intermediate",), f"{theirs}.intermediate.dense")
        dense(ours + ("output",), f"{theirs}.output.dense")
        norm(ours + ("output_norm",), f"{theirs}.output.LayerNorm")
    if head == "discriminator":
        dense(("head", "dense"), "discriminator_predictions.dense")
        dense(("head", "dense_prediction"), "discriminator_predictions.dense_prediction")
    elif head == "generator" and model_type == "electra":
        dense(("head", "dense"), "generator_predictions.dense")
        norm(("head", "LayerNorm"), "generator_predictions.LayerNorm")
        pairs.append((("head", "output_bias"), "generator_lm_head.bias", False))
    elif head == "generator":  # BERT's masked-LM head: the same transform, decoder tied to the embeddings
        dense(("head", "dense"), "cls.predictions.transform.dense")
        norm(("head", "LayerNorm"), "cls.predictions.transform.LayerNorm")
        pairs.append((("head", "output_bias"), "cls.predictions.bias", False))
    return pairs


def _head_of(module) -> str:
    for head, cls in MODULES.items():
        if type(module) is cls:
            return head
    raise TypeError(f"hf.save takes an ElectraDiscriminator, ElectraGenerator or ElectraEncoderModel, not {type(module)}")


def _read_tensors(path: str) -> dict[str, np.ndarray]:
    safetensors_file = os.path.join(path, "model.safetensors")
    torch_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(safetensors_file):
        tensors = load_file(safetensors_file)
    elif os.path.isfile(torch_file):
        import torch
        tensors = {k: v.float().numpy() for k, v in torch.load(torch_file, map_location="cpu", weights_only=True).items()}
    else:
        raise HFFormatError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    # checkpoints converted from the original TensorFlow BERT name LayerNorm's tensors gamma/beta
    return {name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): value
            for name, value in tensors.items()}


def _read_hf_config(path: str) -> tuple[dict, str]:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise HFFormatError(f"{path} has no config.json: not a HuggingFace model directory")
    hf = read_json_file(config_file)
    if not isinstance(hf, dict) or hf.get("model_type") not in MODEL_TYPES:
        model_type = hf.get("model_type") if isinstance(hf, dict) else None
        raise HFFormatError(f"{config_file}: model_type is {model_type!r}; electra-jax reads 'electra' and 'bert' "
                            f"(BERT-family encoders)")
    return hf, config_file


def read_config(path: str) -> tuple[ModelConfig, str, str]:
    """(our ModelConfig, the checkpoint's architecture name, its model_type) from a HuggingFace
    directory."""
    hf, config_file = _read_hf_config(path)
    if hf.get("hidden_act", "gelu") != "gelu":
        raise HFFormatError(f"{config_file}: hidden_act {hf['hidden_act']!r} is not supported (only exact gelu)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise HFFormatError(f"{config_file}: position_embedding_type {hf['position_embedding_type']!r} is not "
                            f"supported (only absolute positions)")
    defaults = dict(embedding_size=128 if hf["model_type"] == "electra" else hf.get("hidden_size"),
                    layer_norm_eps=1e-12, type_vocab_size=2, max_position_embeddings=512, hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, initializer_range=0.02)
    cfg = ModelConfig(**{ours: hf.get(theirs, defaults.get(theirs)) for ours, theirs in CONFIG_FIELDS.items()})
    arch = (hf.get("architectures") or [f"{hf['model_type'].capitalize()}Model"])[0]
    return cfg, arch, hf["model_type"]


def _report_unused(path: str, tensors: dict, used: set[str], prefix: str) -> None:
    unused = collections.Counter(name[len(prefix):].split(".")[0] if name.startswith(prefix) else name.split(".")[0]
                                 for name in tensors if name not in used and name.split(".")[-1] not in IGNORED_TENSORS)
    if unused:
        log.info("%s: not used here: %s", path, ", ".join(f"{part} ({n} tensors)" for part, n in sorted(unused.items())))


def load(path: str, head: str | None = None):
    """(module, params) from a HuggingFace ELECTRA or BERT directory. `head` ("discriminator",
    "generator" or "encoder") picks the network; by default the one config.json's architecture has."""
    cfg, arch, model_type = read_config(path)
    head = head or HEAD_OF_ARCHITECTURE.get(arch, "encoder")
    if head == "discriminator" and model_type == "bert":
        raise HFFormatError(f"{path} is a BERT checkpoint ({arch}): it has no replaced-token-detection head, so it "
                            f"cannot serve as a discriminator; use it as an encoder (fine-tuning) or a generator")
    tensors = _read_tensors(path)
    prefix = f"{model_type}." if any(k.startswith(f"{model_type}.") for k in tensors) else ""
    params: dict = {}
    used = set()
    for ours, theirs, transpose in _name_pairs(cfg, head, prefix, model_type):
        if theirs not in tensors:
            raise HFFormatError(f"{path}: tensor {theirs} is missing (needed for a {head} from {arch})")
        used.add(theirs)
        value = np.asarray(tensors[theirs], np.float32)
        node = params
        for key in ours[:-1]:
            node = node.setdefault(key, {})
        node[ours[-1]] = value.T if transpose else value
    # the tied decoders repeat the word embeddings: used, not dropped
    used.update(k for k in tensors if k.endswith(("generator_lm_head.weight", "cls.predictions.decoder.weight",
                                                  "cls.predictions.decoder.bias")))
    _report_unused(path, tensors, used, prefix)
    return MODULES[head](cfg), params


def why_not_convertible(attention_bias: str) -> str | None:
    """Why transformers cannot hold a model of this attention (None when it can): its BERT and
    ELECTRA have BERT's attention only, so a model with ALiBi biases can be neither written for
    them nor stood in for by them."""
    if attention_bias == "none":
        return None
    return (f"model.attention_bias={attention_bias!r}: HuggingFace BERT/ELECTRA attention has no such biases, so "
            f"transformers cannot hold this model; pretrain with --config.model.attention_bias=none for one it can")


def require_bert_attention(attention_bias: str) -> None:
    reason = why_not_convertible(attention_bias)
    if reason:
        raise HFFormatError(reason)


def save(module, params, path: str, tokenizer=None) -> None:
    """Write config.json, model.safetensors and (given a tokenizer) its files to `path`."""
    head = _head_of(module)
    arch, cfg = ELECTRA_ARCHITECTURES[head], module.cfg
    require_bert_attention(cfg.attention_bias)
    prefix = "" if head == "encoder" else "electra."
    tensors = {}
    for ours, theirs, transpose in _name_pairs(cfg, head, prefix):
        value = params
        for key in ours:
            value = value[key]
        value = np.asarray(value, np.float32)
        tensors[theirs] = np.ascontiguousarray(value.T if transpose else value)
    os.makedirs(path, exist_ok=True)
    hf = {theirs: getattr(cfg, ours) for ours, theirs in CONFIG_FIELDS.items()}
    hf.update(model_type="electra", architectures=[arch], hidden_act="gelu", tie_word_embeddings=True,
              position_embedding_type="absolute", pad_token_id=0)
    if tokenizer is not None:
        hf["pad_token_id"] = tokenizer.special_ids["pad"]
        tokenizer.save_for_transformers(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
