"""Export: the pretrained networks of a pretraining run alone (no optimizer state), with their
configs and tokenizer, in the layout fine-tuning, inference and HuggingFace conversion read.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from electra_jax.checkpoint import Checkpointer
from electra_jax.config import max_predictions
from electra_jax.data.prepare import load_data_tokenizer, load_metadata
from electra_jax.model import model_configs, network_params
from electra_jax.sharding import strip_axis_names
from electra_jax.step import build_model, init_params
from electra_jax.train import load_run_config


EXPORT_FORMAT = "electra-jax-export"


def pretrained_networks(workdir: str, step: int | None = None) -> tuple[dict, object, dict]:
    """({part: (ModelConfig, params)}, tokenizer, info) from the latest good checkpoint of a
    pretraining run (or the one of `step`), restored onto one device. Each network's params are
    {embeddings, encoder, head}."""
    workdir = os.path.abspath(workdir)
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"no readable checkpoint in {workdir}: it holds no pretraining run (no config.json, "
                                f"which a run writes with its first checkpoint)")
    config = load_run_config(workdir)
    meta = load_metadata(config.data.dir)
    # the parameters alone: no optimizer is built, its state is not read
    model = build_model(config, meta["vocab_size"])
    params = jax.eval_shape(functools.partial(init_params, model, config.data.seq_length, max_predictions(config)),
                            jax.random.key(0))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            dict(step=jax.ShapeDtypeStruct((), jnp.int32), params=strip_axis_names(params)))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    if step:
        state = ckpt.restore(abstract, step=step, partial=True)
    else:
        state = ckpt.restore_latest_good(abstract, move_aside=False, partial=True)
    ckpt.close()
    if state is None:
        raise FileNotFoundError(f"no readable checkpoint in {ckpt.directory}")
    networks = standalone_networks(config, meta["vocab_size"], state["params"])
    info = dict(step=int(state["step"]), objective=config.objective, seq_length=config.data.seq_length, source=workdir)
    return networks, load_data_tokenizer(meta), info


def standalone_networks(config, vocab_size: int, params: dict) -> dict:
    """{part: (ModelConfig, params)} of a pretraining config's (unboxed) parameters."""
    disc_cfg, gen_cfg = model_configs(config, vocab_size)
    cfgs = dict(discriminator=disc_cfg, generator=gen_cfg, encoder=disc_cfg)
    return {part: (cfgs[part], p) for part, p in network_params(params, config.objective).items()}


def export_random(config, out: str, seed: int) -> dict:
    """An export of `config`'s networks with freshly initialised weights (the no-pretraining
    baseline), with the tokenizer of its prepared data."""
    meta = load_metadata(config.data.dir)
    model = build_model(config, meta["vocab_size"])
    params = strip_axis_names(init_params(model, config.data.seq_length, max_predictions(config),
                                          jax.random.key(seed)))
    return write_export(out, standalone_networks(config, meta["vocab_size"], params), load_data_tokenizer(meta),
                        step=0, objective=config.objective, seq_length=config.data.seq_length,
                        source=f"random weights, seed {seed}")


def export(workdir: str, out: str, step: int | None = None) -> dict:
    """Write the pretrained networks alone (no optimizer state) with config and tokenizer:
    OUT/{discriminator,generator}/ (or OUT/encoder/ for the masked-LM baseline), OUT/config.json,
    OUT/tokenizer.model (or vocab.txt). Each network is {embeddings, encoder, head}."""
    if os.path.exists(out):
        raise FileExistsError(f"export target {os.path.abspath(out)} already exists")
    networks, tokenizer, info = pretrained_networks(workdir, step)
    return write_export(out, networks, tokenizer, **info)


def write_export(out: str, networks: dict, tokenizer, **info) -> dict:
    """OUT/PART/ (orbax, {embeddings, encoder, head}) for each network, the tokenizer file and
    config.json describing them; written under a temporary name, then renamed. Always float32
    weights and compute: a model trained in mixed precision exports its float32 master weights,
    and whoever loads it chooses the compute dtype."""
    networks = {part: (cfg.replace(dtype="float32", param_dtype="float32"),
                       jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params))
                for part, (cfg, params) in networks.items()}
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise FileExistsError(f"export target {out} already exists")
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    saver = ocp.StandardCheckpointer()
    for part, (_, params) in networks.items():
        saver.save(os.path.join(tmp, part), params)
    saver.wait_until_finished()
    shutil.copyfile(tokenizer.path, os.path.join(tmp, tokenizer.file_name))
    info = dict(format=EXPORT_FORMAT, parts=sorted(networks),
                networks={part: dataclasses.asdict(cfg) for part, (cfg, _) in networks.items()},
                tokenizer=tokenizer.file_name, tokenizer_lowercase=getattr(tokenizer, "lowercase", None),
                special_ids=tokenizer.special_ids, **info)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, out)
    return info
