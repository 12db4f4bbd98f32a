"""Atomic files and content hashes: nothing half-written is ever visible, and an artifact is named by its
content (docs/provenance.md).

JSON artifacts and the results file are written to ``.{name}.*.tmp`` beside the target, flushed and renamed over
it, so a kill or a failed write leaves the previous file, never a torn one. :func:`clean_temp_files` removes what
a killed writer left; call it only under the lock that serialises that folder's writers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def json_sha256(obj, digits: int = 64) -> str:
    """SHA-256 (its first ``digits`` hex digits) of the canonical JSON of ``obj`` (sorted keys): the content
    identity of a genotype, a training spec or a record."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:digits]


def replace_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` as ``path`` atomically: a temporary file beside it, fsync, rename, fsync of the folder.
    Raises ``OSError`` (the target untouched, the temporary file removed) when any step fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:  # until every byte is out; a write that makes no progress is an error (ENOSPC)
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_text(path: str | Path, text: str) -> None:
    replace_bytes(path, text.encode())


def write_json(path: str | Path, obj, **dumps_kwargs) -> None:
    """``json.dumps(obj)`` written atomically (see :func:`replace_bytes`)."""
    replace_bytes(path, json.dumps(obj, **dumps_kwargs).encode())


def clean_temp_files(directory: str | Path, name: str = "*") -> list[Path]:
    """Remove the temporary files that killed writers of ``name`` (default: of any file) left in ``directory``;
    the removed paths. Only safe while no other process writes those files (hold the lock that serialises
    their writers)."""
    removed = []
    for p in Path(directory).glob(f".{name}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
