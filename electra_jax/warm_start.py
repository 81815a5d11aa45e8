"""Continue pretraining from HuggingFace ELECTRA checkpoints (config.init.hf_discriminator /
hf_generator).

`configure` copies the checkpoints' shapes into the config before anything is built, so the
saved run config describes the real model and resuming needs no HuggingFace directory.
`load_params` then replaces the random initialisation, placed on the train state's shardings.
The shared embedding block comes from the discriminator (in the released checkpoints the
generator's copy is the same tensor).
"""
from __future__ import annotations

import logging

import numpy as np

from electra_jax import hf
from electra_jax.config import ConfigError
from electra_jax.sharding import place_subtrees

SHARED_FIELDS = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size")
DISCRIMINATOR_FIELDS = SHARED_FIELDS + ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                                        "layer_norm_eps")


def enabled(config) -> bool:
    """Does this run start from HuggingFace checkpoints? (Run configs saved before `init` existed: no.)"""
    return bool(config.get("init") and config.init.hf_discriminator)


def configure(config) -> None:
    """Set config.model from the HuggingFace config.json files named in config.init (in place)."""
    init = config.get("init")
    if not enabled(config):
        if init and init.hf_generator:
            raise ConfigError("init.hf_generator is set without init.hf_discriminator; the shared embeddings "
                              "come from the discriminator, so give both")
        return
    if config.objective != "electra":
        raise ConfigError(f"init.hf_discriminator needs objective='electra', not {config.objective!r}")
    disc, *_ = hf.read_config(init.hf_discriminator)
    config.model.update({f: getattr(disc, f) for f in DISCRIMINATOR_FIELDS})
    if init.hf_generator:
        gen, *_ = hf.read_config(init.hf_generator)
        for field in SHARED_FIELDS:
            if getattr(gen, field) != getattr(disc, field):
                raise ConfigError(f"{init.hf_generator}: {field}={getattr(gen, field)} differs from the "
                                  f"discriminator's {getattr(disc, field)}; they must share one embedding block")
        if gen.num_layers != disc.num_layers:
            raise ConfigError(f"{init.hf_generator} has {gen.num_layers} layers and the discriminator "
                              f"{disc.num_layers}; the generator keeps the discriminator's depth")
        config.model.update(generator_hidden_size=gen.hidden_size, generator_num_heads=gen.num_heads,
                            generator_intermediate_size=gen.intermediate_size)


def check_vocabulary(config, data_vocab_size: int) -> None:
    if enabled(config) and config.model.vocab_size != data_vocab_size:
        raise ConfigError(f"{config.init.hf_discriminator} has a vocabulary of {config.model.vocab_size} but "
                          f"{config.data.dir} was tokenized with {data_vocab_size}; prepare the data with "
                          f"`electra-jax prepare --tokenizer {config.init.hf_discriminator}`")


def _pretrainer_params(config) -> dict:
    _, disc = hf.load(config.init.hf_discriminator, head="discriminator")
    params = dict(embeddings=disc["embeddings"], discriminator=disc["encoder"], discriminator_head=disc["head"])
    if config.init.hf_generator:
        _, gen = hf.load(config.init.hf_generator, head="generator")
        params.update(generator=gen["encoder"], generator_head=gen["head"])
        if not np.array_equal(gen["embeddings"]["word_embeddings"]["embedding"],
                              disc["embeddings"]["word_embeddings"]["embedding"]):
            logging.warning("the generator's word embeddings differ from the discriminator's; both networks "
                            "now share the discriminator's")
    return params


def load_params(config, state, shardings):
    """`state` with the HuggingFace weights in place of the initial ones (shapes checked per tensor)."""
    loaded = _pretrainer_params(config)
    params = place_subtrees(state.params, loaded, shardings.params, "the HuggingFace")
    logging.info("initialised %s from HuggingFace checkpoints", ", ".join(sorted(loaded)))
    return state.replace(params=params)
