"""The encoder a fine-tuning run starts from: a pretraining workdir, an electra-jax export, a
HuggingFace ELECTRA or BERT directory (e.g. a local copy of google/electra-small-discriminator or of
a BERT-family model such as all-MiniLM-L6-v2), or prepared data: its tokenizer alone, for an encoder
trained from scratch (a new language before any pretraining)."""
from __future__ import annotations

import os

import jax
import numpy as np

from electra_jax import hf
from electra_jax.config import default_config
from electra_jax.export import EXPORT_FORMAT, pretrained_networks
from electra_jax.data.corpus import read_json_file
from electra_jax.data.prepare import METADATA, load_data_tokenizer, load_metadata
from electra_jax.data.tokenizer import load_tokenizer
from electra_jax.inference import load_network
from electra_jax.model import model_configs

PREFERRED_PARTS = ("discriminator", "encoder")  # ELECTRA's discriminator, or the masked-LM baseline's encoder


def pretrained_seq_length(path: str) -> int | None:
    """The sequence length an export or a pretraining workdir was pretrained at (None when unknown:
    HuggingFace directories and prepared data do not say). Positions past it were never trained."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return None
    info = read_json_file(config_file)
    if info.get("format") == EXPORT_FORMAT:
        return info.get("seq_length")
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return info.get("data", {}).get("seq_length")
    return None


def load_encoder(path: str, scratch_size: str = "tiny"):
    """(ModelConfig, {"embeddings", "encoder"} params as numpy, tokenizer, description). From
    prepared data, params is None and the ModelConfig is the `scratch_size` encoder's."""
    if os.path.isfile(os.path.join(path, METADATA)):
        meta = load_metadata(path)
        cfg, _ = model_configs(default_config(scratch_size), meta["vocab_size"])
        return cfg, None, load_data_tokenizer(meta), f"no pretrained weights (a {scratch_size} encoder), tokenizer of {path}"
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"init={path}: no config.json there; give a pretraining workdir, an "
                                f"`electra-jax export` directory, a HuggingFace ELECTRA/BERT directory or "
                                f"prepared data (a tokenizer, for training from scratch)")
    info = read_json_file(config_file)
    if info.get("format") == EXPORT_FORMAT:
        part = next(p for p in PREFERRED_PARTS if p in info["parts"])
        module, params, tokenizer = load_network(path, part)
        cfg, description = module.cfg, f"{part} of {path}"
    elif os.path.isdir(os.path.join(path, "checkpoints")):  # a pretraining workdir
        networks, tokenizer, _ = pretrained_networks(path)
        part = next(p for p in PREFERRED_PARTS if p in networks)
        (cfg, params), description = networks[part], f"{part} of {path}"
    else:
        module, params = hf.load(path, head="encoder")
        cfg, tokenizer, description = module.cfg, load_tokenizer(path), f"HuggingFace {path}"
    params = jax.tree.map(np.asarray, {k: params[k] for k in ("embeddings", "encoder")})
    return cfg, params, tokenizer, description
