"""The results store: ``{workdir}/results.jsonl`` (DESIGN "Results").

Each finished measurement is one JSON line: task, model, dataset, preset,
setting, metrics, n, seed, config hash, code version, start/end time. Lines are
appended with a single write and fsync, so a finished record is never rewritten
or lost, and a killed run leaves at most an incomplete last line, which readers
skip. A resumed or repeated run does not append a measurement twice: a record
whose identity (task, model, dataset, preset, seed, setting, config hash, code
version) is already stored is skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from pathlib import Path

RESULTS_FILE = "results.jsonl"


def config_hash(config) -> str:
    """A short, stable hash of the config's primitive content."""
    text = config.to_json(sort_keys=True) if hasattr(config, "to_json") else json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def code_version() -> str:
    """``git describe`` of the source tree, or the package version outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib.metadata import version

    return version("nas_jax")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def make_record(config, *, task: str, model: str, metrics: dict, n: int, setting: dict | None = None,
                start_time: str, dataset: str | None = None) -> dict:
    return {
        "task": task,
        "model": model,
        "dataset": dataset or config.dataset,
        "preset": config.preset,
        "setting": setting or {},
        "metrics": metrics,
        "n": int(n),
        "seed": int(config.seed),
        "config_hash": config_hash(config),
        "code_version": code_version(),
        "start_time": start_time,
        "end_time": now(),
    }


_IDENTITY = ("task", "model", "dataset", "preset", "seed", "setting", "config_hash", "code_version")


def _identity(record: dict) -> str:
    return json.dumps([record.get(k) for k in _IDENTITY], sort_keys=True)


def append_record(workdir: str | Path, record: dict) -> bool:
    """Append ``record`` unless the same measurement is stored already; True when written."""
    path = Path(workdir) / RESULTS_FILE
    key = _identity(json.loads(json.dumps(record)))  # compare in the stored (JSON) form
    if any(_identity(r) == key for r in read_records(workdir, record.get("task"))):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:  # a killed writer may have left a torn last line: end it
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def read_records(workdir: str | Path, task: str | None = None) -> list[dict]:
    """Every complete record (optionally of one task); a torn last line is skipped."""
    path = Path(workdir) / RESULTS_FILE
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if task is None or rec.get("task") == task:
                records.append(rec)
    return records
