"""Datasets (docs/protocol.md §a.1-§a.2) and on-device augmentation (§a.3).

    from nas_jax.data import load_dataset, augment_batch, to_float
    ds = load_dataset("digits")            # or cifar10, cifar100, imagenet32, npz:PATH
    dataset_info("cifar10")                # sizes and image shape, without loading

Loaders are imported lazily by `load_dataset`, so ``digits`` never imports tfds.
"""

from nas_jax.data.augment import augment_batch, to_float
from nas_jax.data.registry import (
    DATASET_STATS,
    DATASETS,
    Dataset,
    DatasetInfo,
    DatasetUnavailableError,
    channel_stats,
    dataset_info,
    default_data_dir,
    load_dataset,
    subsample,
)

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "Dataset",
    "DatasetInfo",
    "DatasetUnavailableError",
    "augment_batch",
    "channel_stats",
    "dataset_info",
    "default_data_dir",
    "load_dataset",
    "subsample",
    "to_float",
]
