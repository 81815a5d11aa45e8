"""A run's workdir: one run at a time (a lock), and a resume that refuses to guess (the saved
config must agree with the new command on everything that shapes the state or the data order)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile

from flax.traverse_util import flatten_dict

from electra_jax.config import ConfigError, default_config

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Fields a resumed run may change: how long to train, how often to log, evaluate and save, and
# where and on what devices it runs (checkpoints restore onto any mesh). Anything else (the model,
# the objective, the batch, the seed, the data's shape) would silently make another run.
# fields a run may change when it resumes: they change neither the model nor its updates
RESUMABLE = ("train.num_steps", "train.grad_accum_steps", "model.remat", "train.log_every", "train.eval_every", "train.eval_steps",
             "train.checkpoint_every", "train.keep_checkpoints", "train.nonfinite", "data.dir", "data.worker_count",
             "mesh.", "axis_rules", "init.")


def check_writable_location(path: str) -> None:
    """Before any work: raise the OSError that writing `path` (a file or directory to be created)
    would meet later, with `path` as its filename: a file where a directory must be, a read-only
    filesystem, no permission, no space. Creates nothing that stays."""
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".electra-jax-probe-")
    except OSError as e:  # ENOENT from an existing directory: one that takes no new files (/proc)
        code = errno.EACCES if e.errno == errno.ENOENT else e.errno
        raise OSError(code, os.strerror(code), path) from None
    os.close(fd)
    os.remove(probe)


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir."""


@contextlib.contextmanager
def locked(workdir: str):
    """Hold WORKDIR/.lock (an flock, released by the kernel when the process dies, so a crash leaves
    no stale lock) for the run's life; a second run on the workdir stops at once, naming the holder."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise WorkdirBusy(f"{workdir} is in use by {holder}; wait for it to finish or use another --workdir")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def config_differences(saved: dict, new: dict) -> dict[str, tuple]:
    """{dotted field: (saved value, new value)} where they differ, other than RESUMABLE fields."""
    a, b, defaults = (flatten_dict(json.loads(json.dumps(c)), sep=".")  # tuples -> lists, as saved
                      for c in (saved, new, default_config("small").to_dict()))
    # a field added to the code after the run was saved had the reference's value (the "small"
    # defaults): that is what the run used
    a = {**{n: defaults[n] for n in b if n not in a and n in defaults}, **a}
    return {n: (a.get(n), b.get(n)) for n in sorted(set(a) | set(b))
            if a.get(n) != b.get(n) and not any(n == r or n.startswith(r) for r in RESUMABLE)}


def has_checkpoints(directory: str) -> bool:
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def checkpointed_config(workdir: str) -> dict | None:
    """The configuration stored inside the newest checkpoint that holds a readable one (each
    checkpoint saves its own); None when no checkpoint has one. WORKDIR/config.json is only a copy."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return None
    for step in sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True):
        try:
            with open(os.path.join(directory, str(step), "config", "metadata")) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict):
            return saved
    return None


def check_resume(workdir: str, config: dict) -> None:
    """Before anything is touched: a workdir with checkpoints resumes only the run it holds. The
    guard reads the configuration the checkpoints store, so a deleted or edited config.json cannot
    switch it off."""
    if not has_checkpoints(os.path.join(workdir, "checkpoints")):
        return
    saved = checkpointed_config(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    if saved is None and os.path.isfile(path):  # checkpoints written without their configuration
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} is unreadable ({e}); it describes the checkpoints there: restore it, or use "
                              f"another --workdir")
    if saved is None:
        return
    differ = config_differences(saved, config)
    if differ:
        shown = ", ".join(f"{n}: {old!r} -> {new!r}" for n, (old, new) in list(differ.items())[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise ConfigError(f"{workdir} holds checkpoints of another configuration ({shown}{more}); resume with its "
                          f"config, or start fresh with another --workdir")


def save_config(workdir: str, config: dict) -> None:
    """WORKDIR/config.json, written atomically (only once the run has a checkpoint it describes)."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(path + ".tmp", path)
