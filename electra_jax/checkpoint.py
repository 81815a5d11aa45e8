"""Orbax checkpoints: train state, grain iterator position and config, saved together.

Orbax writes each checkpoint under a temporary name and renames it when complete, so a process
killed mid-save leaves no checkpoint that looks finished; old checkpoints are deleted only after a
newer one is complete. A finished checkpoint that cannot be read (a truncated file, a missing item)
is moved aside to `corrupt-STEP-TIME` and the next older one is used, with a warning.
"""
from __future__ import annotations

import logging
import os
import time

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, keep: int | None = 3):  # None: keep all
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter=None, config: dict | None = None) -> None:
        items = dict(state=ocp.args.StandardSave(state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def reached_preemption(self, step: int) -> bool:
        """True on every host once any host was told to stop (multi-host runs; Cloud TPU maintenance)."""
        return jax.process_count() > 1 and self.manager.reached_preemption(step)

    def restore(self, abstract_state, data_iter=None, step: int | None = None):
        """Restore onto the shardings in `abstract_state` (jax.ShapeDtypeStruct leaves with .sharding):
        a checkpoint written on another mesh lands on this one."""
        step = self.latest_step() if step is None else step
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_latest_good(self, abstract_state, data_iter=None, move_aside: bool = True):
        """The newest checkpoint that reads back, or None. A training run moves unreadable ones
        aside (so it can resume and later save that step again); readers (export, fine-tuning) leave
        them where they are."""
        for step in sorted(self.manager.all_steps(read=True), reverse=True):
            try:
                state = self.restore(abstract_state, data_iter, step)
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                where = f"moved it to {self._move_aside(step)}" if move_aside else "left it in place"
                logging.warning("checkpoint step %d in %s is unreadable (%s: %s); %s and trying the previous one",
                                step, self.directory, type(e).__name__, str(e)[:300], where)
                continue
            logging.info("restored step %d from %s", step, self.directory)
            return state
        return None

    def _move_aside(self, step: int) -> str:
        aside = os.path.join(self.directory, f"corrupt-{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.replace(os.path.join(self.directory, str(step)), aside)
        self.manager.reload()
        return aside

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


EXPORT_FORMAT = "electra-jax-export"
EXPORT_PARTS = {  # exported part -> (subtrees of the pretraining parameters) for each objective
    "electra": {"discriminator": dict(embeddings="embeddings", encoder="discriminator", head="discriminator_head"),
                "generator": dict(embeddings="embeddings", encoder="generator", head="generator_head")},
    "mlm": {"encoder": dict(embeddings="embeddings", encoder="encoder", head="lm_head")},
}


def pretrained_networks(workdir: str, step: int | None = None) -> tuple[dict, object, dict]:
    """({part: (ModelConfig, params)}, tokenizer, info) from the latest good checkpoint of a
    pretraining run (or the one of `step`), restored onto one device. Each network's params are
    {embeddings, encoder, head}."""
    import flax.linen as nn
    from jax.sharding import NamedSharding, PartitionSpec

    from electra_jax.data.prepare import load_data_tokenizer, load_metadata
    from electra_jax.model import model_configs
    from electra_jax.train import build_training, init_train_state, load_run_config

    workdir = os.path.abspath(workdir)
    config = load_run_config(workdir)
    meta = load_metadata(config.data.dir)
    model, obj, _, _, tx = build_training(config, meta["vocab_size"], meta["special_ids"])
    abstract = jax.eval_shape(lambda r: init_train_state(model, tx, config.data.seq_length, obj.max_predictions, r),
                              jax.random.key(0))
    one_device = NamedSharding(jax.sharding.Mesh(jax.devices()[:1], ("d",)), PartitionSpec())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
                            nn.meta.unbox(abstract))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state = ckpt.restore(abstract, step=step) if step else ckpt.restore_latest_good(abstract, move_aside=False)
    ckpt.close()
    if state is None:
        raise FileNotFoundError(f"no readable checkpoint in {ckpt.directory}")
    disc_cfg, gen_cfg = model_configs(config, meta["vocab_size"])
    cfgs = dict(discriminator=disc_cfg, generator=gen_cfg, encoder=disc_cfg)
    networks = {part: (cfgs[part], {k: state.params[v] for k, v in names.items()})
                for part, names in EXPORT_PARTS[config.objective].items()}
    info = dict(step=int(state.step), objective=config.objective, seq_length=config.data.seq_length, source=workdir)
    return networks, load_data_tokenizer(meta), info


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
    config.json describing them; written under a temporary name, then renamed."""
    import dataclasses
    import json
    import shutil
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
