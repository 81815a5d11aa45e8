"""Orbax checkpoints: train state, grain iterator position and config, saved together.

Orbax writes each checkpoint under a temporary name and renames it when complete, so a process
killed mid-save leaves no checkpoint that looks finished; old checkpoints are deleted only after a
newer one is complete. A finished checkpoint that cannot be read (a truncated file, a missing item)
is moved aside to `corrupt-STEP-TIME` and the next older one is used, with a warning.
"""
from __future__ import annotations

import logging
import os
import shutil
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

    def restore(self, abstract_state, data_iter=None, step: int | None = None, partial: bool = False):
        """Restore onto the shardings in `abstract_state` (jax.ShapeDtypeStruct leaves with .sharding):
        a checkpoint written on another mesh lands on this one. partial: `abstract_state` is a dict of
        some of the state's fields (e.g. step and params, without the optimizer state), read alone."""
        step = self.latest_step() if step is None else step
        if partial:
            restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
            items = dict(state=ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args, partial_restore=True))
        else:
            items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_latest_good(self, abstract_state, data_iter=None, move_aside: bool = True, partial: bool = False):
        """The newest checkpoint that reads back, or None. A training run moves unreadable ones
        aside (so it can resume and later save that step again); readers (export, fine-tuning) leave
        them where they are."""
        self.manager.reload()  # steps another process may have written since this manager was opened
        tried = False
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore(abstract_state, data_iter, step, partial)
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                where = f"moved it to {self._move_aside(step)}" if move_aside else "left it in place"
                reason = (str(e).strip().splitlines() or [""])[0][:120]
                logging.warning("checkpoint step %d in %s is unreadable (%s: %s); %s, trying the previous one",
                                step, self.directory, type(e).__name__, reason, where)
                tried = True
                continue
            logging.info("restored step %d from %s", step, self.directory)
            return state
        if tried:
            logging.warning("no readable checkpoint in %s: starting from scratch", self.directory)
        return None

    def _move_aside(self, step: int) -> str:
        aside = os.path.join(self.directory, f"corrupt-{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.replace(os.path.join(self.directory, str(step)), aside)
        self.manager.reload()
        return aside

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def remove_abandoned_saves(self) -> list[str]:
        """Delete the temporary directories of saves a killed process never finished (Orbax
        writes each save under a `*.orbax-checkpoint-tmp*` name and renames it when complete);
        call with no save in flight. Returns what was removed."""
        if jax.process_index() != 0 or not os.path.isdir(self.directory):
            return []
        abandoned = [os.path.join(self.directory, n) for n in os.listdir(self.directory)
                     if ".orbax-checkpoint-tmp" in n]
        for path in abandoned:
            shutil.rmtree(path, ignore_errors=True)
            logging.info("removed %s, left by a save that never finished", path)
        return abandoned

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
