"""Loss contours in parameter and input space (§4 "Loss smoothness", Eqns 12–13, Figure 11; docs/protocol.md §f.1–f.2).

Parameter space: Γ(α, β) = CE(f_{θ* + α·d1 + β·d2}(x), y), with direction schemes

* ``first_conv`` (the authors'): only the first convolution moves; d1 a random permutation of ⌊n/2⌋ entries −1
  and the rest +1, d2 = d1 ⊙ r for a balanced ±1 vector r, so d1·d2 = 0 for even n (odd n: Gram–Schmidt,
  rescaled to ‖d2‖ = √n). Default grid [−0.5, 0.5]², 41².
* ``filter_normalized`` (Li et al. 2018): Gaussian directions over every weight tensor with ≥ 2 dims, each output
  filter rescaled to the norm of θ*'s (biases and BN fixed; stacked DARTS cells count apart), d2 made orthogonal
  to d1 within every filter. Default grid [−1, 1]², 51².

Input space: Γ_x(α, β) = CE(f(clip(x + α·d1 + β·d2, 0, 1)), y), fresh ±1 orthogonal directions per image (the
artifact's offset bug is not reproduced, §f.2); grids [−0.02, 0.02]² (artifact code) or [−0.2, 0.2]² (README), 41².

One compiled computation: ``jax.lax.map`` over the grid points (``batch_size=chunk``), each evaluating the image
batch in eval mode. Parameter directions are shared by all images; each image (or group of
``images_per_contour``, the artifact's ``batch``) gives its own contour.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from scipy.interpolate import RegularGridInterpolator

from nas_jax.models.darts import is_stacked_run

SPACES = ("param", "input")
DIRECTIONS = ("first_conv", "filter_normalized")
DEFAULT_GRID = {"first_conv": (0.5, 41), "filter_normalized": (1.0, 51), "input": (0.02, 41)}


@dataclasses.dataclass
class Contour:
    """Γ on the grid ``alphas × betas``: ``losses[i, j, c]`` = contour c at (alphas[i], betas[j])."""

    space: str
    directions: str
    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray


def grid(radius: float, resolution: int) -> np.ndarray:
    """``resolution`` points step·{−m..m} spanning [−radius, radius], with 0 exactly at the centre."""
    if resolution < 3 or resolution % 2 == 0:
        raise ValueError(f"grid resolution must be odd and >= 3 so that 0 is a grid point, got {resolution}.")
    m = resolution // 2
    return (radius / m) * np.arange(-m, m + 1, dtype=np.float64)


# ----------------------------------------------------------------------------
# Directions
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=1)
def pm1_directions(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Two orthogonal ±1-scale directions of length n with norms √n (docs/protocol.md §f.1 step 2)."""
    k1, k2 = jax.random.split(key)
    balanced = jnp.where(jnp.arange(n) < n // 2, -1.0, 1.0)
    d1 = jax.random.permutation(k1, balanced)
    d2 = d1 * jax.random.permutation(k2, balanced)
    if n % 2:  # Σr = ±1: remove the d1 component and restore the norm
        d2 = d2 - (d1 @ d2) / n * d1
        d2 = d2 * jnp.sqrt(n) / jnp.linalg.norm(d2)
    return d1, d2


def first_conv_path(model: nn.Module, variables: dict, image_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Path of the kernel of the first convolution the model applies (found by intercepting the calls of a
    shape-only forward pass: the first module with a 4-D ``kernel`` parameter)."""
    found: list[tuple[str, ...]] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if not found and context.method_name == "__call__":
            own = context.module.variables.get("params", {})
            kernel = own.get("kernel") if hasattr(own, "get") else None
            if kernel is not None and not isinstance(kernel, dict) and kernel.ndim == 4:
                found.append((*context.module.scope.path, "kernel"))
        return out

    def forward(v):
        with nn.intercept_methods(interceptor):
            return model.apply(v, jnp.zeros((1, *image_shape), jnp.float32), train=False)

    jax.eval_shape(forward, variables)
    if not found:
        raise ValueError(f"{type(model).__name__} applies no convolution with a 4-D 'kernel'; use "
                         "directions='filter_normalized'.")
    return found[0]


def first_conv_directions(key: jax.Array, model: nn.Module, variables: dict,
                          image_shape: tuple[int, ...]) -> tuple[dict, dict]:
    """±1 orthogonal directions over the first convolution only, as {param path: array}."""
    path = first_conv_path(model, variables, image_shape)
    kernel = flatten_dict(variables["params"])[path]
    d1, d2 = pm1_directions(key, kernel.size)
    return {path: d1.reshape(kernel.shape)}, {path: d2.reshape(kernel.shape)}


@jax.jit
def filter_normalized_directions(key: jax.Array, params: dict) -> tuple[dict, dict]:
    """Li et al.'s filter-normalised directions over every ≥2-D weight, per-filter orthogonal."""
    # A stacked run of DARTS cells carries the cells on a leading axis: each cell's filters are its own.
    lead = {path: int(is_stacked_run(path[0])) for path in flatten_dict(params)}
    weights = {path: w for path, w in sorted(flatten_dict(params).items()) if w.ndim - lead[path] >= 2}  # no BN
    total = sum(w.size for w in weights.values())
    noise = jax.random.normal(key, (2, total), jnp.float32)  # one draw, split over the weights
    d1, d2, start = {}, {}, 0
    for path, w in weights.items():
        a, b = (noise[k, start : start + w.size].reshape(w.shape).astype(w.dtype) for k in (0, 1))
        start += w.size
        axes = tuple(range(lead[path], w.ndim - 1))  # a filter = one slice of the last (output) axis
        norm = lambda t, axes=axes: jnp.sqrt((t**2).sum(axes, keepdims=True))
        wn, an = norm(w), norm(a)
        b = b - (a * b).sum(axes, keepdims=True) / an**2 * a
        d1[path] = a * wn / an
        d2[path] = b * wn / norm(b)
    return d1, d2


def parameter_directions(scheme: str, key: jax.Array, model: nn.Module, variables: dict,
                         image_shape: tuple[int, ...]) -> tuple[dict, dict]:
    if scheme == "first_conv":
        return first_conv_directions(key, model, variables, image_shape)
    if scheme == "filter_normalized":
        return filter_normalized_directions(key, variables["params"])
    raise ValueError(f"unknown direction scheme {scheme!r}; valid: {DIRECTIONS}.")


# ----------------------------------------------------------------------------
# Grid evaluation
# ----------------------------------------------------------------------------


def _per_example_ce(apply_fn, variables, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(apply_fn(variables, x, train=False), y)


def _coords(alphas, betas) -> jax.Array:
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    return jnp.asarray(np.stack([a.ravel(), b.ravel()], 1), jnp.float32)


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _param_grid(apply_fn, variables, d1, d2, x, y, coords, chunk: int):
    flat = flatten_dict(variables["params"])

    def at(ab):
        moved = dict(flat)  # only the leaves with a direction are batched under vmap
        for path in d1:
            moved[path] = flat[path] + ab[0] * d1[path] + ab[1] * d2[path]
        return _per_example_ce(apply_fn, {**variables, "params": unflatten_dict(moved)}, x, y)

    return jax.lax.map(at, coords, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _input_grid(apply_fn, variables, d1, d2, x, y, coords, chunk: int):
    def at(ab):
        return _per_example_ce(apply_fn, variables, jnp.clip(x + ab[0] * d1 + ab[1] * d2, 0.0, 1.0), y)

    return jax.lax.map(at, coords, batch_size=chunk)


def _check_groups(n: int, images_per_contour: int) -> None:
    if images_per_contour < 1 or n % images_per_contour:
        raise ValueError(f"{n} images do not split into contours of {images_per_contour}; choose n_images as a "
                         "multiple of images_per_contour.")


def _contour(space: str, directions: str, losses: jax.Array, alphas, betas, images_per_contour: int) -> Contour:
    """The contours of per-image ``losses`` on the grid: the mean over each group of ``images_per_contour``."""
    grouped = np.asarray(losses, np.float64).reshape(len(alphas), len(betas), -1, images_per_contour)
    return Contour(space, directions, np.asarray(alphas), np.asarray(betas), grouped.mean(-1))


def parameter_contour(apply_fn, variables, d1: dict, d2: dict, x, y, alphas, betas, *, chunk: int = 32,
                      images_per_contour: int = 1, directions: str = "first_conv") -> Contour:
    """Γ(α, β) over ``alphas × betas`` for directions {path: array} (float images ``x`` in [0, 1])."""
    _check_groups(len(x), images_per_contour)
    losses = _param_grid(apply_fn, variables, d1, d2, jnp.asarray(x, jnp.float32), jnp.asarray(y),
                         _coords(alphas, betas), chunk)
    return _contour("param", directions, losses, alphas, betas, images_per_contour)


def input_contour(apply_fn, variables, x, y, key: jax.Array, alphas, betas, *, chunk: int = 32,
                  images_per_contour: int = 1) -> Contour:
    """Γ_x(α, β) with fresh ±1 orthogonal input directions per image (the perturbed input clipped to [0, 1])."""
    _check_groups(len(x), images_per_contour)
    x = jnp.asarray(x, jnp.float32)
    dims = int(np.prod(x.shape[1:]))
    d1, d2 = jax.vmap(lambda k: pm1_directions(k, dims))(jax.random.split(key, len(x)))
    losses = _input_grid(apply_fn, variables, d1.reshape(x.shape), d2.reshape(x.shape), x, jnp.asarray(y),
                         _coords(alphas, betas), chunk)
    return _contour("input", "pm1", losses, alphas, betas, images_per_contour)


# ----------------------------------------------------------------------------
# Smoothness summaries
# ----------------------------------------------------------------------------


def smoothness(contour: Contour, radius: float | None = None, n_angles: int = 64) -> dict[str, float]:
    """Numeric summaries of each contour, averaged over contours: ``loss_center`` Γ(0, 0); ``increase_at_radius``, the
    mean of Γ on the circle of ``radius`` (default: half the grid range; bilinear) minus Γ(0, 0); ``increase_max``;
    ``curvature_d1``/``curvature_d2``: ∂²Γ/∂α², ∂²Γ/∂β² of a quadratic fitted to the points within ``radius``.
    """
    a, b, losses = contour.alphas, contour.betas, contour.losses
    radius = float(radius if radius is not None else min(a[-1], b[-1]) / 2)
    ia, ib = int(np.argmin(np.abs(a))), int(np.argmin(np.abs(b)))
    center = losses[ia, ib]
    angles = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    circle = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    on_circle = RegularGridInterpolator((a, b), losses)(circle).mean(0)
    aa, bb = np.meshgrid(a, b, indexing="ij")
    inside = aa**2 + bb**2 <= radius**2 * (1 + 1e-9)
    pa, pb = aa[inside], bb[inside]
    design = np.stack([np.ones_like(pa), pa, pb, 0.5 * pa**2, 0.5 * pb**2, pa * pb], 1)
    coef, *_ = np.linalg.lstsq(design, losses[inside], rcond=None)
    per_contour = {
        "loss_center": center,
        "increase_at_radius": on_circle - center,
        "increase_max": losses.max((0, 1)) - center,
        "curvature_d1": coef[3],
        "curvature_d2": coef[4],
    }
    out = {k: float(np.mean(v)) for k, v in per_contour.items()}
    out["increase_at_radius_std"] = float(np.std(per_contour["increase_at_radius"]))
    out["radius"] = radius
    return out
