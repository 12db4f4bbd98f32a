"""Loss smoothness during search: the dominant eigenvalue of the α-Hessian of the validation loss.

RobustDARTS (Zela et al., ICLR 2020, §4 and §5.1, the paper's ref. [62]) tracks the dominant
eigenvalue λ_max of ∇²_α L_val(w, α) during a DARTS search: it grows as the search drifts
towards sharp, skip-heavy cells, the "trainability" preference the paper blames for the
vulnerability (§4.1, §5.1). DARTS-ES stops the search when λ_max grows too much.

- :func:`hessian_vector_product`: H·v by reverse-over-reverse (``grad`` of ⟨∇loss, v⟩), never
  forming H. Not forward-over-reverse: the CPU depthwise convolution of
  :mod:`nas_jax.models.ops` is a ``custom_vjp``, which ``jvp`` cannot differentiate.
- :func:`dominant_eigenvalue`: power iteration on H·v inside one ``lax.fori_loop``; returns the
  Rayleigh quotient vᵀHv of the final unit vector (the eigenvalue of largest magnitude, with
  its sign).
- :func:`make_eigenvalue_fn`: the compiled per-epoch measurement of a supernet search: the
  train-mode (batch statistics, as in every search pass) validation loss over a fixed set of
  α-half batches, without augmentation, at the current weights.
- :func:`early_stop_epoch`: the DARTS-ES rule as this project states it (below).

Every search method is measured the same way, without sampling noise: the loss is that of the
supernet's deterministic relaxation (:mod:`nas_jax.models.supernet`): softmax(α) mixing for darts,
snas and PC-DARTS (with β), the Dirichlet mean for drnas, and for the single-path gdas and random
supernets the argmax op of every edge weighted by its softmax(α) entry.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nas_jax import parallel
from nas_jax.data.augment import to_float
from nas_jax.search.darts import SearchState, batch_loss, stacked_sharding


def hessian_vector_product(loss_fn, arch, v):
    """∇²_α loss(α) · v = ∇_α ⟨∇_α loss(α), v⟩ (same pytree structure as ``arch``)."""

    def directional_grad(a):
        g = jax.grad(loss_fn)(a)
        return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True))

    return jax.grad(directional_grad)(arch)


def dominant_eigenvalue(loss_fn, arch, key: jax.Array, iterations: int = 20):
    """(λ, v): power iteration on H = ∇²_α loss for ``iterations`` Hessian-vector products.

    Starts from a standard normal direction; λ = vᵀHv of the final unit vector v. Converges to
    the eigenvalue of largest magnitude at the rate |λ₂/λ₁| per iteration.
    """
    if iterations < 1:
        raise ValueError(f"power iteration needs iterations >= 1, got {iterations}.")
    flat, unravel = ravel_pytree(arch)

    def hv(v):
        return ravel_pytree(hessian_vector_product(loss_fn, arch, unravel(v)))[0]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, v):
        w = hv(v)
        return w / (jnp.linalg.norm(w) + jnp.finfo(w.dtype).tiny)

    v = jax.lax.fori_loop(0, iterations, body, v0)
    return jnp.vdot(v, hv(v)), unravel(v)


@functools.cache
def make_eigenvalue_fn(model, iterations: int, mesh):
    """``fn(state, x_u8 (k, B, H, W, C), y (k, B), key) -> λ_max`` of the mean val loss over the k batches.

    One ``jit`` per (supernet, iterations, mesh); the batch axis is sharded over ``'data'``
    like the search step, so every device count gives the same number.
    """
    def fn(state: SearchState, xs, ys, key):
        images = jax.vmap(to_float)(xs)

        def val_loss(arch):
            losses = jax.vmap(lambda x, y: batch_loss(model, state.params, state.batch_stats, arch, x, y)[0])(
                images, ys)
            return jnp.mean(losses)

        return dominant_eigenvalue(val_loss, state.arch, key, iterations)[0]

    rep, stacked = parallel.replicated(mesh), stacked_sharding(mesh)
    return jax.jit(fn, in_shardings=(rep, stacked, stacked, rep), out_shardings=rep)


def early_stop_epoch(eigenvalues: list[float], factor: float, min_epochs: int = 1) -> int | None:
    """DARTS-ES: the first epoch t ≥ ``min_epochs`` at which λ_t > ``factor`` · min_{s<t} λ_s, else None.

    RobustDARTS (§5.1) stops when λ_max has grown over a window; here the rule is a growth
    factor over the smallest value seen so far (``search.early_stop_factor``; 0 or less: off).
    The genotype of the stopped search is the one derived at the epoch of that minimum.
    """
    if factor <= 0:
        return None
    values = np.asarray(eigenvalues, np.float64)
    for t in range(max(1, min_epochs), len(values)):
        floor = np.nanmin(values[:t]) if np.isfinite(values[:t]).any() else np.nan
        if floor > 0 and values[t] > factor * floor:
            return t
    return None


def minimum_epoch(eigenvalues: list[float], before: int) -> int:
    """The epoch (< ``before``) with the smallest λ_max: where DARTS-ES takes its genotype from."""
    return int(np.nanargmin(eigenvalues[:before]))
