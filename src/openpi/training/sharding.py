"""Device mesh and shardings: batches split over all devices, params optionally sharded (FSDP) over `fsdp_devices`."""

import os

import jax
import numpy as np

BATCH_AXIS = "batch"
FSDP_AXIS = "fsdp"
# Batches are split over both mesh axes, i.e. over every device.
DATA_AXIS = (BATCH_AXIS, FSDP_AXIS)


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


def fsdp_sharding(tree, mesh: jax.sharding.Mesh, *, min_size_bytes: int = 4 * 2**20):
    """Shardings for a pytree of arrays (or shape structs): each array of at least `min_size_bytes` is split
    along its largest axis divisible by the fsdp size; everything else (and all of it without FSDP) is
    replicated."""
    fsdp_size = mesh.shape[FSDP_AXIS]

    def choose(leaf) -> jax.sharding.NamedSharding:
        shape = getattr(leaf, "shape", ())
        if fsdp_size == 1 or not shape or np.prod(shape) * np.dtype(leaf.dtype).itemsize < min_size_bytes:
            return replicated(mesh)
        for axis in np.argsort(shape)[::-1]:
            if shape[axis] % fsdp_size == 0:
                spec = [None] * len(shape)
                spec[axis] = FSDP_AXIS
                return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        return replicated(mesh)

    return jax.tree.map(choose, tree)


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
