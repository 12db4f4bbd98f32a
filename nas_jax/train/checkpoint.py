"""Orbax checkpoints of the training state; the only module that imports orbax.

Writes are atomic (orbax writes to a temporary directory and renames it), so a
run killed at any moment leaves the previous checkpoint intact. Restoring
checks the stored tree against the requested one first and refuses any
mismatch: a checkpoint is never loaded partially (DESIGN "Victim zoo").
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """The stored checkpoint does not have the structure or shapes requested."""


def _describe(tree) -> dict[str, tuple]:
    """Flatten a pytree (arrays or metadata) to {path: shape}."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): tuple(getattr(leaf, "shape", np.shape(leaf))) for path, leaf in flat}


class Checkpointer:
    """Keeps the last ``max_to_keep`` checkpoints of one run in ``directory``."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, template, step: int | None = None):
        """Restore into the structure, shapes and shardings of ``template``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        stored = _describe(self._manager.item_metadata(step))
        wanted = _describe(template)
        if stored != wanted:
            missing = sorted(set(wanted) - set(stored))[:5]
            extra = sorted(set(stored) - set(wanted))[:5]
            shapes = sorted(k for k in set(stored) & set(wanted) if stored[k] != wanted[k])[:5]
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} does not match the requested model: "
                f"missing {missing}, unexpected {extra}, shape differences "
                f"{[(k, stored[k], wanted[k]) for k in shapes]}. It was written for another architecture or "
                "config; use another zoo directory/preset or delete it to retrain."
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()
