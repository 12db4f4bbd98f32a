"""User datasets from a ``.npz`` file: ``load_dataset("npz:/path/to/file.npz")`` (docs/protocol.md §a).

Required: ``x_train``, ``x_test`` (NHWC with 1 or 3 channels, 1 replicated to RGB; integers in [0, 255] or
floats in [0, 1], converted with ``round(x * 255)``) and ``y_train``, ``y_test`` (integer labels in
[0, num_classes)). Optional: ``num_classes`` (default ``len(class_names)`` or ``max(label) + 1``, and then every
class up to the max must occur in ``y_train``: a stray label is refused, not made a new class), ``class_names``,
and ``mean``, ``std`` (3 values at pixel scale [0, 1]; default from the train split, ``channel_stats``; e.g. the
CIFAR-10 constants of §a.2 for a subset). Opened with ``allow_pickle=False``; a non-zip file or an empty split
is refused by name.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from nas_jax.data.registry import Dataset, DatasetInfo, DatasetUnavailableError, channel_stats
from nas_jax.errors import UserError

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_KEYS = ("num_classes", "class_names", "mean", "std")


def load_npz(path: str) -> Dataset:
    """Load and validate a ``.npz`` dataset; errors name the file and the fix."""
    path = _check_file(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise _unreadable(path, e) from e
    _check_arrays(path, {k: a.shape for k, a in arrays.items()})
    x_train = _images(arrays["x_train"], f"{path}: x_train")
    x_test = _images(arrays["x_test"], f"{path}: x_test")
    y_train = _labels(arrays["y_train"], len(x_train), f"{path}: y_train")
    y_test = _labels(arrays["y_test"], len(x_test), f"{path}: y_test")
    names = arrays.get("class_names")
    class_names = None if names is None else tuple(str(n) for n in np.asarray(names).reshape(-1))
    num_classes = _num_classes(arrays, class_names, y_train, y_test, path)
    mean, std = _stats(arrays, x_train, path)
    return Dataset(f"npz:{path}", x_train, y_train, x_test, y_test, num_classes, mean, std, class_names)


def npz_info(path: str) -> DatasetInfo:
    """Sizes and served image shape of a ``.npz`` dataset from its array headers only (no pixel is read);
    the file and shape checks of :func:`load_npz`."""
    path = _check_file(path)
    try:
        with zipfile.ZipFile(path) as z:
            shapes = {name.removesuffix(".npy"): _header_shape(z, name) for name in z.namelist()}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise _unreadable(path, e) from e
    _check_arrays(path, shapes)
    return DatasetInfo(shapes["x_train"][0], shapes["x_test"][0], (*shapes["x_train"][1:3], 3))


def _header_shape(z: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(f)[0]


def _check_file(path: str) -> str:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise DatasetUnavailableError(
            f"npz dataset file {path!r} not found. Save one with "
            f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        )
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path!r} is not a .npz archive (a .npz file is a zip archive written by np.savez); it looks like "
            f"{_describe_start(path)}. Save the arrays with np.savez(path, x_train=..., y_train=..., x_test=..., "
            "y_test=...)."
        )
    return path


def _unreadable(path: str, e: Exception) -> UserError:
    return UserError(f"{path!r} cannot be read as a .npz archive ({e}); write it again with np.savez "
                     "(object arrays are not allowed).")


def _check_arrays(path: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """The required arrays are present and both image splits are non-empty NHWC of one HWC shape."""
    missing = [k for k in REQUIRED_KEYS if k not in shapes]
    if missing:
        raise UserError(
            f"{path}: missing arrays {missing}; found {sorted(shapes)}. Required: "
            f"{list(REQUIRED_KEYS)}; optional: {list(OPTIONAL_KEYS)}."
        )
    for split in ("x_train", "x_test"):
        shape = shapes[split]
        if len(shape) != 4 or shape[-1] not in (1, 3):
            raise UserError(f"{path}: {split} has shape {shape}; expected rank-4 NHWC with 1 or 3 channels.")
    if shapes["x_train"][1:] != shapes["x_test"][1:]:
        raise UserError(
            f"{path}: x_train images are {shapes['x_train'][1:]} but x_test images are "
            f"{shapes['x_test'][1:]}; both splits need the same HWC shape."
        )
    for split in ("x_train", "x_test"):
        if not shapes[split][0]:
            raise UserError(f"{path}: {split} holds no images; both splits need at least one (an empty test set "
                            "would fail only after training).")


def _describe_start(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x93NUMPY"):
        return "a single-array .npy file (use np.savez for several named arrays)"
    try:
        return f"text starting {head.decode('utf-8')[:40]!r}"
    except UnicodeDecodeError:
        return f"binary data starting {head[:8]!r}"


def _images(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.uint8:
        out = x
    elif np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise UserError(f"{what}: integer pixels must lie in [0, 255].")
        out = x.astype(np.uint8)
    elif np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        if not finite.all():
            n_nan = int(np.isnan(x).sum())
            first = tuple(int(i) for i in np.unravel_index(np.flatnonzero(~finite)[0], x.shape))
            raise UserError(
                f"{what} holds {n_nan} NaN and {x.size - int(finite.sum()) - n_nan} infinite pixel values (first "
                f"at index {first}); pixels must be finite floats in [0, 1]. Drop or repair those images (e.g. "
                "np.nan_to_num, then np.clip(x, 0, 1)) and save the file again."
            )
        if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
            raise UserError(
                f"{what}: float pixels must lie in [0, 1] (got range "
                f"[{x.min():g}, {x.max():g}]); store uint8 0..255 instead "
                "if they are not scaled."
            )
        out = np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise UserError(f"{what} has dtype {x.dtype}; use uint8 or float in [0, 1].")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{what} has dtype {y.dtype}; labels must be integers.")
    if y.shape != (n,):
        raise UserError(f"{what} has shape {y.shape}; expected ({n},), one per image.")
    if n and y.min() < 0:
        raise UserError(f"{what} contains negative labels (min {y.min()}).")
    return y.astype(np.int32)


def _num_classes(
    arrays: dict[str, Any],
    class_names: tuple[str, ...] | None,
    y_train: np.ndarray,
    y_test: np.ndarray,
    path: str,
) -> int:
    largest = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if "num_classes" in arrays:
        num_classes = int(np.asarray(arrays["num_classes"]).reshape(()))
    elif class_names is not None:
        num_classes = len(class_names)
    else:
        num_classes = largest + 1
        absent = sorted(set(range(num_classes)) - set(np.unique(y_train).tolist()))
        if absent:
            raise UserError(
                f"{path}: the labels imply {num_classes} classes (largest label {largest}), but classes "
                f"{absent[:10]}{' ...' if len(absent) > 10 else ''} never occur in y_train: a stray label would "
                f"silently add classes. Fix the labels, or store num_classes (np.savez(..., num_classes=K)) or "
                "class_names in the file to state the class count."
            )
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{path}: {len(class_names)} class_names but num_classes={num_classes}.")
    if largest >= num_classes:
        raise UserError(
            f"{path}: label {largest} is out of range for num_classes={num_classes}; "
            f"labels must lie in [0, {num_classes})."
        )
    return num_classes


def _stats(
    arrays: dict[str, Any], x_train: np.ndarray, path: str
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    if "mean" not in arrays and "std" not in arrays:
        return channel_stats(x_train)
    try:
        mean, std = (np.asarray(arrays[k], dtype=np.float64).reshape(3) for k in ("mean", "std"))
    except (KeyError, ValueError):
        raise UserError(f"{path}: give both 'mean' and 'std', each with 3 values in pixel scale [0, 1].") from None
    if not (std > 0).all():
        raise UserError(f"{path}: std must be positive, got {std.tolist()}.")
    return tuple(map(float, mean)), tuple(map(float, std))  # type: ignore[return-value]
