"""Gradient variance of per-example gradients (§4 "Gradient variance", Eqn 14, Figure 12; docs/protocol.md §f.3).

Var(g) = E‖g − E g‖² over per-example gradients g_i = ∇_θ CE(f_θ(x_i), y_i) in eval mode (G2), with
respect to every trainable parameter (BN affine included). Two metrics are computed in one pass:

* ``trace_cov``: Σ_j Var_j(g), the trace of the gradient covariance (the paper's Eqn 14, default);
* ``sum_std``: Σ_j √Var_j(g) with every g_i first rescaled to ‖g_i‖ ≤ 5 (the authors' artifact).

Both are computed clipped and unclipped, and divided by the parameter count. Per-example gradients are
``vmap(grad)`` over chunks of ``chunk`` examples inside one compiled ``lax.scan``: this is
``jax.lax.map(..., batch_size=chunk)`` with the reduction fused into the scan carry, so peak memory is
``chunk`` gradients, never n × |θ|. Chunk moments are merged with Chan et al.'s parallel Welford update
(population variance, stable in float32). :func:`per_example_grads` returns the stacked gradients with
``lax.map(batch_size=chunk)`` for small n (tests, NTK).

BN state (docs/protocol.md §f.3 pitfalls): at initialisation eval-mode BN holds its initial running statistics
(mean 0, variance 1) and does not normalise ("raw"); :func:`calibrate_batch_stats` re-estimates the
running statistics on a few training batches ("calibrated").
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import NamedSharding, PartitionSpec

from nas_jax import parallel

WRT = ("params", "input")


def example_loss(apply_fn, variables, x, y):
    """CE of one example (x: H×W×C in [0, 1], y: int) in eval mode (G2, G3)."""
    logits = apply_fn(variables, x[None], train=False)[0]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _grad_fn(apply_fn, variables, wrt: str, loss=example_loss):
    """(x, y) -> gradient of ``loss(apply_fn, variables, x, y)`` (default: the example loss) w.r.t. the
    parameters (a pytree) or the input."""
    if wrt == "params":
        rest = {k: v for k, v in variables.items() if k != "params"}

        def g(xy):
            return jax.grad(lambda p: loss(apply_fn, {"params": p, **rest}, *xy))(variables["params"])
    elif wrt == "input":
        def g(xy):
            return jax.grad(lambda x: loss(apply_fn, variables, x, xy[1]))(xy[0])
    else:
        raise ValueError(f"unknown wrt {wrt!r}; valid: {WRT}.")
    return g


def flat_rows(tree) -> jax.Array:
    """A pytree of per-example arrays (leading axis k) as a (k, P) matrix."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)


@functools.partial(jax.jit, static_argnames=("apply_fn", "wrt", "chunk", "loss"))
def per_example_grads(apply_fn, variables, x, y, *, wrt: str = "params", chunk: int = 16, loss=example_loss):
    """Stacked per-example gradients of ``loss`` (leading axis n): ``lax.map(grad, batch_size=chunk)``."""
    return jax.lax.map(_grad_fn(apply_fn, variables, wrt, loss), (x, y), batch_size=chunk)


# ----------------------------------------------------------------------------
# Moments: chunked, fused reduction
# ----------------------------------------------------------------------------


def _chunk_moments(rows, mask):
    """Weighted count, mean and M2 = Σ w (g − mean)² of one chunk's rows (k, P)."""
    count = mask.sum()
    mean = (mask[:, None] * rows).sum(0) / jnp.maximum(count, 1.0)
    m2 = (mask[:, None] * (rows - mean) ** 2).sum(0)
    return count, mean, m2


def _merge(a, b):
    """Chan et al.'s parallel update of (count, mean, M2)."""
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n = na + nb
    delta = mb - ma
    frac = nb / jnp.maximum(n, 1.0)
    return n, ma + delta * frac, m2a + m2b + delta**2 * na * frac


def clip_rows(rows, clip_norm: float):
    """Rescale each row to norm ≤ clip_norm (PyTorch ``clip_grad_norm_``: factor c / (‖g‖ + 1e-6))."""
    norms = jnp.linalg.norm(rows, axis=1, keepdims=True)
    return rows * jnp.minimum(1.0, clip_norm / (norms + 1e-6))


def moments_scan(row_fn, xs, ys, mask, clip_norm: float):
    """Per-coordinate (count, mean, M2) of the rows ``row_fn(x_chunk, y_chunk) -> (k, P)``, unclipped
    and clipped, accumulated chunk by chunk. ``xs``/``ys``/``mask`` have a leading (n_chunks, k) shape;
    rows with mask 0 (padding) are ignored."""

    def body(carry, inputs):
        x, y, m = inputs
        rows = row_fn(x, y)
        raw, clipped = carry
        new = (_merge(raw, _chunk_moments(rows, m)), _merge(clipped, _chunk_moments(clip_rows(rows, clip_norm), m)))
        return new, None

    p = jax.eval_shape(row_fn, xs[0], ys[0]).shape[1]
    zero = (jnp.zeros(()), jnp.zeros((p,)), jnp.zeros((p,)))
    (raw, clipped), _ = jax.lax.scan(body, (zero, zero), (xs, ys, mask))
    return raw, clipped


def summarize(moments) -> dict[str, jax.Array]:
    """trace (Σ Var_j), sum of stds (Σ √Var_j), ‖E g‖² and P from (count, mean, M2); population variance."""
    n, mean, m2 = moments
    var = jnp.maximum(m2 / n, 0.0)
    return {"trace_cov": var.sum(), "sum_std": jnp.sqrt(var).sum(), "mean_grad_sq_norm": (mean**2).sum()}


@functools.partial(jax.jit, static_argnames=("apply_fn", "wrt", "clip_norm"))
def _model_moments(apply_fn, variables, xs, ys, mask, wrt: str, clip_norm: float):
    g = _grad_fn(apply_fn, variables, wrt)

    def row_fn(x, y):
        return flat_rows(jax.vmap(lambda xi, yi: g((xi, yi)))(x, y))

    raw, clipped = moments_scan(row_fn, xs, ys, mask, clip_norm)
    return summarize(raw), summarize(clipped)


def chunked(a: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``a`` to a multiple of ``chunk`` (repeating its last row) and reshape to (n_chunks, chunk, ...);
    also return the (n_chunks, chunk) mask of real rows."""
    n = len(a)
    pad = -n % chunk
    padded = np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return padded.reshape(-1, chunk, *a.shape[1:]), mask.reshape(-1, chunk)


def _shard_chunks(a: np.ndarray, mesh):
    """Place (n_chunks, k, ...) with the k examples of every chunk sharded over the data mesh."""
    sharding = NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


def auto_chunk() -> int:
    """The chunk for ``chunk=0``: 1 on CPU, where XLA runs a vmapped chunk of per-example convolution
    gradients as grouped convolutions, slower than one example at a time (BENCHMARKS.md: ResNet-18
    1.5 vs 0.44 gradients/s at chunk 16); 32 on GPU/TPU."""
    return 1 if jax.default_backend() == "cpu" else 32


def _prepare(x, y, wrt: str, chunk: int):
    """Validated, padded and sharded (xs, ys, mask) with the chunk rounded to the device count."""
    if wrt not in WRT:
        raise ValueError(f"unknown wrt {wrt!r}; valid: {WRT}.")
    if len(x) < 2:
        raise ValueError(f"gradient variance needs at least 2 examples, got {len(x)}.")
    if chunk < 0:
        raise ValueError(f"chunk must be >= 1 (or 0: automatic), got {chunk}.")
    chunk = chunk or auto_chunk()
    mesh = parallel.data_mesh()
    n_dev = mesh.devices.size
    chunk = max(n_dev, -(-min(chunk, len(x)) // n_dev) * n_dev)
    xs, mask = chunked(np.asarray(x, np.float32), chunk)
    ys, _ = chunked(np.asarray(y, np.int32), chunk)
    return tuple(_shard_chunks(a, mesh) for a in (xs, ys, mask))


def _metrics(raw, clipped, p: int) -> dict:
    out = {"trace_cov": float(raw["trace_cov"]), "sum_std": float(clipped["sum_std"]),
           "trace_cov_clipped": float(clipped["trace_cov"]), "sum_std_unclipped": float(raw["sum_std"]),
           "mean_grad_sq_norm": float(raw["mean_grad_sq_norm"]), "num_params": p}
    for key in ("trace_cov", "sum_std", "trace_cov_clipped", "sum_std_unclipped"):
        out[f"{key}_per_param"] = out[key] / p
    return out


def _num_params(variables, x, wrt: str) -> int:
    if wrt == "input":
        return int(x[0].size)
    return sum(int(a.size) for a in jax.tree_util.tree_leaves(variables["params"]))


def gradient_variance(apply_fn, variables, x: np.ndarray, y: np.ndarray, *, wrt: str = "params", chunk: int = 32,
                      clip_norm: float = 5.0) -> dict[str, float]:
    """All four variance metrics of the per-example gradients of ``(x, y)`` (float images in [0, 1]).

    Returns ``trace_cov`` (unclipped, Eqn 14), ``sum_std`` (clipped, the artifact's), ``trace_cov_clipped``,
    ``sum_std_unclipped``, each also ``*_per_param``, plus ``mean_grad_sq_norm`` (‖E g‖²) and ``num_params``.
    The ``chunk`` examples of each step are sharded over the device mesh (rounded up to a multiple of the
    device count).
    """
    raw, clipped = _model_moments(apply_fn, variables, *_prepare(x, y, wrt, chunk), wrt, float(clip_norm))
    return _metrics(raw, clipped, _num_params(variables, x, wrt))


def compile_gradient_variance(apply_fn, variables, x: np.ndarray, y: np.ndarray, *, wrt: str = "params",
                              chunk: int = 32, clip_norm: float = 5.0):
    """Ahead-of-time :func:`gradient_variance`: returns ``(run, memory)``, where ``run()`` computes the same
    metrics with the compiled program and ``memory`` is XLA's compiled memory footprint in bytes: ``temp``
    (the working set, which grows with ``chunk``, not with n), ``argument``, ``output`` and their ``total``."""
    args = _prepare(x, y, wrt, chunk)
    compiled = _model_moments.lower(apply_fn, variables, *args, wrt, float(clip_norm)).compile()
    m = compiled.memory_analysis()
    memory = {"temp": int(m.temp_size_in_bytes), "argument": int(m.argument_size_in_bytes),
              "output": int(m.output_size_in_bytes)}
    memory["total"] = sum(memory.values())
    p = _num_params(variables, x, wrt)

    def run() -> dict:
        return _metrics(*compiled(variables, *args), p)

    return run, memory


# ----------------------------------------------------------------------------
# BN state: raw initial statistics or re-estimated ("calibrated") ones
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _batch_statistics(apply, variables, x, key):
    """This batch's BN statistics. Flax updates running = m·running + (1 − m)·batch, so a train-mode pass
    from running statistics 0 gives (1 − m)·batch; each BatchNorm's own momentum m is read while tracing."""
    momentum: dict[tuple[str, ...], float] = {}

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            momentum[tuple(context.module.scope.path)] = float(context.module.momentum)
        return next_fun(*args, **kwargs)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, variables["batch_stats"])
    with nn.intercept_methods(interceptor):
        _, updates = apply({**variables, "batch_stats": zeros}, x, train=True, rngs={"dropout": key},
                           mutable=["batch_stats"])
    flat = flatten_dict(updates["batch_stats"])
    unknown = sorted({path[:-1] for path in flat} - set(momentum))
    if unknown:
        raise ValueError(f"batch_stats {unknown} are not kept by a flax.linen.BatchNorm; cannot calibrate them.")
    return unflatten_dict({path: v / (1.0 - momentum[path[:-1]]) for path, v in flat.items()})


def calibrate_batch_stats(apply, variables: dict, batches, key: jax.Array) -> dict:
    """``variables`` with BN running statistics replaced by the average of the per-batch statistics of
    ``batches`` (an iterable of float image batches), as PyTorch's cumulative average (momentum=None).

    ``apply`` is the Flax ``model.apply`` (it must accept ``train``, ``rngs`` and ``mutable``). The passes
    run in train mode, as during training: dropout is on, so the statistics match what training saw.
    Models without BN are returned unchanged.
    """
    if not jax.tree_util.tree_leaves(variables.get("batch_stats", {})):
        return variables
    total, count = None, 0
    for i, x in enumerate(batches):
        stats = _batch_statistics(apply, variables, jnp.asarray(x, jnp.float32), jax.random.fold_in(key, i))
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
        count += 1
    if count == 0:
        raise ValueError("calibrate_batch_stats needs at least one batch; set a positive number of batches.")
    return {**variables, "batch_stats": jax.tree_util.tree_map(lambda a: a / count, total)}
