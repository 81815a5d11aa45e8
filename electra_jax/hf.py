"""Exchange of weights with HuggingFace transformers' ELECTRA.

    module, params = hf.load("google/electra-small-discriminator local dir")
    logits = module.apply({"params": params}, input_ids, attention_mask=mask, token_type_ids=types)
    hf.save(module, params, "out_dir", tokenizer=tok)   # transformers' from_pretrained loads it

Reading needs no torch when the directory has model.safetensors; pytorch_model.bin needs torch.
torch Linear weights are [out, in]; flax kernels are [in, out].
"""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file

from electra_jax.model import ElectraDiscriminator, ElectraEncoderModel, ElectraGenerator, ModelConfig

ARCHITECTURES = {"ElectraForPreTraining": ElectraDiscriminator, "ElectraForMaskedLM": ElectraGenerator,
                 "ElectraModel": ElectraEncoderModel}
CONFIG_FIELDS = dict(vocab_size="vocab_size", embedding_size="embedding_size", hidden_size="hidden_size",
                     num_layers="num_hidden_layers", num_heads="num_attention_heads",
                     intermediate_size="intermediate_size", max_position_embeddings="max_position_embeddings",
                     type_vocab_size="type_vocab_size", dropout_rate="hidden_dropout_prob",
                     attention_dropout_rate="attention_probs_dropout_prob", initializer_range="initializer_range",
                     layer_norm_eps="layer_norm_eps")


class HFFormatError(ValueError):
    """A HuggingFace directory this module cannot read; the message says what is missing."""


def _name_pairs(cfg: ModelConfig, head: str, prefix: str) -> list[tuple[tuple, str, bool]]:
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
    elif head == "generator":
        dense(("head", "dense"), "generator_predictions.dense")
        norm(("head", "LayerNorm"), "generator_predictions.LayerNorm")
        pairs.append((("head", "output_bias"), "generator_lm_head.bias", False))
    return pairs


def _head_of(module) -> tuple[str, str]:
    for arch, cls in ARCHITECTURES.items():
        if type(module) is cls:
            return arch, {"ElectraForPreTraining": "discriminator", "ElectraForMaskedLM": "generator"}.get(arch, "encoder")
    raise TypeError(f"hf.save takes an ElectraDiscriminator, ElectraGenerator or ElectraEncoderModel, not {type(module)}")


def _read_tensors(path: str) -> dict[str, np.ndarray]:
    safetensors_file = os.path.join(path, "model.safetensors")
    torch_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(safetensors_file):
        return load_file(safetensors_file)
    if os.path.isfile(torch_file):
        import torch
        return {k: v.float().numpy() for k, v in torch.load(torch_file, map_location="cpu", weights_only=True).items()}
    raise HFFormatError(f"{path} has neither model.safetensors nor pytorch_model.bin")


def read_config(path: str) -> tuple[ModelConfig, str]:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise HFFormatError(f"{path} has no config.json: not a HuggingFace model directory")
    with open(config_file) as f:
        hf = json.load(f)
    if hf.get("model_type") != "electra":
        raise HFFormatError(f"{config_file}: model_type is {hf.get('model_type')!r}, not 'electra'")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise HFFormatError(f"{config_file}: hidden_act {hf['hidden_act']!r} is not supported (only exact gelu)")
    defaults = dict(embedding_size=128, layer_norm_eps=1e-12, type_vocab_size=2, max_position_embeddings=512,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02)
    cfg = ModelConfig(**{ours: hf.get(theirs, defaults.get(theirs)) for ours, theirs in CONFIG_FIELDS.items()})
    arch = (hf.get("architectures") or ["ElectraModel"])[0]
    return cfg, arch if arch in ARCHITECTURES else "ElectraModel"


def load(path: str, architecture: str | None = None):
    """(module, params) from a HuggingFace ELECTRA directory; `architecture` overrides config.json's."""
    cfg, arch = read_config(path)
    arch = architecture or arch
    module = ARCHITECTURES[arch](cfg)
    tensors = _read_tensors(path)
    prefix = "electra." if any(k.startswith("electra.") for k in tensors) else ""
    params: dict = {}
    for ours, theirs, transpose in _name_pairs(cfg, _head_of(module)[1], prefix):
        if theirs not in tensors:
            raise HFFormatError(f"{path}: tensor {theirs} is missing (needed for {arch})")
        value = np.asarray(tensors[theirs], np.float32)
        node = params
        for key in ours[:-1]:
            node = node.setdefault(key, {})
        node[ours[-1]] = value.T if transpose else value
    return module, params


def save(module, params, path: str, tokenizer=None) -> None:
    """Write config.json, model.safetensors and (given a tokenizer) its files to `path`."""
    arch, head = _head_of(module)
    cfg = module.cfg
    prefix = "" if arch == "ElectraModel" else "electra."
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
