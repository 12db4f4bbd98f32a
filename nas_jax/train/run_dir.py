"""The run directory shared by training and search: ``spec.json``, the per-epoch log, TensorBoard, progress.

A resumable run owns one directory: ``spec.json`` (all that determines the result; once the run has started a
different spec is refused with the differing keys, :func:`check_spec`; before its first checkpoint it is
replaced); the per-epoch log (``train_log.jsonl``, ``search_log.jsonl``: rows before the resume point kept,
:func:`read_log`, the file rewritten atomically each epoch, :func:`write_log`); TensorBoard scalars
(:func:`tensorboard_writer`) and the tqdm bar (:func:`progress_bar`), on process 0 only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from nas_jax import files, parallel
from nas_jax.errors import UserError

SPEC_FILE = "spec.json"


def has_started(directory: str | Path) -> bool:
    """Whether a run has trained anything: a ``final.json`` or at least one step in ``checkpoints/``."""
    directory = Path(directory)
    ckpts = directory / "checkpoints"
    return (directory / "final.json").exists() or (ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()))


def spec_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The keys (dotted paths) where two nested spec dicts differ, as 'key: stored A, requested B' lines."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += spec_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: stored {va!r}, requested {vb!r}")
    return out


def check_spec(directory: str | Path, spec: dict, *, refusal: str, fix: str,
               error: type[UserError] = UserError, damaged: type[UserError] = UserError) -> None:
    """Write ``spec`` as ``directory/spec.json`` for a new run, or refuse a stored spec that differs:
    ``error(refusal + the differing keys + fix)``; a damaged one raises ``damaged``. A run that never started
    (:func:`has_started`) has its spec replaced, not compared."""
    directory = Path(directory)
    path = directory / SPEC_FILE
    if path.exists() and has_started(directory):
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise damaged(f"{path} is damaged ({type(e).__name__}: {e}). Delete {directory} to start this run "
                          "again.") from e
        diffs = spec_diff(stored, json.loads(json.dumps(spec)))  # tuples as lists, as stored
        if diffs:
            raise error(f"{refusal}:\n  " + "\n  ".join(diffs) + f"\n{fix}")
        return
    if parallel.is_main_process():
        files.write_json(path, spec, indent=2, sort_keys=True)


def read_log(path: str | Path, before_epoch: int) -> list[dict]:
    """The rows of a per-epoch log with ``epoch < before_epoch`` (the epochs a resumed run keeps); [] when
    there is no log yet. A damaged file is a :class:`UserError` naming the fix."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if r["epoch"] < before_epoch]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UserError(f"the log {path} is damaged ({type(e).__name__}: {e}). Delete it (the next run "
                        "rewrites the epochs it trains) or delete the whole run directory to start again.") from e


def write_log(path: str | Path, rows: list[dict]) -> None:
    """Rewrite the log with ``rows``, one JSON line each, atomically (a kill leaves the old or the new file)."""
    files.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def tensorboard_writer(tb_dir: str | Path | None):
    """A tensorboardX ``SummaryWriter`` on ``tb_dir`` on process 0; None without ``tb_dir`` or elsewhere."""
    if tb_dir is None or not parallel.is_main_process():
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(tb_dir))


def write_scalars(writer, prefix: str, row: dict, epoch: int, keys: Iterable[str] | None = None) -> None:
    """``prefix/key`` scalars of one log row at ``epoch``: ``keys`` present in the row (default: every key but
    ``epoch`` and ``step``). No-op without a writer."""
    if writer is None:
        return
    keys = [k for k in row if k not in ("epoch", "step")] if keys is None else [k for k in keys if k in row]
    for k in keys:
        writer.add_scalar(f"{prefix}/{k}", row[k], epoch)


class StepBar(tqdm):
    """A run's step bar that says "compiling" until the first step returns (that call compiles the step
    program) and then restarts its clock, so that its rate and ETA count compiled steps only."""

    COMPILING = "compiling the step program (first step)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = False
        if not self.disable:
            self.set_postfix_str(self.COMPILING)

    def update(self, n=1):
        if self.compiled or self.disable:
            return super().update(n)
        self.compiled = True
        done = self.n + n
        self.reset()  # the clock and the rate's moving averages
        self.initial = self.n = self.last_print_n = done
        self.set_postfix_str("")
        return None


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm:
    """The run's step bar (:class:`StepBar`); shown on process 0 only, and only when ``enabled``."""
    return StepBar(total=total, initial=initial, disable=not (enabled and parallel.is_main_process()), unit="step",
                   desc=desc, dynamic_ncols=True)
