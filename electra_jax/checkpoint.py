"""Orbax checkpoints of the train state together with the grain iterator position."""
from __future__ import annotations

import logging
import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter=None) -> None:
        items = dict(state=ocp.args.StandardSave(state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, abstract_state, data_iter=None, step: int | None = None):
        """Restore onto the shardings in `abstract_state` (a tree of jax.ShapeDtypeStruct with
        .sharding): a checkpoint written on another mesh lands on this one."""
        step = self.latest_step() if step is None else step
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
