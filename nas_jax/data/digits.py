"""The bundled ``digits`` dataset: offline stand-in for the §a.1 image datasets in tests.

scikit-learn's `load_digits` (1,797 grey 8x8 images, values 0..16, 10 classes) needs no download, so tests and
the ``quick`` presets run anywhere. Values are scaled to 0..255, upsampled to 32x32 by **bilinear** interpolation
(half-pixel centres, edge-clamped, as `jax.image.resize` 'linear'; ``native=True`` keeps 8x8), rounded to uint8
and replicated to 3 channels (§a.2); the split is stratified 80/20 with seed 0 (1,437 / 360 images) and
`mean`/`std` come from the train split.
"""

from __future__ import annotations

import numpy as np

from nas_jax.data.registry import Dataset, channel_stats

NATIVE_SIZE = 8
DEFAULT_SIZE = 32


def load_digits(
    *,
    native: bool = False,
    image_size: int = DEFAULT_SIZE,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Digits as a `Dataset`: 32x32x3 uint8 by default, 8x8x3 with ``native=True`` (overrides `image_size`);
    ``test_fraction`` of each class is held out, split by ``seed`` (the default: the canonical split).
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1).")
    size = NATIVE_SIZE if native else int(image_size)
    if size < 1:
        raise ValueError(f"image_size={image_size} must be a positive integer.")
    raw = sk_load_digits()
    images = _to_uint8_rgb(raw.images, size)
    labels = raw.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    x_train, x_test = np.ascontiguousarray(x_train), np.ascontiguousarray(x_test)
    mean, std = channel_stats(x_train)
    return Dataset("digits", x_train, y_train, x_test, y_test, num_classes=10, mean=mean, std=std,
                   class_names=tuple(str(d) for d in range(10)))


def _to_uint8_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 8, 8) values 0..16 -> (N, size, size, 3) uint8."""
    x = images.astype(np.float64) * (255.0 / 16.0)
    h, w = x.shape[1:]
    if (h, w) != (size, size):
        rows, cols = bilinear_matrix(h, size), bilinear_matrix(w, size)
        x = np.einsum("ih,nhw,jw->nij", rows, x, cols)
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=-1)


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) linear-interpolation weights, half-pixel centres, clamped.

    Output pixel i samples input coordinate (i + 0.5) * in/out - 0.5; each row has at
    most two non-zero weights summing to 1.
    """
    coord = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    coord = np.clip(coord, 0.0, in_size - 1)
    lo = np.floor(coord).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = coord - lo
    weights = np.zeros((out_size, in_size))
    np.add.at(weights, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), hi), frac)
    return weights
