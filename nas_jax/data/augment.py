"""On-device training augmentation, compiled into the train step (docs/protocol.md §a.3).

Per example [artifact]: (1) a random HxW crop of the image zero-padded by `crop_padding` px (offsets uniform in
[0, 2 * crop_padding]); (2) a horizontal flip with p = 0.5; (3) scaling to [0, 1] (`to_float`, the whole test
pipeline); (4) cutout: one `cutout` x `cutout` square with a uniform integer centre (cy, cx), rows
[cy - cutout//2, cy - cutout//2 + cutout) (likewise columns), clipped at the borders, filled with `cutout_fill`:
0 by default [artifact] or the dataset mean (``cutout_fill=ds.mean``, the DARTS reference `Cutout` box).

Vectorised with fixed shapes: crop and flip are one row and one column gather (``take_along_axis``) with a
validity mask, faster on CPU than a vmapped ``dynamic_slice`` (0.18 vs 0.38 ms at batch 256) and ~8x faster than
a one-hot matmul; cutout is an arithmetic box mask. Each example draws its own (offset_y, offset_x, flip,
centre_y, centre_x) from its own key; `crop_flip` and `apply_cutout` take them explicitly (tests pin them).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class AugmentParams(NamedTuple):
    """Per-example augmentation parameters, each of shape (B,)."""

    offset_y: jax.Array  # int32 in [0, 2 * crop_padding]
    offset_x: jax.Array
    flip: jax.Array  # bool
    center_y: jax.Array  # int32 in [0, H)
    center_x: jax.Array  # int32 in [0, W)


@jax.jit
def to_float(images_uint8: jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1] (x / 255). The whole test-time pipeline."""
    _check_uint8(images_uint8)
    return jnp.asarray(images_uint8).astype(jnp.float32) / 255.0


def augment_batch(
    key: jax.Array,
    images_uint8: jax.Array,
    *,
    crop_padding: int = 4,
    flip: bool = True,
    cutout: int = 16,
    cutout_fill: float | Sequence[float] = 0.0,
) -> jax.Array:
    """Training augmentation of a uint8 NHWC batch -> float32 [0, 1] NHWC (§a.3).

    The keywords are static Python values (`cutout_fill`: a float or per-channel sequence such as ``ds.mean``); the
    work is jitted. ``crop_padding=0, flip=False, cutout=0`` returns exactly `to_float(images_uint8)`.
    """
    _check_uint8(images_uint8)
    if crop_padding < 0 or cutout < 0:
        raise ValueError(f"crop_padding={crop_padding} and cutout={cutout} must be >= 0.")
    fill = float(cutout_fill) if np.ndim(cutout_fill) == 0 else tuple(float(v) for v in cutout_fill)
    return _augment(
        key, images_uint8, crop_padding=int(crop_padding), flip=bool(flip), cutout=int(cutout), cutout_fill=fill
    )


@functools.partial(jax.jit, static_argnames=("crop_padding", "flip", "cutout", "cutout_fill"))
def _augment(
    key: jax.Array,
    images_uint8: jax.Array,
    *,
    crop_padding: int,
    flip: bool,
    cutout: int,
    cutout_fill: float | tuple[float, ...],
) -> jax.Array:
    batch, height, width, _ = images_uint8.shape
    params = sample_params(key, batch, height, width, crop_padding=crop_padding)
    x = images_uint8
    if crop_padding > 0 or flip:
        flips = params.flip if flip else jnp.zeros((batch,), bool)
        x = crop_flip(x, params.offset_y, params.offset_x, flips, padding=crop_padding)
    x = to_float(x)
    if cutout > 0:
        x = apply_cutout(x, params.center_y, params.center_x, size=cutout, fill=cutout_fill)
    return x


@functools.partial(jax.jit, static_argnames=("batch", "height", "width", "crop_padding"))
def sample_params(key: jax.Array, batch: int, height: int, width: int, *, crop_padding: int) -> AugmentParams:
    """Draw per-example parameters from one key per example (``split(key, batch)``): 5 uint32 words each, mapped with
    ``% n`` (bias < 1e-8); one `bits` call compiles ~4x faster on CPU than five `randint` calls.
    """
    words = jax.vmap(lambda k: jax.random.bits(k, (5,)))(jax.random.split(key, batch))

    def uniform_int(column: int, n: int) -> jax.Array:
        return (words[:, column] % jnp.uint32(n)).astype(jnp.int32)

    span = 2 * crop_padding + 1
    return AugmentParams(
        offset_y=uniform_int(0, span),
        offset_x=uniform_int(1, span),
        flip=uniform_int(2, 2) == 1,
        center_y=uniform_int(3, height),
        center_x=uniform_int(4, width),
    )


@functools.partial(jax.jit, static_argnames=("padding",))
def crop_flip(
    images: jax.Array,
    offset_y: jax.Array,
    offset_x: jax.Array,
    flip: jax.Array,
    *,
    padding: int,
) -> jax.Array:
    """Crop at per-example offsets from the zero-padded images, then flip where `flip`.

    Output pixel (i, j) = padded[i + offset_y, j' + offset_x] with j' = W-1-j when
    flipped, where padded = pad(images, padding) with zeros. Dtype is preserved.
    """
    _, height, width, _ = images.shape
    offset_y, offset_x = jnp.asarray(offset_y), jnp.asarray(offset_x)
    rows = jnp.arange(height)[None, :] + offset_y[:, None] - padding  # (B, H)
    cols = jnp.arange(width)[None, :]
    cols = jnp.where(jnp.asarray(flip)[:, None], width - 1 - cols, cols)
    cols = cols + offset_x[:, None] - padding  # (B, W)
    out = jnp.take_along_axis(images, jnp.clip(rows, 0, height - 1)[:, :, None, None], axis=1)
    out = jnp.take_along_axis(out, jnp.clip(cols, 0, width - 1)[:, None, :, None], axis=2)
    inside = _in_range(rows, height)[:, :, None, None] & _in_range(cols, width)[:, None, :, None]
    return jnp.where(inside, out, jnp.zeros((), images.dtype))


@functools.partial(jax.jit, static_argnames=("size",))
def apply_cutout(
    images: jax.Array,
    center_y: jax.Array,
    center_x: jax.Array,
    *,
    size: int,
    fill: float | Sequence[float] = 0.0,
) -> jax.Array:
    """Fill each example's cutout box (clipped at the borders) with `fill` (scalar or per-channel, pixel space)."""
    _, height, width, channels = images.shape
    in_rows = _in_range(jnp.arange(height)[None, :] - (jnp.asarray(center_y)[:, None] - size // 2), size)  # (B, H)
    in_cols = _in_range(jnp.arange(width)[None, :] - (jnp.asarray(center_x)[:, None] - size // 2), size)  # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
    fill_value = jnp.broadcast_to(jnp.asarray(fill, images.dtype), (channels,))
    return jnp.where(mask, fill_value, images)


def _in_range(index: jax.Array, size: int) -> jax.Array:
    return (index >= 0) & (index < size)


def _check_uint8(images: jax.Array) -> None:
    if images.dtype != jnp.uint8:
        raise TypeError(
            f"expected uint8 images in [0, 255], got dtype {images.dtype}; keep the "
            "dataset as uint8 and let augment_batch/to_float scale it to [0, 1]."
        )
