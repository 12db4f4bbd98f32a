"""The results store: ``{workdir}/results.jsonl`` (DESIGN "Results").

Each finished measurement is one JSON line: task, model, dataset, preset,
setting, metrics, n, seed, config hash, code version, start/end time. A record
lands whole or not at all: the file's bytes plus the new line are written to a
temporary file (every ``os.write`` checked until all bytes are out, then fsync)
that replaces the old file by rename, under a lock, so a full disk, a failed
write or a kill leaves the previous file intact and a failure raises
:class:`~nas_jax.errors.UserError`. Readers skip lines that are not JSON
objects (a line torn by an older writer, a hand edit) and warn with their line
numbers. A resumed or repeated run does not append a measurement twice: a record
whose identity (task, model, dataset, preset, seed, setting, config hash, code
version) is already stored is skipped. :func:`check_workdir` runs before any
work so an unusable workdir or results file fails first, not after training.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

from nas_jax.errors import UserError

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
    """Append ``record`` unless the same measurement is stored already; True when written.

    The record lands whole or not at all (see the module docstring); a write that fails raises UserError.
    """
    path = Path(workdir) / RESULTS_FILE
    key = _identity(json.loads(json.dumps(record)))  # compare in the stored (JSON) form
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if any(_identity(r) == key for r in read_records(workdir, record.get("task"))):
            return False
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):  # an older writer's torn last line: end it
            old += b"\n"
        _replace_atomically(path, old + line)
    return True


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path.lock`` (concurrent appenders take turns)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot create the lock file {path}.lock: {e.strerror}. The workdir must be writable; "
                        "pass a writable --workdir.") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out; a write that makes no progress is an error (ENOSPC)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UserError(f"could not write the result record to {path}: {e.strerror or e}. The file is unchanged "
                        "and this measurement is not stored; free disk space (or fix the permissions) and run the "
                        "same command again (finished measurements are not repeated).") from e
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_records(workdir: str | Path, task: str | None = None) -> list[dict]:
    """Every complete record (optionally of one task); unreadable lines are skipped with a warning."""
    records, bad = scan_records(workdir)
    if bad:
        warnings.warn(f"{Path(workdir) / RESULTS_FILE}: skipped {len(bad)} unreadable line(s) (not a JSON object): "
                      f"line(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}.", stacklevel=2)
    return [r for r in records if task is None or r.get("task") == task]


def scan_records(workdir: str | Path) -> tuple[list[dict], list[int]]:
    """(records, 1-based numbers of the lines that are not JSON objects) of ``{workdir}/results.jsonl``."""
    path = Path(workdir) / RESULTS_FILE
    if not path.exists():
        return [], []
    records, bad = [], []
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"cannot read the results file {path}: {e.strerror or e}. Fix its permissions or pass "
                        "another --workdir.") from e
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad.append(number)
    return records, bad


def check_workdir(workdir: str | Path) -> list[int]:
    """Fail before any work when ``workdir`` cannot hold results: it must be a directory (created if missing)
    where files can be written, and an existing ``results.jsonl`` must be a readable file. Returns the numbers
    of unreadable lines of that file (they are skipped by readers; a warning names them)."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"the workdir {workdir} exists and is not a directory. Pass --workdir=DIR with a directory "
                        "(it is created if missing).")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_check.", dir=workdir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"the workdir {workdir} cannot be created or written: {e.strerror or e}. Pass a writable "
                        "--workdir=DIR.") from e
    path = workdir / RESULTS_FILE
    if path.exists() and not path.is_file():
        raise UserError(f"{path} exists and is not a file; move it away or pass another --workdir.")
    _, bad = scan_records(workdir)
    if bad:
        warnings.warn(f"{path}: {len(bad)} unreadable line(s) (not a JSON object) will be skipped: line(s) "
                      f"{bad[:10]}{' ...' if len(bad) > 10 else ''}.", stacklevel=2)
    return bad
