"""Deterministic epoch sampling over data slices (one per process).

The training set is split into ``num_slices`` strided slices; process p loads slices [p·S/P, (p+1)·S/P). At
epoch e every slice is permuted with a key from (seed, e, s) and gives B/S rows to each global batch, so the
batch is the same for any process count and depends only on (epoch, step): a resumed run replays it.
"""

from __future__ import annotations

import jax
import numpy as np


class EpochSampler:
    def __init__(self, n_train: int, batch_size: int, num_slices: int, seed: int):
        n_proc = jax.process_count()
        if num_slices % n_proc:
            raise ValueError(f"data_slices={num_slices} must be a multiple of the {n_proc} processes.")
        if batch_size % num_slices:
            raise ValueError(f"batch size {batch_size} must be divisible by data_slices={num_slices}.")
        self.num_slices, self.seed = num_slices, seed
        self._cached_epoch, self._cached_positions = -1, []
        self.rows_per_slice = batch_size // num_slices
        per_proc = num_slices // n_proc
        self.owned = list(range(jax.process_index() * per_proc, (jax.process_index() + 1) * per_proc))
        self.slice_sizes = [len(range(s, n_train, num_slices)) for s in range(num_slices)]
        self.steps_per_epoch = min(self.slice_sizes) // self.rows_per_slice
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set ({n_train} examples) is smaller than one batch ({batch_size}); "
                             "lower --config.train.batch_size.")

    def local_data(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This process's slices of the training set, concatenated in slice order."""
        idx = np.concatenate([np.arange(s, len(y), self.num_slices) for s in self.owned])
        return x[idx], y[idx]

    def _epoch_positions(self, epoch: int) -> list[np.ndarray]:
        if self._cached_epoch == epoch:
            return self._cached_positions
        positions, offset = [], 0
        for s in self.owned:
            rng = np.random.default_rng([self.seed, epoch, s])
            positions.append(offset + rng.permutation(self.slice_sizes[s]))
            offset += self.slice_sizes[s]
        self._cached_epoch, self._cached_positions = epoch, positions
        return positions

    def local_batch(self, x_local: np.ndarray, y_local: np.ndarray, epoch: int, step: int):
        """This process's rows of global batch ``step`` of ``epoch``."""
        b = self.rows_per_slice
        idx = np.concatenate([p[step * b : (step + 1) * b] for p in self._epoch_positions(epoch)])
        return x_local[idx], y_local[idx]
