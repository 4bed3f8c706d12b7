"""Device mesh and shardings: batches split over all devices, params optionally sharded (FSDP) over `fsdp_devices`."""

from collections.abc import Iterator
import contextlib
import logging
import os

import jax
import numpy as np

logger = logging.getLogger(__name__)

BATCH_AXIS = "batch"
FSDP_AXIS = "fsdp"
# Batches are split over both mesh axes, i.e. over every device.
DATA_AXIS = (BATCH_AXIS, FSDP_AXIS)

# The mesh `activation_sharding_constraint` lays activations out on (set by `set_mesh`).
_active_mesh: jax.sharding.Mesh | None = None


def make_mesh(num_fsdp_devices: int) -> jax.sharding.Mesh:
    """A (batch, fsdp) mesh over all devices of all processes; params are sharded along `fsdp`."""
    devices = jax.devices()
    if num_fsdp_devices < 1 or len(devices) % num_fsdp_devices:
        raise ValueError(f"fsdp_devices: expected a divisor of the device count {len(devices)}, got {num_fsdp_devices}")
    shape = (len(devices) // num_fsdp_devices, num_fsdp_devices)
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), (BATCH_AXIS, FSDP_AXIS))


def data_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Leading (batch) axis split over every device."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


@contextlib.contextmanager
def set_mesh(mesh: jax.sharding.Mesh) -> Iterator[None]:
    """Makes `activation_sharding_constraint` lay activations out on `mesh` inside the block (not nestable)."""
    global _active_mesh
    if _active_mesh is not None:
        raise ValueError("set_mesh: a mesh is already set; set_mesh blocks cannot be nested")
    _active_mesh = mesh
    try:
        yield
    finally:
        _active_mesh = None


def activation_sharding_constraint(pytree):
    """Constrains every array of `pytree` to be split along its leading (batch) axis over the mesh of `set_mesh`;
    without one, returns `pytree` unchanged."""
    if _active_mesh is None:
        return pytree
    return jax.lax.with_sharding_constraint(pytree, data_sharding(_active_mesh))


def fsdp_sharding(
    tree,
    mesh: jax.sharding.Mesh,
    *,
    min_size_bytes: int = 4 * 2**20,
    min_size_mbytes: float | None = None,
    log: bool = False,
):
    """Shardings for a pytree of arrays (or shape structs): each array of at least `min_size_bytes` (or, the
    original's unit, `min_size_mbytes` MiB) is split along its largest axis divisible by the fsdp size; everything
    else (and all of it without FSDP) is replicated. `log` logs the choice for every array that is large enough."""
    fsdp_size = mesh.shape[FSDP_AXIS]
    if min_size_mbytes is not None:
        min_size_bytes = int(min_size_mbytes * 2**20)

    def choose(path, leaf) -> jax.sharding.NamedSharding:
        shape = getattr(leaf, "shape", ())
        if fsdp_size == 1 or not shape or np.prod(shape) * np.dtype(leaf.dtype).itemsize < min_size_bytes:
            return replicated(mesh)
        for axis in np.argsort(shape)[::-1]:
            if shape[axis] % fsdp_size == 0:
                spec = [None] * len(shape)
                spec[axis] = FSDP_AXIS
                if log:
                    logger.info("Sharding %s %s along axis %d", jax.tree_util.keystr(path), shape, axis)
                return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        if log:
            logger.warning("Replicating %s %s: no axis divisible by %d", jax.tree_util.keystr(path), shape, fsdp_size)
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(choose, tree)


def initialize_distributed() -> bool:
    """Joins a multi-process (multi-node) run when the environment describes one; returns whether it did.

    Explicit: `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`.
    SLURM: inside an `srun` step with more than one task, everything is read from the SLURM variables.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        missing = [name for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if name not in os.environ]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set, so {', '.join(missing)} must be set too")
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ:
        jax.distributed.initialize()
        return True
    return False


def sync_processes(name: str) -> None:
    """Waits until every process of a multi-process run reaches the barrier `name`; a no-op in a single process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
