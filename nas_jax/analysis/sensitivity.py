"""Properties of a network at one point of its training (e.g. at initialisation) that may predict how vulnerable
it becomes: the paper explains NAS models' vulnerability by smooth loss landscapes and low gradient variance
(§4, §5.1); these measure the loss's sensitivity around the inputs and the weights.

- :func:`input_gradient_norms`: ‖∇_x CE(f(x), y)‖₂ per example.
- :func:`input_hessian_eigenvalues`: the dominant eigenvalue of ∇²_x CE(f(x), y) per example, by power iteration
  on Hessian-vector products (:mod:`nas_jax.curvature`), never forming the Hessian.
- :func:`sharpness`: the mean loss increase over the batch when the weights move by ``radius`` along random
  filter-normalised directions (Li et al. 2018, as the landscape of §4 draws them), averaged over directions.

All in eval mode (G2), vmapped over examples (and directions) inside one compiled program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from nas_jax.analysis.grad_variance import example_loss
from nas_jax.analysis.landscape import filter_normalized_directions
from nas_jax.curvature import dominant_eigenvalue


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def input_gradient_norms(apply_fn, variables, x, y) -> jax.Array:
    """(n,) ‖∇_x CE‖₂ of each example (x in [0, 1])."""
    grads = jax.vmap(jax.grad(lambda xi, yi: example_loss(apply_fn, variables, xi, yi)))(x, y)
    return jnp.sqrt(jnp.sum(grads.reshape(len(x), -1) ** 2, axis=1))


@functools.partial(jax.jit, static_argnames=("apply_fn", "iterations"))
def input_hessian_eigenvalues(apply_fn, variables, x, y, key: jax.Array, iterations: int = 20) -> jax.Array:
    """(n,) the eigenvalue of largest magnitude of each example's input Hessian (power iteration, ``iterations``
    Hessian-vector products from a random start)."""
    def one(xi, yi, k):
        return dominant_eigenvalue(lambda z: example_loss(apply_fn, variables, z, yi), xi, k, iterations)[0]

    return jax.vmap(one)(x, y, jax.random.split(key, len(x)))


@functools.partial(jax.jit, static_argnames=("apply_fn", "directions"))
def sharpness(apply_fn, variables, x, y, key: jax.Array, radius: float = 0.05, directions: int = 8) -> jax.Array:
    """Mean over ``directions`` random filter-normalised directions d of L(θ + radius·d) − L(θ), L the batch's mean
    cross-entropy; d moves every weight of ≥ 2 dimensions (BN parameters stay), scaled to its filters' norms."""
    def loss(params):
        logits = apply_fn({**variables, "params": params}, x, train=False)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    flat = flatten_dict(variables["params"])

    def moved(k):
        d = filter_normalized_directions(k, variables["params"])[0]
        return loss(unflatten_dict({p: w + radius * d[p] if p in d else w for p, w in flat.items()}))

    return jnp.mean(jax.vmap(moved)(jax.random.split(key, directions))) - loss(variables["params"])
