"""Device mesh, shardings and multi-host initialisation (BUILD.md).

One code path for 1 device, N devices and N hosts: a 1-D ``'data'`` mesh over
all devices; batches are sharded along it, parameters are replicated. Each
process contributes its local rows of a global batch.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Join a multi-process run (``jax.distributed.initialize``) when configured.

    With an empty address and ``num_processes <= 1`` this is a no-op, so a
    single-process run needs no configuration. On CPU the collectives run over
    gloo.
    """
    if (not coordinator_address and num_processes <= 1) or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=num_processes or None,
        process_id=process_id if process_id >= 0 else None,
    )


def enable_compilation_cache(directory: str) -> None:
    """Keep compiled XLA programs in ``directory`` (JAX's persistent cache; '' leaves it off).

    Later runs, and later trainings of the same model in one run (poisoning fractions,
    zoo victims of another task), load the program instead of compiling it again; on
    CPU a DARTS train step takes ~30 s to compile. Programs compiled in under 0.5 s
    are not stored."""
    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", str(Path(directory).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def data_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, ordered by process."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(mesh: Mesh, local_rows) -> jax.Array:
    """Assemble a batch-sharded global array from this process's rows.

    Process p supplies rows [p·B/P, (p+1)·B/P) of the global batch.
    """
    sharding = batch_sharded(mesh)
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local_rows)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh; "
                         f"choose a multiple of {n} (e.g. --config.train.batch_size={(batch_size // n + 1) * n}).")


def is_main_process() -> bool:
    return jax.process_index() == 0
