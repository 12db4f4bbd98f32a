"""CIFAR-10 / CIFAR-100 through tensorflow-datasets, without TensorFlow (docs/protocol.md §a.1, §a.2).

A prepared ``{data_dir}/{name}/3.0.2/`` is read with `DatasetBuilder.as_data_source` (array_record), or, when
TensorFlow prepared it as TFRecord, by the small pure-Python reader below. `_TfFreeCifar10` / `_TfFreeCifar100`
replace only tfds's TensorFlow-bound generation step: the checksum-verified download is read with `tarfile` and
encoded by PIL into a standard array_record dataset. Examples come in release order (sorted by the tfds ``id``),
whatever the storage order. Offline, the prepared-check and a 5-second download probe raise
`DatasetUnavailableError` within a second, naming the directory and how to provide the files. CIFAR-100 uses the
**fine** labels (tfds key ``label``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import tarfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.image_classification import cifar

from nas_jax.data.registry import (
    DATASET_STATS,
    Dataset,
    DatasetUnavailableError,
    default_data_dir,
)

CIFAR_NAMES = ("cifar10", "cifar100")
LABEL_KEY = "label"  # CIFAR-100: fine labels (§a.1); 'coarse_label' is ignored.
PROBE_TIMEOUT_S = 5.0
CACHE_FILE = "nas_jax_uint8_arrays.npz"
_SPLITS = ("train", "test")
_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loading


def load_cifar(
    name: str,
    data_dir: str | None = None,
    *,
    download: bool = True,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
    cache: bool = True,
) -> Dataset:
    """Load ``cifar10`` or ``cifar100`` (fine labels) as uint8 NHWC arrays.

    ``data_dir``: the tfds directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); ``download``: prepare
    a missing dataset (TensorFlow-free) when the server answers within ``probe_timeout_s``; ``cache``: keep the
    decoded arrays in ``{version_dir}/{CACHE_FILE}`` (~185 MB; later loads skip PNG decoding, ~25 s -> <1 s),
    skipped in a read-only directory. Raises DatasetUnavailableError when not prepared and not downloadable now.
    """
    if name not in CIFAR_NAMES:
        raise ValueError(f"load_cifar serves {CIFAR_NAMES}, got {name!r}.")
    root = default_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=root)
    if not builder.is_prepared():
        _prepare(name, root, download=download, probe_timeout_s=probe_timeout_s)
        builder = tfds.builder(name, data_dir=root)
    (x_train, y_train), (x_test, y_test) = _read_cached(builder, cache)
    label_feature = builder.info.features[LABEL_KEY]
    mean, std = DATASET_STATS[name]
    return Dataset(name, x_train, y_train, x_test, y_test, int(label_feature.num_classes), mean, std,
                   tuple(label_feature.names) if label_feature.names else None)


def _read_cached(builder: Any, cache: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) for train and test, through the decoded-array cache if allowed."""
    use_cache = cache and builder.is_prepared()  # never under tfds mocks
    path = os.path.join(os.fspath(builder.data_dir), CACHE_FILE)
    sizes = [builder.info.splits[s].num_examples for s in _SPLITS] if use_cache else []
    if use_cache and os.path.isfile(path):
        with np.load(path, allow_pickle=False) as f:
            arrays = [(f[f"x_{s}"], f[f"y_{s}"]) for s in _SPLITS]
        if [len(y) for _, y in arrays] == sizes:
            return arrays
        _log.warning("Ignoring stale cache %s (split sizes differ).", path)
    arrays = [_read_split(builder, s) for s in _SPLITS]
    if use_cache:
        _write_cache(path, arrays)
    return arrays


def _write_cache(path: str, arrays: list[tuple[np.ndarray, np.ndarray]]) -> None:
    named = {f"{k}_{s}": a for s, pair in zip(_SPLITS, arrays, strict=True) for k, a in zip("xy", pair, strict=True)}
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        np.savez(tmp, **named)
        os.replace(tmp, path)
    except OSError as err:
        _log.warning("Could not write dataset cache %s (%s); continuing without it.", path, err)
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _read_split(builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples of `split` as (uint8 NHWC images, int32 labels)."""
    try:
        source: Sequence[Any] = builder.as_data_source(split=split)
    except NotImplementedError:  # prepared as TFRecord (no random access)
        source = _TfRecordSource(builder, split)
    examples = [source[i] for i in range(len(source))]
    # tfds stores examples hash-shuffled; ids ("train_00042") restore release order.
    if examples and "id" in examples[0]:
        examples.sort(key=lambda ex: _text(ex["id"]))
    if not examples:
        raise DatasetUnavailableError(
            f"Split {split!r} of {builder.name} under {builder.data_dir} is empty; "
            "delete that directory and prepare the dataset again."
        )
    images = np.stack([np.asarray(ex["image"], dtype=np.uint8) for ex in examples])
    labels = np.asarray([int(ex[LABEL_KEY]) for ex in examples], dtype=np.int32)
    return images, labels


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _TfRecordSource:
    """Minimal random-access view of a TFRecord-format tfds split (no TensorFlow).

    Record layout: uint64 length, uint32 masked CRC, payload, uint32 masked CRC. The
    CRCs are skipped, not checked (a truncated file is still detected).
    """

    def __init__(self, builder: Any, split: str) -> None:
        info = builder.info
        self._features = info.features
        self._records = [record for path in info.splits[split].filepaths for record in _iter_tfrecords(os.fspath(path))]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._features.deserialize_example_np(self._records[index])


def _iter_tfrecords(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise DatasetUnavailableError(f"Truncated TFRecord file {path}.")
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length)
            if len(payload) < length or len(f.read(4)) < 4:
                raise DatasetUnavailableError(f"Truncated TFRecord file {path}.")
            yield payload


# ------------------------------------------------------------------------- preparing


def _prepare(name: str, root: str, *, download: bool, probe_timeout_s: float) -> None:
    """Build ``{root}/{name}`` TensorFlow-free, or fail fast with instructions."""
    builder_cls = _TF_FREE_BUILDERS[name]
    reason = _offline_reason(builder_cls.ARCHIVE_URL, probe_timeout_s) if download else "download=False"
    if reason is not None:
        raise DatasetUnavailableError(_missing_message(name, root, reason))
    builder = builder_cls(data_dir=root, file_format=file_adapters.FileFormat.ARRAY_RECORD)
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as err:  # network drop, disk full, checksum mismatch, ...
        raise DatasetUnavailableError(
            _missing_message(name, root, f"preparing failed: {type(err).__name__}: {err}")
        ) from err


def _offline_reason(url: str, timeout_s: float) -> str | None:
    """None when `url` answers within `timeout_s` (DNS included), else why not."""
    import requests

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            response = requests.head(url, timeout=timeout_s, allow_redirects=True)
            ok = response.status_code < 400
            outcome.append(None if ok else f"{url} answered HTTP {response.status_code}")
        except requests.RequestException as err:
            outcome.append(f"{url} is unreachable ({type(err).__name__})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"{url} did not answer within {timeout_s:g} s"
    return outcome[0]


def _missing_message(name: str, root: str, reason: str) -> str:
    target = os.path.join(root, name)
    return (
        f"Dataset {name!r} is not prepared under {target} and cannot be prepared now "
        f"({reason}).\nTo provide it, either:\n"
        f"  1. on a machine with internet access and nas_jax installed, run\n"
        f'       python -c "from nas_jax.data import load_dataset; '
        f"load_dataset('{name}', data_dir='/some/dir')\"\n"
        f"     (TensorFlow-free; `tfds build {name} --data_dir /some/dir` works too but "
        f"needs tensorflow), then copy /some/dir/{name}/ to {target}/ here; or\n"
        f"  2. point data_dir= (or $TFDS_DATA_DIR) at a directory that holds {name}/; or\n"
        f"  3. save the arrays x_train, y_train, x_test, y_test to a .npz file and use "
        f"the dataset name 'npz:/path/to/file.npz'."
    )


class _TfFreeCifarMixin:
    """Replaces tfds's TensorFlow-based CIFAR generation (download via requests,
    extraction via `tarfile`, PNG encoding via PIL). Output is identical in content."""

    _cifar_info: Any
    info: Any

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
        spec = self._cifar_info
        members = _read_archive(_fetch_archive(dl_manager, spec.url), spec.prefix)
        for key, label_file in zip(spec.label_keys, spec.label_files, strict=True):
            names = members[label_file].decode("utf-8").split("\n")
            self.info.features[key].names = [n for n in names if n]  # as tfds does
        return {
            "train": self._examples("train_", [members[f] for f in spec.train_files]),
            "test": self._examples("test_", [members[f] for f in spec.test_files]),
        }

    def _examples(self, prefix: str, blobs: list[bytes]) -> Iterator[Any]:
        import PIL.Image

        keys = self._cifar_info.label_keys
        index = 0
        for blob in blobs:
            labels, images = parse_cifar_binary(blob, len(keys))
            for row, image in zip(labels, images, strict=True):
                record = {k: int(v) for k, v in zip(keys, row, strict=True)}
                record["id"] = f"{prefix}{index:05d}"
                record["image"] = PIL.Image.fromarray(image)
                yield index, record
                index += 1


class _TfFreeCifar10(_TfFreeCifarMixin, cifar.Cifar10, skip_registration=True):
    name = "cifar10"
    code_path = cifar.Cifar10.code_path  # checksums of the registered builder
    ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


class _TfFreeCifar100(_TfFreeCifarMixin, cifar.Cifar100, skip_registration=True):
    name = "cifar100"
    code_path = cifar.Cifar100.code_path
    ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"


_TF_FREE_BUILDERS = {"cifar10": _TfFreeCifar10, "cifar100": _TfFreeCifar100}


def _fetch_archive(dl_manager: Any, url: str) -> str:
    """Download `url` (checksum-verified by tfds) and return the local path."""
    return os.fspath(dl_manager.download(url))


def _read_archive(path: str, prefix: str) -> dict[str, bytes]:
    """Regular files under `prefix` in a .tar.gz, keyed by their name after `prefix`."""
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                fileobj = archive.extractfile(member)
                assert fileobj is not None
                members[member.name[len(prefix) :]] = fileobj.read()
    return members


def parse_cifar_binary(blob: bytes, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary rows (labels, then 3x32x32 channel-planar) -> (labels, NHWC images)."""
    row = num_labels + 3 * 32 * 32
    if len(blob) % row:
        raise ValueError(f"CIFAR binary size {len(blob)} is not a multiple of {row}.")
    data = np.frombuffer(blob, dtype=np.uint8).reshape(-1, row)
    images = data[:, num_labels:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data[:, :num_labels], np.ascontiguousarray(images)
