"""Device mesh from the config, logical-axis rules, and the shardings of parameters and batches.

Mesh axes are (data, fsdp, tensor). The model names its parameter axes ("embed", "mlp", ...); the
config's `axis_rules` say which mesh axis each name is split over. The batch is split over
(data, fsdp), so FSDP is data parallel for activations and sharded for parameters.
"""
from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import jax
import numpy as np
import flax.linen as nn
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from electra_jax.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
    """Resolve the -1 axis (at most one) so the product equals the device count."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ConfigError(f"mesh: only one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh: axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes ({known}) do not divide "
                              f"the {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
                          f"{num_devices} are available; make the product of mesh.data, mesh.fsdp and "
                          f"mesh.tensor equal {num_devices} (or set one of them to -1)")
    return tuple(sizes)


def make_mesh(config, devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(config.mesh, len(devices))
    num_slices = int(config.mesh.get("num_slices", 1))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if num_slices > 1:  # multi-slice TPU: data parallel across slices over DCN, the rest inside a slice
        if shape[0] % num_slices:
            raise ConfigError(f"mesh.data={shape[0]} must be a multiple of mesh.num_slices={num_slices}")
        ici = (shape[0] // num_slices, shape[1], shape[2])
        grid = mesh_utils.create_hybrid_device_mesh(ici, (num_slices, 1, 1), devices)
        return Mesh(grid, MESH_AXES, axis_types=axis_types)
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)


def axis_rules(config) -> tuple:
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
                 for name, axes in config.axis_rules)


def logical_shardings(boxed_tree, mesh: Mesh, rules):
    """NamedShardings for a tree whose leaves are nn.Partitioned boxes (or unannotated arrays)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


class ShardedInit(NamedTuple):
    init: Any          # rng -> the tree, unboxed and created directly on `shardings` (jitted, lazy)
    shardings: Any     # NamedSharding per leaf, from the logical axis names
    abstract: Any      # ShapeDtypeStruct per leaf (unboxed): nothing allocated


def sharded_init(init_fn, mesh: Mesh, rules) -> ShardedInit:
    """Plan the initialisation of init_fn(rng), a tree of logically annotated arrays, on the mesh:
    every dimension is checked against its mesh axes first, and each array is later created on its
    own devices (never gathered on one device first)."""
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    check_divisible(abstract, mesh, rules)
    shardings = logical_shardings(abstract, mesh, rules)
    init = jax.jit(lambda rng: nn.meta.unbox(init_fn(rng)), out_shardings=shardings)
    return ShardedInit(init, shardings, strip_axis_names(abstract))


def strip_axis_names(boxed_tree):
    """The values inside nn.Partitioned boxes, with no sharding constraint applied (works on
    abstract values and outside a mesh, unlike nn.meta.unbox)."""
    is_box = lambda x: isinstance(x, nn.Partitioned)
    return jax.tree.map(lambda x: x.value if is_box(x) else x, boxed_tree, is_leaf=is_box)


def check_divisible(boxed_tree, mesh: Mesh, rules) -> None:
    """Every parameter dimension must split evenly over its mesh axes; say which one does not."""
    boxes = jax.tree_util.tree_leaves_with_path(boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    for path, box in boxes:
        if not isinstance(box, nn.Partitioned):
            continue
        spec = nn.logical_to_mesh_axes(box.names, rules)
        for dim, axes in zip(box.value.shape, tuple(spec)):
            axes = (axes,) if isinstance(axes, str) else (axes or ())
            size = math.prod(mesh.shape[a] for a in axes)
            if dim % size:
                name = "/".join(str(getattr(k, "key", k)) for k in path)
                raise ConfigError(f"parameter {name} has a dimension of {dim}, not divisible by mesh axes "
                                  f"{axes} of size {size}; change the mesh or the model size")


def place_subtrees(params: dict, loaded: dict, shardings: dict, source: str) -> dict:
    """`params` with the top-level subtrees in `loaded` (host arrays) replaced, each tensor's path
    and shape checked against the model's and placed on its sharding. `source` names the origin in
    errors."""
    params = dict(params)
    for name, subtree in loaded.items():
        expected = dict(jax.tree_util.tree_flatten_with_path(params[name])[0])
        got = dict(jax.tree_util.tree_flatten_with_path(subtree)[0])
        if expected.keys() != got.keys():
            raise ConfigError(f"{source} {name} does not have this model's tensors: "
                              f"{sorted(map(jax.tree_util.keystr, expected.keys() ^ got.keys()))}")
        for path, want in expected.items():
            if want.shape != got[path].shape:
                raise ConfigError(f"{source} {name}{jax.tree_util.keystr(path)}: shape {got[path].shape}, "
                                  f"the model's {want.shape}")
        params[name] = jax.device_put(jax.tree.map(lambda x, w: np.asarray(x, w.dtype), subtree, params[name]),
                                      shardings[name])
    return params


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(name: str, size: int, mesh) -> None:
    """The one batch rule: a global batch splits evenly over the data-parallel devices (data x fsdp;
    tensor-parallel devices share their batch) and over the processes that each read their share."""
    dp, processes = data_parallel_size(mesh), jax.process_count()
    if size <= 0 or size % dp or size % processes:
        raise ConfigError(f"{name}={size} must be a positive multiple of the data-parallel size {dp} "
                          f"(mesh.data x mesh.fsdp)" + (f" and of the {processes} processes" if processes > 1 else ""))


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """Assemble the global batch from each process's slice (no cross-host transfer)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> None:
    """Multi-host setup. Cloud TPU and SLURM are detected by jax itself; elsewhere pass the
    coordinator address, process count and id (flags or ELECTRA_COORDINATOR/..._NUM_PROCESSES/..._PROCESS_ID)."""
    coordinator = coordinator or os.environ.get("ELECTRA_COORDINATOR")
    if num_processes is None and "ELECTRA_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["ELECTRA_NUM_PROCESSES"])
    if process_id is None and "ELECTRA_PROCESS_ID" in os.environ:
        process_id = int(os.environ["ELECTRA_PROCESS_ID"])
    if coordinator:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    elif auto or any(v in os.environ for v in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")):
        jax.distributed.initialize()
