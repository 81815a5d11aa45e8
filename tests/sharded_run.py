"""Runs a few train steps of a tiny ELECTRA on given meshes and prints losses and parameters.

Used by test_sharding.py in subprocesses, because the number of (fake) CPU devices and the
multi-process setup must be fixed before jax starts.
    python sharded_run.py OUT.npz MESH [MESH ...]          MESH like data=2,fsdp=2,tensor=2[,accum=4]
                                                           (accum: train.grad_accum_steps)
    ... --recipe small_budget                                       a recipe of config.RECIPES
    ... --coordinator HOST:PORT --num_processes N --process_id I   for a multi-process run
"""
import argparse
import json

import flax.linen as nn
import jax
import jax.experimental.multihost_utils
import numpy as np

from electra_jax import sharding
from electra_jax.config import apply_overrides, default_config
from electra_jax.step import build_training, create_train_state, make_train_step

VOCAB, SEQ, BATCH, STEPS = 256, 32, 16, 3
SPECIAL = dict(pad=0, unk=1, cls=2, sep=3, mask=4)


def config_for(mesh: str, recipe: str = "reference"):
    c = default_config("tiny", recipe)
    c.model.update(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128, embedding_size=32,
                   generator_fraction=0.5)
    c.data.update(dir="/unused", seq_length=SEQ)
    c.train.update(batch_size=BATCH, num_steps=10, warmup_steps=2, learning_rate=1e-2)
    for item in mesh.split(","):
        name, size = item.split("=")
        if name == "accum":
            c.train.grad_accum_steps = int(size)
        else:
            c.mesh[name] = int(size)
    return c


def global_batches():
    rs = np.random.RandomState(0)
    for _ in range(STEPS):
        ids = rs.randint(5, VOCAB, size=(BATCH, SEQ)).astype(np.int32)
        lengths = rs.randint(SEQ // 2, SEQ + 1, size=BATCH)
        ids[:, 0] = SPECIAL["cls"]
        ids[np.arange(BATCH), lengths - 1] = SPECIAL["sep"]
        mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
        yield dict(input_ids=ids * mask, attention_mask=mask, token_type_ids=np.zeros_like(ids))


def run(mesh_spec: str, devices, recipe: str = "reference", overrides=()):
    """(losses, parameters) after STEPS updates; `overrides`: ("section.field", value) pairs."""
    config = config_for(mesh_spec, recipe)
    apply_overrides(config, overrides)
    mesh = sharding.make_mesh(config, devices)
    rules = sharding.axis_rules(config)
    training = build_training(config, VOCAB, SPECIAL)
    n, i = jax.process_count(), jax.process_index()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, shardings = create_train_state(training, mesh, rules, SEQ, jax.random.key(0))
        step = make_train_step(training, shardings, mesh)
        losses = []
        for batch in global_batches():
            local = {k: v[i * BATCH // n:(i + 1) * BATCH // n] for k, v in batch.items()}
            state, metrics = step(state, sharding.global_batch(local, sharding.batch_sharding(mesh)),
                                  jax.random.key(1))
            losses.append(float(metrics["loss"]))
        params = jax.tree.map(lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True)),
                              state.params)
    return losses, params


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("meshes", nargs="+")
    p.add_argument("--coordinator")
    p.add_argument("--num_processes", type=int)
    p.add_argument("--process_id", type=int)
    p.add_argument("--recipe", default="reference")
    p.add_argument("--memory", help="instead: per-device bytes of an electra config's train state, as JSON")
    a = p.parse_args()
    if a.coordinator:
        jax.distributed.initialize(a.coordinator, num_processes=a.num_processes, process_id=a.process_id)
    if a.memory:
        from electra_jax.step import train_state_bytes
        out = {}
        for spec in a.meshes:
            config = default_config(a.memory)
            config.data.dir = "/unused"
            config.mesh.update({k: int(v) for k, v in (x.split("=") for x in spec.split(","))})
            out[spec] = train_state_bytes(config, 30522, jax.devices())
        with open(a.out, "w") as f:
            json.dump(out, f)
        return
    results = {}
    for spec in a.meshes:
        size = int(np.prod([int(x.split("=")[1]) for x in spec.split(",") if not x.startswith("accum=")]))
        losses, params = run(spec, jax.devices()[:size], a.recipe)
        results[f"{spec}/losses"] = np.array(losses)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            results[f"{spec}/{jax.tree_util.keystr(path)}"] = leaf
    if jax.process_index() == 0:
        np.savez(a.out, **results)


if __name__ == "__main__":
    main()
