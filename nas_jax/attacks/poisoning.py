"""Model poisoning by random label flipping (paper §2 Eqn 6, §3.2 "Model poisoning", Eqn 11, Figure 6;
docs/protocol.md §e.3, Appendix A item 9).

A fraction p of the training set gets a uniformly random *wrong* label and the model is trained from scratch on
it; CAD(p) = acc(p = 0 run) − acc(p run) (Eqn 11), same recipe (50 epochs in the paper). Exactly ``round(p·N)``
labels change (halves round up), each to ``(y + U{1..K−1}) mod K`` [artifact], from one seeded draw: the subset
is shared by every model [artifact], nested over p, and an example flipped at several p gets the same label
[project]. N is unchanged; poisoned examples are augmented on the fly like the others [project].
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from nas_jax.data import Dataset


def num_flipped(fraction: float, n: int) -> int:
    """round(fraction·n), half-way cases rounded up (0.5 → 1), exact for the fractions of the study."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"poisoning fraction {fraction} must be in [0, 1] (e.g. 0.1 for 10% of the training set).")
    return min(n, math.floor(fraction * n + 0.5 + 1e-9))


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Relabel ``round(fraction·N)`` entries of ``labels`` to a uniformly random other class.

    Returns ``(new_labels, flipped)``: a copy of ``labels`` with the flips applied and the sorted indices that
    changed. Deterministic in ``seed``; the subsets of different fractions under one seed are nested.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a vector of class indices, got shape {labels.shape}.")
    if num_classes < 2:
        raise ValueError(f"label flipping needs at least 2 classes, got num_classes={num_classes}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got range [{labels.min()}, {labels.max()}].")
    n = labels.shape[0]
    k = num_flipped(fraction, n)
    rng = np.random.default_rng([seed, 6])  # 6: Figure 6, keeps this stream apart from other seeded draws
    order = rng.permutation(n)
    offsets = rng.integers(1, num_classes, size=n)  # U{1..K−1}, one per example, shared by every fraction
    flipped = np.sort(order[:k])
    new = labels.copy()
    new[flipped] = (labels[flipped] + offsets[flipped]) % num_classes
    return new.astype(labels.dtype), flipped


def poison_dataset(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """``dataset`` with a fraction of its training labels flipped (test split untouched), and the flipped
    indices."""
    y, flipped = flip_labels(dataset.y_train, fraction, dataset.num_classes, seed)
    return dataclasses.replace(dataset, y_train=y), flipped


def clean_accuracy_drop(clean_accuracy: float, poisoned_accuracy: float) -> float:
    """CAD (Eqn 11): accuracy of the model trained on clean data minus that of the polluted model."""
    return float(clean_accuracy) - float(poisoned_accuracy)
