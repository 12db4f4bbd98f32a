"""Loss smoothness during search: the dominant eigenvalue of the α-Hessian of the validation loss.

RobustDARTS (Zela et al., ICLR 2020, §4 and §5.1, the paper's ref. [62]) tracks λ_max of ∇²_α L_val(w, α) during
a DARTS search: it grows as the search drifts towards sharp, skip-heavy cells (the paper's §4.1, §5.1), and
DARTS-ES stops the search when it grows too much. :func:`make_eigenvalue_fn` measures it per epoch by power
iteration (:mod:`nas_jax.curvature`) on the train-mode validation loss over fixed un-augmented α-half batches;
:func:`early_stop_epoch` is the DARTS-ES rule. Every search method is measured without sampling noise, on the
supernet's deterministic relaxation (:mod:`nas_jax.models.supernet`; single-path supernets: the argmax op of each
edge weighted by its softmax(α) entry).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import parallel
from nas_jax.curvature import dominant_eigenvalue
from nas_jax.data.augment import to_float
from nas_jax.search.darts import SearchState, batch_loss, stacked_sharding


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

    RobustDARTS (§5.1) stops when λ_max has grown over a window; here a growth factor over the smallest value so far
    (``search.early_stop_factor``; ≤ 0: off). The stopped search keeps the genotype of that minimum's epoch.
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
