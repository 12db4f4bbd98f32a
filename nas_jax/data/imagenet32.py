"""Downsampled ImageNet 32x32, first 60 classes (docs/protocol.md §a.1, constants §a.2).

Source: the official "Imagenet32" release (Chrabaszcz, Loshchilov & Hutter, 2017,
https://image-net.org/download-images.php -> "Download downsampled image data (32x32)"), fetched by hand
(ImageNet licence; never downloaded here). Expected in ``{data_dir}/imagenet32/`` (default ``$TFDS_DATA_DIR``
or ``~/tensorflow_datasets``): ``train_data_batch_1`` ... ``train_data_batch_10`` and ``val_data``, pickled dicts
with ``data`` (N x 3072 uint8, channel-planar) and ``labels`` (1..1000); the ``.npz`` variant of the release is
preferred when present (no pickle). Construction [artifact]: labels shifted to 0-based, only labels < 60 kept
(the 60-class test set has 3,000 images), rows reshaped to NHWC.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from nas_jax.data.registry import (
    DATASET_STATS,
    Dataset,
    DatasetUnavailableError,
    default_data_dir,
)

SUBDIR = "imagenet32"
TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
VAL_FILE = "val_data"
NUM_CLASSES = 60
IMAGE_SIZE = 32


def load_imagenet32(data_dir: str | None = None, *, num_classes: int = NUM_CLASSES) -> Dataset:
    """ImageNet32 restricted to labels < `num_classes` (0-based), uint8 NHWC.

    Raises:
      DatasetUnavailableError: a file is missing (the message lists where to put what).
    """
    if not 1 <= num_classes <= 1000:
        raise ValueError(f"num_classes={num_classes} must be in [1, 1000].")
    folder = os.path.join(default_data_dir(data_dir), SUBDIR)
    paths = {name: _find(folder, name) for name in (*TRAIN_FILES, VAL_FILE)}
    train = [_read_batch(paths[name], num_classes) for name in TRAIN_FILES]
    x_test, y_test = _read_batch(paths[VAL_FILE], num_classes)
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    mean, std = DATASET_STATS["imagenet32"]
    return Dataset("imagenet32", x_train, y_train, x_test, y_test, num_classes, mean, std)


def _find(folder: str, name: str) -> str:
    for candidate in (f"{name}.npz", name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise DatasetUnavailableError(
        f"ImageNet32 file {name!r} (or {name}.npz) not found in {folder}.\n"
        f"Download Imagenet32_train.zip and Imagenet32_val.zip (or the _npz variants) "
        f"from https://image-net.org/download-images.php (needs an ImageNet account), "
        f"unzip them and place {', '.join(TRAIN_FILES[:2])}, ..., {TRAIN_FILES[-1]} and "
        f"{VAL_FILE} directly in {folder}/ (or pass data_dir= / set TFDS_DATA_DIR to "
        f"the directory that contains {SUBDIR}/)."
    )


def _read_batch(path: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One release file -> (uint8 NHWC images, int32 0-based labels), labels < num_classes."""
    raw = _load_dict(path)
    try:
        data, labels = raw["data"], raw["labels"]
    except KeyError as err:
        raise ValueError(f"{path} lacks key {err}; expected a dict with 'data' and 'labels'.") from None
    labels = np.asarray(labels, dtype=np.int64).reshape(-1) - 1  # 1-based -> 0-based
    data = np.asarray(data, dtype=np.uint8).reshape(len(labels), -1)
    if data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(f"{path}: rows have {data.shape[1]} values, expected 3072 (3x32x32).")
    if labels.size and (labels.min() < 0 or labels.max() >= 1000):
        raise ValueError(f"{path}: labels must be 1-based in 1..1000.")
    keep = labels < num_classes
    images = data[keep].reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels[keep].astype(np.int32)


def _load_dict(path: str) -> Any:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    with open(path, "rb") as f:
        # latin1 also reads pickles written by Python 2 (harmless for Python 3 ones).
        return pickle.load(f, encoding="latin1")
