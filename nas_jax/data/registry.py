"""Dataset registry: the `Dataset` record, normalisation constants and `load_dataset`.

docs/protocol.md §a.1 (datasets, label order) and §a.2 (per-channel constants, applied inside the model, G1).
Images stay uint8 NHWC on the host; augmentation and scaling happen on device (`nas_jax.data.augment`, §a.3).
Names (`DATASETS`): ``digits`` (scikit-learn's 8x8 digits at 32x32x3), ``cifar10``, ``cifar100`` (fine labels;
through tensorflow-datasets without TensorFlow), ``imagenet32`` (the first 60 classes, §a.1) and ``npz:PATH``
(`nas_jax.data.npz`). Missing data raises `DatasetUnavailableError` naming the directory and how to provide it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from nas_jax.errors import UserError

Stats = tuple[float, float, float]


class DatasetUnavailableError(UserError, RuntimeError):
    """The dataset's files are not on disk and cannot be fetched now (e.g. offline)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A whole dataset in host memory.

    Images are uint8 NHWC in [0, 255]; labels int32 of shape (N,). `mean`/`std` are
    per-channel constants at pixel scale [0, 1], used by the model's first layer.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: Stats
    std: Stats
    class_names: tuple[str, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


# docs/protocol.md §a.2 [artifact]. CIFAR-100 reuses CIFAR-10's constants (the artifact does
# not recompute them). ImageNet32 constants are the artifact's 0..255 values / 255.
_CIFAR_STATS: tuple[Stats, Stats] = (
    (0.49139968, 0.48215827, 0.44653124),
    (0.24703233, 0.24348505, 0.26158768),
)
DATASET_STATS: dict[str, tuple[Stats, Stats]] = {
    "cifar10": _CIFAR_STATS,
    "cifar100": _CIFAR_STATS,
    "imagenet32": (
        (122.68 / 255, 116.66 / 255, 104.01 / 255),
        (63.22 / 255, 61.26 / 255, 65.09 / 255),
    ),
}
"""(mean, std) per dataset with fixed constants; `digits` and `npz:` compute theirs."""

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "imagenet32", "npz:PATH")
"""Valid dataset names; ``npz:PATH`` stands for any ``npz:`` followed by a file path."""

NPZ_PREFIX = "npz:"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What config validation needs of a dataset without loading it: split sizes and the served (H, W, C)."""

    n_train: int
    n_test: int
    image_shape: tuple[int, int, int]


# Sizes as load_dataset serves them. digits: the default 32x32 upsampling (native=True: 8x8, same counts).
# imagenet32 keeps the first 60 classes: its test split has exactly 60 x 50 images; its train count varies with
# the classes' sizes, so 60 x 1,300 (ImageNet's largest class size) is an upper bound.
_INFO = {
    "digits": DatasetInfo(1437, 360, (32, 32, 3)),
    "cifar10": DatasetInfo(50_000, 10_000, (32, 32, 3)),
    "cifar100": DatasetInfo(50_000, 10_000, (32, 32, 3)),
    "imagenet32": DatasetInfo(78_000, 3_000, (32, 32, 3)),
}


def dataset_info(name: str) -> DatasetInfo:
    """Split sizes and image shape of dataset `name` without loading it: fixed numbers for the named datasets
    (no file is touched), the array headers of an ``npz:PATH`` file (a missing or malformed file raises a
    UserError naming it)."""
    if name.startswith(NPZ_PREFIX):
        from nas_jax.data.npz import npz_info

        return npz_info(name[len(NPZ_PREFIX) :])
    if name not in _INFO:
        raise UserError(f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}.")
    return _INFO[name]


def channel_stats(images: np.ndarray) -> tuple[Stats, Stats]:
    """Per-channel mean and (population) std at pixel scale [0, 1] of uint8 NHWC `images`.

    Exact and cheap: computed from per-channel histograms of the 256 pixel values.
    A zero std (constant channel) is replaced by 1 so that normalisation stays finite.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"channel_stats needs a non-empty uint8 NHWC array, got {images.dtype} of shape {images.shape}."
        )
    flat = images.reshape(-1, images.shape[-1])
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(flat.shape[1]):
        counts = np.bincount(flat[:, c], minlength=256).astype(np.float64)
        mean = counts @ values / counts.sum()
        std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return tuple(map(float, means)), tuple(map(float, stds))  # type: ignore[return-value]


def default_data_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
    """`data_dir`, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (expanded)."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def load_dataset(name: str, data_dir: str | None = None, **options: Any) -> Dataset:
    """Load dataset `name` (one of `DATASETS`, or ``npz:PATH``) into host memory.

    ``data_dir``: root for cifar/imagenet32 (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); ``options``:
    loader-specific, e.g. ``native=True`` (digits), ``download=False`` (cifar), ``num_classes`` (imagenet32). Raises
    ValueError for an unknown name or invalid data, DatasetUnavailableError when the files cannot be had.
    """
    # Loaders are imported lazily: `digits` must not pay for importing tfds.
    if name == "digits":
        from nas_jax.data.digits import load_digits

        return _call(load_digits, name, **options)
    if name in ("cifar10", "cifar100"):
        try:
            from nas_jax.data.tfds_source import load_cifar
        except ImportError as e:  # the only loader that needs tfds (e.g. a GPU image without it)
            raise ImportError(f"dataset {name!r} needs tensorflow-datasets ({e}); `pip install tensorflow-datasets`, "
                              "or use digits, imagenet32 or npz:PATH, which do not.") from e

        return _call(load_cifar, name, name, data_dir=data_dir, **options)
    if name == "imagenet32":
        from nas_jax.data.imagenet32 import load_imagenet32

        return _call(load_imagenet32, name, data_dir=data_dir, **options)
    if name.startswith(NPZ_PREFIX):
        from nas_jax.data.npz import load_npz

        return _call(load_npz, "npz", name[len(NPZ_PREFIX) :], **options)
    raise UserError(
        f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)} "
        f"(write 'npz:/path/to/file.npz' for your own arrays)."
    )


def _call(loader: Callable[..., Dataset], name: str, *args: Any, **options: Any) -> Dataset:
    """Call `loader`, turning unknown keyword options into a clear ValueError."""
    params = inspect.signature(loader).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise UserError(f"Dataset {name!r} does not take options {unknown}; valid options: {allowed or 'none'}.")
    return loader(*args, **options)


def subsample(ds: Dataset, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
    """A random subset of `ds` (without replacement); `None` keeps a split whole.

    Normalisation constants and class names are kept, so a quick preset trains the
    same model as the full run. Index order is random (not sorted).
    """
    rng = np.random.default_rng(seed)
    x_train, y_train = _take(ds.x_train, ds.y_train, n_train, rng, "n_train")
    x_test, y_test = _take(ds.x_test, ds.y_test, n_test, rng, "n_test")
    return dataclasses.replace(ds, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _take(
    x: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return x, y
    if not 0 < n <= len(x):
        raise ValueError(f"{what}={n} must be in [1, {len(x)}] (the split's size).")
    idx = rng.permutation(len(x))[:n]
    return x[idx], y[idx]
