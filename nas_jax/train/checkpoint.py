"""Orbax checkpoints of a run's state; the only module that imports orbax.

A checkpoint is a plain orbax pytree (item ``state``: step, variables, optimiser state, and a space network's
``fixed`` genotype; docs/provenance.md shows how to restore it with orbax alone) plus JSON items ``layout``
(every leaf's path, shape and dtype) and ``progress`` (a mid-epoch checkpoint's running sums). Writes are atomic
and run in the background; a failed write is reported at the next save or at :meth:`Checkpointer.close`, which a
finished run calls before it records anything. Restoring refuses a layout that differs (never a partial load); an unreadable checkpoint raises
:class:`CheckpointCorruptError` and the loop falls back to the previous one; the earlier packed format is refused
with the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from nas_jax import parallel
from nas_jax.errors import UserError

ORBAX_TEMPORARY = ".orbax-checkpoint-tmp"  # orbax writes step N to "N.orbax-checkpoint-tmp-*", then renames it
PACKED_ITEM = "vectors"  # the item of the earlier packed format


class CheckpointMismatchError(UserError):
    """The stored checkpoint does not have the structure or shapes requested."""


class CheckpointCorruptError(UserError):
    """A stored checkpoint cannot be read."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk, no permission)."""


def layout(tree) -> list[list]:
    """[[path, shape, dtype], ...] of every leaf, in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [[jax.tree_util.keystr(p), list(np.shape(x)), str(np.dtype(x.dtype))] for p, x in flat]


def host_copy(tree):
    """The tree as host numpy copies, which a background write may read while training goes on (a view of a
    device buffer could be donated and overwritten). Replicated state: this process's first shard is the whole
    value (multi-host safe)."""
    return jax.tree_util.tree_map(lambda x: np.array(x.addressable_data(0) if isinstance(x, jax.Array) else x), tree)


def _as_stored(tree):
    """What orbax writes for ``tree``: a dataclass state as the dict of its fields, an empty one left out
    (checkpoints written before the train state had ``fixed`` variables have no such entry); any other tree
    as it is."""
    if not dataclasses.is_dataclass(tree):
        return tree
    fields = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    return {k: v for k, v in fields.items() if not (isinstance(v, dict) and not v)}


def _describe_mismatch(stored: list, wanted: list) -> str:
    s, w = {p: (shape, d) for p, shape, d in stored}, {p: (shape, d) for p, shape, d in wanted}
    missing, extra = sorted(set(w) - set(s))[:5], sorted(set(s) - set(w))[:5]
    changed = [(k, s[k], w[k]) for k in sorted(set(s) & set(w)) if s[k] != w[k]][:5]
    return f"missing {missing}, unexpected {extra}, (stored, requested) differences {changed}"


class Checkpointer:
    """Keeps the last ``max_to_keep`` checkpoints of one run in ``directory``. A writer removes the temporary
    directories of saves that a kill or a full disk cut short; ``read_only`` opens a finished run without
    writing anything (a read-only zoo)."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2, read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self.read_only = read_only
        if not read_only and self.directory.is_dir() and jax.process_index() == 0:
            for tmp in self.directory.glob(f"*{ORBAX_TEMPORARY}*"):  # saves cut short by a kill or a full disk
                shutil.rmtree(tmp, ignore_errors=True)
        self._manager = self._open()
        self._writing: int | None = None  # the step whose background write has not been waited for

    def _open(self) -> ocp.CheckpointManager:
        writer = not self.read_only
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=writer,
                                                 enable_async_checkpointing=writer),
            item_names=("state", "layout", "progress"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The stored steps, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, progress: dict | None = None) -> None:
        """Start saving ``state`` at ``step``, with an optional JSON-able ``progress`` dict (see
        :meth:`restore_progress`); the previous save is finished (and its failure reported) first."""
        self.wait()
        args = ocp.args.Composite(state=ocp.args.StandardSave(host_copy(_as_stored(state))),
                                  layout=ocp.args.JsonSave(layout(state)),
                                  progress=ocp.args.JsonSave(progress or {}))
        self._writing = step
        with self._reporting_failure():
            self._manager.save(step, args=args, force=True)

    def wait(self) -> None:
        """Block until the background write (if any) is on disk; CheckpointWriteError if it failed."""
        if self._writing is not None:
            with self._reporting_failure():
                self._manager.wait_until_finished()
            self._writing = None

    @contextlib.contextmanager
    def _reporting_failure(self):
        logging.disable(logging.ERROR)  # orbax logs a failed write's traceback; the error below says it once
        try:
            yield
        except Exception as e:  # orbax/tensorstore wrap OSErrors (a full disk) in many types
            step, self._writing = self._writing, None
            self._remove_temporary(step)
            raise CheckpointWriteError(
                f"could not write checkpoint {self.directory}/{step} ({type(e).__name__}: {str(e)[:200]}). The "
                "earlier checkpoints are intact; free disk space (or fix the permissions) and run the same "
                "command again: the run resumes from its last checkpoint.") from e
        finally:
            logging.disable(logging.NOTSET)

    def _remove_temporary(self, step: int) -> None:
        """Delete what a failed save of ``step`` left (orbax's temporary directory, a partial step folder)."""
        if jax.process_index() != 0:
            return
        for p in self.directory.glob(f"{step}{ORBAX_TEMPORARY}*"):
            shutil.rmtree(p, ignore_errors=True)
        if (self.directory / str(step)).exists() and step not in self._manager.all_steps():
            shutil.rmtree(self.directory / str(step), ignore_errors=True)

    def _read(self, step: int, **items):
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax/tensorstore/json raise many types for a damaged directory
            raise CheckpointCorruptError(
                f"checkpoint {self.directory}/{step} cannot be read ({type(e).__name__}: {str(e)[:200]}). It is "
                f"damaged (a full disk, a copy cut short, a deleted file). Delete {self.directory}/{step} to fall "
                "back to an earlier checkpoint, or the whole run directory to retrain."
            ) from e

    def restore(self, template, step: int | None = None):
        """Restore into the structure, shapes, dtypes and shardings of ``template``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        if step not in self._manager.all_steps():
            raise CheckpointCorruptError(f"checkpoint {self.directory}/{step} does not exist (stored steps: "
                                         f"{self.all_steps()}).")
        if (self.directory / str(step) / PACKED_ITEM).exists():
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} was written by an earlier nas_jax (one packed vector per "
                "dtype, DARTS cells stored one by one); this version stores plain orbax pytrees with each scanned "
                f"run of cells stacked. Delete {self.directory.parent} to retrain it.")
        stored = self._read(step, layout=ocp.args.JsonRestore())["layout"]
        wanted = layout(template)
        if stored != wanted:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} does not match the requested model: "
                f"{_describe_mismatch(stored, wanted)}. It was written for another architecture or config; "
                "use another zoo directory/preset, or delete it to retrain."
            )
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _as_stored(template))
        replicated = parallel.replicated(parallel.data_mesh())  # for a template without shardings (eval_shape)
        state = self._read(step, state=ocp.args.StandardRestore(abstract, fallback_sharding=replicated))["state"]
        return dataclasses.replace(template, **state) if dataclasses.is_dataclass(template) else state

    def restore_progress(self, step: int) -> dict:
        """The ``progress`` dict saved with ``step``; {} for checkpoints written without one."""
        try:
            return dict(self._read(step, progress=ocp.args.JsonRestore())["progress"] or {})
        except Exception:  # noqa: BLE001 - an older checkpoint without the item
            return {}

    def quarantine(self, step: int) -> Path:
        """Move an unreadable checkpoint out of the way (to ``corrupt_checkpoints/`` beside the directory)."""
        target = self.directory.parent / "corrupt_checkpoints" / str(step)
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(self.directory / str(step)), str(target))
        self._manager.close()
        self._manager = self._open()
        return target

    def close(self) -> None:
        """Finish the background write (CheckpointWriteError if it failed) and release the directory."""
        try:
            self.wait()
        except CheckpointWriteError:
            with contextlib.suppress(Exception):  # the failure is already being reported
                self._manager.close()
            raise
        self._manager.close()
