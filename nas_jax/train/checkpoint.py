"""Orbax checkpoints of the training state; the only module that imports orbax.

The state is stored as one flat vector per dtype plus a JSON layout (every
leaf's path, shape and dtype): orbax pays a few milliseconds per array, and a
DARTS state has hundreds of small ones, so this makes an epoch-end save cost
milliseconds instead of seconds. Writes are atomic (orbax writes to a
temporary directory and renames it), so a run killed at any moment leaves the
previous checkpoint intact. Restoring compares the stored layout with the
requested one first and refuses any difference: a checkpoint is never loaded
partially (DESIGN "Victim zoo").
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """The stored checkpoint does not have the structure or shapes requested."""


def layout(tree) -> list[list]:
    """[[path, shape, dtype], ...] of every leaf, in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [[jax.tree_util.keystr(p), list(np.shape(x)), str(np.dtype(x.dtype))] for p, x in flat]


def _pack(tree) -> dict[str, np.ndarray]:
    """One contiguous vector per dtype, leaves in flattening order."""
    groups: dict[str, list[np.ndarray]] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        # Replicated state: this process's first shard is the whole value (multi-host safe).
        leaf = np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
        groups.setdefault(str(leaf.dtype), []).append(leaf.reshape(-1))
    return {dtype: np.concatenate(parts) for dtype, parts in groups.items()}


def _unpack(vectors: dict[str, np.ndarray], template):
    offsets = dict.fromkeys(vectors, 0)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for leaf in leaves:
        dtype, size = str(np.dtype(leaf.dtype)), int(np.prod(np.shape(leaf)))
        start = offsets[dtype]
        out.append(np.asarray(vectors[dtype][start : start + size]).reshape(np.shape(leaf)))
        offsets[dtype] = start + size
    restored = jax.tree_util.tree_unflatten(treedef, out)
    shardings = jax.tree_util.tree_map(lambda x: getattr(x, "sharding", None), template)
    return jax.tree_util.tree_map(lambda x, s: jax.device_put(x, s) if s is not None else x, restored, shardings)


def _describe_mismatch(stored: list, wanted: list) -> str:
    s, w = {p: (shape, d) for p, shape, d in stored}, {p: (shape, d) for p, shape, d in wanted}
    missing, extra = sorted(set(w) - set(s))[:5], sorted(set(s) - set(w))[:5]
    changed = [(k, s[k], w[k]) for k in sorted(set(s) & set(w)) if s[k] != w[k]][:5]
    return f"missing {missing}, unexpected {extra}, (stored, requested) differences {changed}"


class Checkpointer:
    """Keeps the last ``max_to_keep`` checkpoints of one run in ``directory``."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
            item_names=("vectors", "layout"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state) -> None:
        args = ocp.args.Composite(vectors=ocp.args.StandardSave(_pack(state)),
                                  layout=ocp.args.JsonSave(layout(state)))
        self._manager.save(step, args=args, force=True)

    def restore(self, template, step: int | None = None):
        """Restore into the structure, shapes, dtypes and shardings of ``template``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        stored = self._manager.restore(step, args=ocp.args.Composite(layout=ocp.args.JsonRestore()))["layout"]
        wanted = layout(template)
        if stored != wanted:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} does not match the requested model: "
                f"{_describe_mismatch(stored, wanted)}. It was written for another architecture or config; "
                "use another zoo directory/preset, or delete it to retrain."
            )
        vectors = self._manager.restore(step, args=ocp.args.Composite(vectors=ocp.args.StandardRestore()))["vectors"]
        return _unpack(vectors, template)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
