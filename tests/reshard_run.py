"""Save a train state under one mesh and restore it under others (run with 8 fake CPU devices)."""
import sys

import flax.linen as nn
import jax
import numpy as np

from electra_jax import sharding
from electra_jax.checkpoint import Checkpointer, abstract_like
from electra_jax.step import build_training, create_train_state
from sharded_run import SEQ, SPECIAL, VOCAB, config_for


def state_on(spec, directory=None, restore=False):
    config = config_for(spec)
    mesh = sharding.make_mesh(config, jax.devices()[:int(np.prod([int(x.split("=")[1]) for x in spec.split(",")]))])
    rules = sharding.axis_rules(config)
    training = build_training(config, VOCAB, SPECIAL)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        seed = 0 if not restore else 99  # a different init, so a restore that did nothing would show
        state, shardings = create_train_state(training, mesh, rules, SEQ, jax.random.key(seed))
        if restore:
            ckpt = Checkpointer(directory)
            state = ckpt.restore(abstract_like(state, shardings))
            ckpt.close()
    return state


def main(directory):
    saved = state_on("data=1,fsdp=8,tensor=1")
    assert len(saved.params["embeddings"]["word_embeddings"]["embedding"].sharding.device_set) == 8
    ckpt = Checkpointer(directory)
    ckpt.save(1, saved)
    ckpt.wait()
    ckpt.close()
    for spec in ("data=1,fsdp=1,tensor=1", "data=4,fsdp=1,tensor=1"):
        restored = state_on(spec, directory, restore=True)
        for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        n = int(spec.split(",")[0].split("=")[1])
        assert len(restored.params["discriminator"]["layer_0"]["intermediate"]["kernel"].sharding.device_set) == n
    print("RESHARD OK")


if __name__ == "__main__":
    main(sys.argv[1])
