"""The one resumable loop of training, population training and the DARTS search (docs/provenance.md).

A run takes ``epochs × steps_per_epoch`` steps; a :class:`Loop` brings two functions:
``step(state, step) -> (state, metrics)`` (one compiled step; ``metrics`` summed over the epoch) and
``end_epoch(state, epoch, step, sums, seconds) -> rows`` (one log row per member of the run). The loop owns the
rest: resuming from the newest readable checkpoint (a damaged one moved aside) with a mid-epoch checkpoint's
running sums, so a killed run rerun with the same command ends as an uninterrupted one; checkpoints at every
epoch end and every ``checkpoint_every_steps``; the per-epoch logs, written before the epoch's checkpoint; the
progress bar (its ETA counts compiled steps only) and TensorBoard; ``max_steps`` (stop as a kill would) and an
optional ``stop(logs)`` rule (DARTS-ES).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import parallel
from nas_jax.train import run_dir as rundir
from nas_jax.train.checkpoint import CheckpointCorruptError, Checkpointer


@dataclasses.dataclass
class Loop:
    """One run: where it lives, its length, its step and epoch-end work, and what it shows."""

    directory: Path  # checkpoints/ and the logs
    steps_per_epoch: int
    epochs: int
    step: Callable  # (state, global step) -> (state, metrics)
    end_epoch: Callable  # (state, epoch, step, sums, seconds) -> [row per member]
    metrics_shape: tuple[int, ...]
    log_files: tuple[str, ...]  # one per member
    desc: str
    show: Callable[[list[dict]], dict] = lambda rows: {}  # the bar's postfix from an epoch's rows
    checkpoint_every_steps: int = 0
    stop: Callable[[list[list[dict]]], bool] | None = None
    tb_dir: str | Path | None = None
    tb_prefix: str = "train"
    tb_keys: tuple[str, ...] | None = None


@dataclasses.dataclass
class Outcome:
    state: Any
    step: int
    interrupted: bool
    logs: list[list[dict]]


def resume(ckpt: Checkpointer, state) -> tuple[Any, dict]:
    """(state, progress) of the newest readable checkpoint, or (``state``, {}) when there is none. An unreadable
    checkpoint (a run killed while the disk filled, a damaged copy) is moved aside with a warning and the
    previous one is used; a checkpoint of another architecture is refused (CheckpointMismatchError)."""
    while (step := ckpt.latest_step()) is not None:
        try:
            restored = ckpt.restore(state, step)
        except CheckpointCorruptError as e:
            moved = ckpt.quarantine(step)
            warnings.warn(f"{e} Resuming from the previous checkpoint instead (the damaged one was moved to "
                          f"{moved}).", stacklevel=2)
            continue
        return restored, ckpt.restore_progress(step)
    return state, {}


def run(loop: Loop, state, *, max_steps: int | None = None, progress: bool = True) -> Outcome:
    """Run (or resume, or find finished) ``loop`` from the initial ``state``."""
    loop.directory.mkdir(parents=True, exist_ok=True)
    spe, total = loop.steps_per_epoch, loop.epochs * loop.steps_per_epoch
    ckpt = Checkpointer(loop.directory / "checkpoints")
    state, saved = resume(ckpt, state)
    step = start = int(np.ravel(jax.device_get(state.step))[0])  # a population's members step together
    paths = [loop.directory / f for f in loop.log_files]
    logs = [rundir.read_log(p, start // spe) for p in paths]  # every process: a stop rule reads them
    main = parallel.is_main_process()
    writer = rundir.tensorboard_writer(loop.tb_dir)
    bar = rundir.progress_bar(total, start, loop.desc, progress)
    # A resume inside an epoch continues that epoch's running sums (saved with mid-epoch checkpoints).
    carry = saved if start % spe and saved.get("epoch") == start // spe else {}
    stopped = lambda: loop.stop is not None and loop.stop(logs)
    try:
        while step < total and not stopped():
            epoch = step // spe
            sums = jnp.asarray(carry.get("epoch_sums", np.zeros(loop.metrics_shape)), jnp.float32)
            seconds_before, carry = float(carry.get("epoch_seconds", 0.0)), {}
            t0 = time.perf_counter()
            for _ in range(step % spe, spe):
                state, m = loop.step(state, step)
                sums, step = sums + m, step + 1
                bar.update(1)
                if step % spe and loop.checkpoint_every_steps and step % loop.checkpoint_every_steps == 0:
                    ckpt.save(step, state, {"epoch": epoch, "epoch_sums": np.asarray(jax.device_get(sums)).tolist(),
                                            "epoch_seconds": seconds_before + time.perf_counter() - t0})
                if step % spe and max_steps is not None and step >= max_steps:
                    return Outcome(state, step, True, logs)
            totals = np.asarray(jax.device_get(sums))  # waits for the epoch's steps: dispatch is asynchronous
            rows = loop.end_epoch(state, epoch, step, totals, seconds_before + time.perf_counter() - t0)
            for log, row in zip(logs, rows, strict=True):
                log.append(row)
            if main:
                for path, log in zip(paths, logs, strict=True):
                    rundir.write_log(path, log)
                bar.set_postfix(**loop.show(rows))
                for i, row in enumerate(rows):
                    rundir.write_scalars(writer, loop.tb_prefix if len(rows) == 1 else f"{loop.tb_prefix}/{i}", row,
                                         epoch, loop.tb_keys)
            ckpt.save(step, state)
            if max_steps is not None and step >= max_steps and step < total and not stopped():
                return Outcome(state, step, True, logs)
    finally:
        bar.close()
        ckpt.close()
        if writer is not None:
            writer.close()
    return Outcome(state, step, False, logs)
