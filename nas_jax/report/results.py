"""The results store: ``{workdir}/results.jsonl`` (docs/provenance.md).

One JSON line per finished measurement, naming what produced it: its ``identity`` (task, model, dataset and its
hash, seed, dtype, the task's settings, the record's ``setting``, the victim's spec hash) and
``identity_sha256``; the ``victim`` (zoo entry, how it was trained); code and library versions; metrics; times.
Every measurement is appended; readers show the newest record of each identity (:func:`newest`). A record lands
whole or not at all (:func:`nas_jax.files.replace_bytes` under a lock); a failure raises
:class:`~nas_jax.errors.UserError`. Readers skip, count and name lines that are not complete records
(:data:`REQUIRED`); :func:`check_workdir` fails an unusable workdir before any work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

from nas_jax import files
from nas_jax.errors import UserError

RESULTS_FILE = "results.jsonl"
MARKER_FILE = "cell.json"  # a finished unit of work (a study cell): its config hash and the ids of its records
REQUIRED = {"task": str, "model": str, "metrics": dict}  # what every reader relies on
# Config keys that are not the task's own settings: the victim's recipe enters the identity through the hash
# of its training spec; paths, the victim list and execution switches do not change a measured number.
NOT_TASK_SETTINGS = ("task", "preset", "seed", "dataset", "data_dir", "model", "models", "zoo_dir",
                     "jit_cache_dir", "arch", "train", "train_overrides", "distributed", "study", "task_module")
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy")


def digest(obj) -> str:
    """The 16-hex-digit content hash of ``obj`` (:func:`nas_jax.files.json_sha256`)."""
    return files.json_sha256(obj, 16)


def config_hash(config) -> str:
    """A short, stable hash of the config's primitive content."""
    text = config.to_json(sort_keys=True) if hasattr(config, "to_json") else json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.cache
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


@functools.cache
def library_versions() -> dict[str, str]:
    """Python and the numerical libraries' versions (what a number may depend on besides our code)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts (or ConfigDicts) as ``{"a.b": value}``; tuples as lists (their stored JSON form)."""
    tree = tree.to_dict() if hasattr(tree, "to_dict") else tree
    out = {}
    for key in sorted(tree):
        value = tree[key]
        value = value.to_dict() if hasattr(value, "to_dict") else value
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.loads(json.dumps(value, default=str))
    return out


def task_settings(config) -> dict:
    """The task's own settings (every config section but the shared ones, :data:`NOT_TASK_SETTINGS`), flat; a
    task module outside the package (``task_module``) by the SHA-256 of its content, not its path."""
    from nas_jax.train.zoo import file_sha256

    out = flatten({k: v for k, v in config.items() if k not in NOT_TASK_SETTINGS})
    if config.get("task_module"):
        out["task_module_sha256"] = file_sha256(os.path.expanduser(config.task_module))
    return out


def make_record(config, *, task: str, model: str, metrics: dict, n: int, setting: dict | None = None,
                start_time: str, dataset: str | None = None) -> dict:
    """One measurement with its identity and provenance (see the module docstring)."""
    from nas_jax.train import zoo

    dataset = dataset or config.dataset
    victim = zoo.victim_record(config, model)
    data_sha = (victim or {}).get("spec", {}).get("dataset_sha256") or zoo.dataset_sha256(dataset)
    identity = {
        "task": task, "model": model, "dataset": dataset, "dataset_sha256": data_sha, "seed": int(config.seed),
        "dtype": config.arch.get("dtype", "float32") if "arch" in config else None,
        "setting": setting or {}, "task_settings": task_settings(config),
        "victim_spec_sha256": victim["spec_sha256"] if victim else None,
    }
    identity = json.loads(json.dumps(identity))  # tuples as lists: the stored form is what is hashed
    record = {
        "task": task,
        "model": model,
        "dataset": dataset,
        "preset": config.preset,
        "setting": identity["setting"],
        "metrics": metrics,
        "n": int(n),
        "seed": int(config.seed),
        "identity": identity,
        "identity_sha256": digest(identity),
        "victim": victim,
        "config_hash": config_hash(config),
        "code_version": code_version(),
        "versions": library_versions(),
        "start_time": start_time,
        "end_time": now(),
    }
    record["record_id"] = digest(record)
    return record


def store(workdir: str | Path, config, **fields) -> dict:
    """:func:`make_record` of ``fields``, appended by process 0 only (:func:`append_record`); returns the record."""
    import jax

    record = make_record(config, **fields)
    if jax.process_index() == 0:
        append_record(workdir, record)
    return record


_LEGACY_IDENTITY = ("task", "model", "dataset", "preset", "seed", "setting", "config_hash")


def identity_of(record: dict) -> str:
    """The identity hash of a record (records written before identities: their task, model, dataset, preset,
    seed, setting and config hash)."""
    if record.get("identity_sha256"):  # with the fields readers group by, in case a line was edited by hand
        return f"{record['task']}|{record['model']}|{record['identity_sha256']}"
    return digest([record.get(k) for k in _LEGACY_IDENTITY])


def newest(records: list[dict]) -> list[dict]:
    """One record per identity, the newest (the last appended), ordered oldest to newest by those records: a
    reader that takes the last record of a kind gets the newest measurement."""
    last: dict[str, dict] = {}
    for r in records:
        key = identity_of(r)
        last.pop(key, None)
        last[key] = r
    return list(last.values())


def append_record(workdir: str | Path, record: dict) -> None:
    """Append ``record`` (every measurement, none dropped); it lands whole or not at all, and a write that
    fails raises UserError. Temporary files of killed writers are removed under the lock."""
    path = Path(workdir) / RESULTS_FILE
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        files.clean_temp_files(path.parent, RESULTS_FILE)  # only the results file's: others may write beside it
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):  # an older writer's torn last line: end it
            old += b"\n"
        try:
            files.replace_bytes(path, old + line)
        except OSError as e:
            raise UserError(f"could not write the result record to {path}: {e.strerror or e}. The file is "
                            "unchanged and this measurement is not stored; free disk space (or fix the "
                            "permissions) and run the same command again.") from e


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


def read_records(workdir: str | Path, task: str | None = None) -> list[dict]:
    """Every complete record (optionally of one task); other lines are skipped with a warning naming them."""
    records, bad = scan_records(workdir)
    if bad:
        warnings.warn(f"{Path(workdir) / RESULTS_FILE}: skipped {len(bad)} unreadable line(s) ({_WHAT_IS_BAD}): "
                      f"line(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}.", stacklevel=2)
    return [r for r in records if task is None or r.get("task") == task]


_WHAT_IS_BAD = f"not a JSON object, or a record without {' / '.join(REQUIRED)}"


def is_complete(record) -> bool:
    """A JSON object with the fields every reader relies on (:data:`REQUIRED`), of the right types."""
    return isinstance(record, dict) and all(isinstance(record.get(k), t) for k, t in REQUIRED.items())


def scan_records(workdir: str | Path) -> tuple[list[dict], list[int]]:
    """(complete records, 1-based numbers of the other lines) of ``{workdir}/results.jsonl``."""
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
        if is_complete(rec):
            rec["setting"] = rec.get("setting") if isinstance(rec.get("setting"), dict) else {}
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
        warnings.warn(f"{path}: {len(bad)} unreadable line(s) ({_WHAT_IS_BAD}) will be skipped: line(s) "
                      f"{bad[:10]}{' ...' if len(bad) > 10 else ''}.", stacklevel=2)
    return bad


def read_marker(directory: str | Path) -> dict | None:
    """``{directory}/cell.json``, the marker of a finished study cell; None when absent or damaged."""
    try:
        marker = json.loads((Path(directory) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def marked_records(directory: str | Path) -> list[dict] | None:
    """The records a finished cell's marker lists, from its results file; None without a marker or when any
    listed record is missing (the results were damaged or lost: the cell is not finished). A marker written
    before markers listed record ids: every record, if there are at least as many as it counts."""
    marker = read_marker(directory)
    if marker is None:
        return None
    records = scan_records(directory)[0]
    if "record_ids" not in marker:
        return records if len(records) >= int(marker.get("records", 0)) else None
    by_id = {r.get("record_id"): r for r in records}
    listed = [by_id.get(i) for i in marker["record_ids"]]
    return None if None in listed else listed
