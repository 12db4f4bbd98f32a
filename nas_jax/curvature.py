"""Curvature of a loss without forming its Hessian: Hessian-vector products and power iteration.

Used for the α-Hessian of a DARTS search (RobustDARTS §4, :mod:`nas_jax.search.smoothness`) and the input
Hessian of a network's loss (:mod:`nas_jax.analysis.sensitivity`).

- :func:`hessian_vector_product`: H·v by reverse-over-reverse (``grad`` of ⟨∇loss, v⟩), never forming H. Not
  forward-over-reverse: the CPU depthwise convolution of :mod:`nas_jax.models.ops` is a ``custom_vjp``, which
  ``jvp`` cannot differentiate.
- :func:`dominant_eigenvalue`: power iteration on H·v inside one ``lax.fori_loop``; returns the Rayleigh
  quotient vᵀHv of the final unit vector (the eigenvalue of largest magnitude, with its sign).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def hessian_vector_product(loss_fn, x, v):
    """∇² loss(x) · v = ∇ ⟨∇ loss(x), v⟩ (same pytree structure as ``x``)."""

    def directional_grad(point):
        g = jax.grad(loss_fn)(point)
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True))

    return jax.grad(directional_grad)(x)


def dominant_eigenvalue(loss_fn, x, key: jax.Array, iterations: int = 20):
    """(λ, v): power iteration on H = ∇² loss at ``x`` for ``iterations`` Hessian-vector products.

    Starts from a standard normal direction; λ = vᵀHv of the final unit vector v. Converges to
    the eigenvalue of largest magnitude at the rate |λ₂/λ₁| per iteration.
    """
    if iterations < 1:
        raise ValueError(f"power iteration needs iterations >= 1, got {iterations}.")
    flat, unravel = ravel_pytree(x)

    def hv(v):
        return ravel_pytree(hessian_vector_product(loss_fn, x, unravel(v)))[0]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, v):
        w = hv(v)
        return w / (jnp.linalg.norm(w) + jnp.finfo(w.dtype).tiny)

    v = jax.lax.fori_loop(0, iterations, body, v0)
    return jnp.vdot(v, hv(v)), unravel(v)
