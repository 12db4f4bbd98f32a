"""Datasets (PROTOCOL §a.1-§a.2) and on-device augmentation (§a.3).

    from nas_jax.data import load_dataset, augment_batch, to_float
    ds = load_dataset("digits")            # or cifar10, cifar100, imagenet32, npz:PATH

Loaders are imported lazily by `load_dataset`, so ``digits`` never imports tfds.
"""

from nas_jax.data.augment import augment_batch, to_float
from nas_jax.data.registry import (
    DATASET_STATS,
    DATASETS,
    Dataset,
    DatasetUnavailableError,
    channel_stats,
    default_data_dir,
    load_dataset,
    subsample,
)

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "Dataset",
    "DatasetUnavailableError",
    "augment_batch",
    "channel_stats",
    "default_data_dir",
    "load_dataset",
    "subsample",
    "to_float",
]
