"""Square Attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial attack via
random search", Algorithms 1–3), L∞ and L2, score-based: the model is only queried for its logits.

Random search on the margin z_y − max_{j≠y} z_j: each iteration proposes a change inside a random square window
(a fraction p of the pixels, p halving on the schedule of §3 rescaled to the budget as in AutoAttack), queries
once per example still to fool, and keeps the proposal when the margin decreased or the example is fooled.
L∞ (Alg. 2): start at vertical stripes x ± ε; a proposal sets the window to x ± ε, one random sign per channel.
L2 (Alg. 3): start at a grid of ±"pseudo-Gaussian" blocks rescaled to ‖δ‖ = ε; a proposal moves the mass of a
second window into the first, then δ ← ε·δ/‖δ‖.

Queries are exact per example (1 for the start, 1 per iteration while attacked), never more than ``n_queries``
(AutoAttack's reference takes one more). Windows and signs are drawn per example (the paper's Algorithms;
AutoAttack shares one per batch). Fixed shapes: windows are coordinate masks; the loop is a ``lax.while_loop``
that stops when every active example is fooled or the budget is spent.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nas_jax.attacks.apgd import ApplyFn, AttackOutcome, check_norm, margin, misclassified, per_example, row_norm

SQUARE_STATIC_ARGNAMES = ("apply_fn", "norm", "n_queries")
_P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i, n_queries: int, p_init: float) -> jax.Array:
    """Fraction of pixels changed at iteration ``i`` (traced): p_init / 2^(#thresholds passed)."""
    it = jnp.floor(i / n_queries * 10000)
    passed = jnp.sum(it > jnp.asarray(_P_THRESHOLDS, jnp.float32))
    return p_init / 2.0 ** passed


def _window(vh, vw, s, h: int, w: int):
    """Per-example masks [N, h, w] of the s×s windows with top-left corners (vh, vw), and local coordinates."""
    a = jnp.arange(h)[None, :, None] - vh[:, None, None]
    b = jnp.arange(w)[None, None, :] - vw[:, None, None]
    inside = (a >= 0) & (a < s) & (b >= 0) & (b < s)
    return inside, a, b


def _harmonic_table(size: int) -> jax.Array:
    """G[n] = Σ_{m=1}^{n} 1/m² for n = 0..size."""
    return jnp.concatenate([jnp.zeros(1), jnp.cumsum(1.0 / jnp.arange(1, size + 1, dtype=jnp.float32) ** 2)])


def _rect(a, b, rows, cols, table):
    """Unnormalised pseudo-Gaussian rectangle rows×cols at local (a, b): Σ_{m=r+1}^{K} 1/m², r the Chebyshev
    distance to the centre (rows//2, cols//2), K = max(rows//2, cols//2) + 1; 0 outside."""
    r = jnp.maximum(jnp.abs(a - rows // 2), jnp.abs(b - cols // 2))
    k = jnp.maximum(rows // 2, cols // 2) + 1
    inside = (a >= 0) & (a < rows) & (b >= 0) & (b < cols)
    return jnp.where(inside, table[k] - table[jnp.clip(r, 0, k)], 0.0)


def block_pattern(a, b, s, transpose, table, grid: int) -> jax.Array:
    """The s×s block of unit L2 norm at local coordinates (a, b) (0 outside): the top ⌊s/2⌋ rows a positive
    rectangle, the rest a negative one, each of unit norm; ``transpose`` (per example) swaps the axes."""
    t = transpose.reshape(transpose.shape + (1,) * (a.ndim - transpose.ndim))
    a, b = jnp.where(t, b, a), jnp.where(t, a, b)
    half = s // 2
    # Norms of the two halves, from the same pattern laid at the origin of a grid × grid patch.
    ga, gb = jnp.arange(grid)[:, None], jnp.arange(grid)[None, :]
    top_norm = jnp.sqrt(jnp.sum(_rect(ga, gb, half, s, table) ** 2))
    bottom_norm = jnp.sqrt(jnp.sum(_rect(ga, gb, s - half, s, table) ** 2))
    top = _rect(a, b, half, s, table) / jnp.maximum(top_norm, 1e-12)
    bottom = _rect(a - half, b, s - half, s, table) / jnp.maximum(bottom_norm, 1e-12)
    halves = jnp.where(half > 0, 2.0, 1.0)
    return (top - bottom) / jnp.sqrt(halves)


def _signs(key, shape) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0)


def _init_linf(key, x, eps):
    n, _, w, c = x.shape
    return jnp.clip(x + eps * _signs(key, (n, 1, w, c)), 0.0, 1.0)


def _init_l2(key, x, eps, table):
    n, h, w, c = x.shape
    s0 = max(h // 5, 1)
    start, tiles = (h - 5 * s0) // 2, h // s0
    sign_key, t_key = jax.random.split(key)
    signs = _signs(sign_key, (n, tiles, tiles, c))
    transpose = jax.random.bernoulli(t_key, 0.5, (n, tiles, tiles))
    rows, cols = jnp.arange(h) - start, jnp.arange(w) - start
    ti, tj = jnp.clip(rows // s0, 0, tiles - 1), jnp.clip(cols // s0, 0, tiles - 1)
    valid = ((rows >= 0) & (rows // s0 < tiles))[:, None] & ((cols >= 0) & (cols // s0 < tiles))[None, :]
    a, b = jnp.broadcast_to((rows % s0)[:, None], (h, w)), jnp.broadcast_to((cols % s0)[None, :], (h, w))
    tr = transpose[:, ti][:, :, tj]  # [N, h, w]
    pattern = block_pattern(a[None], b[None], s0, tr, table, max(h, w)) * valid[None]
    delta = pattern[..., None] * signs[:, ti][:, :, tj]
    delta = delta / per_example(jnp.maximum(row_norm(delta, "l2"), 1e-12), x)
    return jnp.clip(x + eps * delta, 0.0, 1.0)


def _propose_linf(key, x, x_best, eps, p):
    n, h, w, c = x.shape
    s = jnp.clip(jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32), 1, min(h, w) - 1)
    kh, kw, ks = jax.random.split(key, 3)
    vh = jax.random.randint(kh, (n,), 0, h - s)
    vw = jax.random.randint(kw, (n,), 0, w - s)
    inside, _, _ = _window(vh, vw, s, h, w)
    window = x + eps * _signs(ks, (n, 1, 1, c))
    return jnp.clip(jnp.where(inside[..., None], window, x_best), 0.0, 1.0)


def _propose_l2(key, x, x_best, eps, p, table):
    n, h, w, c = x.shape
    s = jnp.maximum(jnp.round(jnp.sqrt(p * h * w)).astype(jnp.int32), 3)
    s = jnp.minimum(s + (s % 2 == 0), min(h, w) - 1)
    k1h, k1w, k2h, k2w, ks, kt = jax.random.split(key, 6)
    in1, a, b = _window(jax.random.randint(k1h, (n,), 0, h - s), jax.random.randint(k1w, (n,), 0, w - s), s, h, w)
    in2, _, _ = _window(jax.random.randint(k2h, (n,), 0, h - s), jax.random.randint(k2w, (n,), 0, w - s), s, h, w)
    m1, m2 = in1[..., None].astype(x.dtype), in2[..., None].astype(x.dtype)
    delta = x_best - x

    def window_norm(v):  # per example and channel, over the spatial window
        return jnp.sqrt(jnp.sum(v * v, axis=(1, 2), keepdims=True))

    norm_image = per_example(row_norm(delta, "l2"), x)
    norm_windows = per_example(row_norm(delta * jnp.maximum(m1, m2), "l2"), x)
    block = block_pattern(a, b, s, jax.random.bernoulli(kt, 0.5, (n,)), table, max(h, w))[..., None] * m1
    new = block * _signs(ks, (n, 1, 1, c)) + delta * m1 / (1e-12 + window_norm(delta * m1))
    scale = jnp.sqrt(jnp.maximum(eps**2 - norm_image**2, 0.0) / c + norm_windows**2)
    new = new / (1e-12 + window_norm(new)) * scale
    delta = delta * (1 - m2) * (1 - m1) + new
    delta = delta / per_example(row_norm(delta, "l2") + 1e-12, x)
    return jnp.clip(x + eps * delta, 0.0, 1.0)


def square_attack(apply_fn: ApplyFn, variables: Any, x: jax.Array, labels: jax.Array, key: jax.Array, eps=8 / 255,
                  norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8,
                  active: jax.Array | None = None) -> AttackOutcome:
    """Square Attack on ``x`` (NHWC in [0, 1]) through ``apply_fn(variables, images) -> logits`` (forward only).

    ``queries`` is the exact number of model evaluations per example (≤ ``n_queries``; 0 when not ``active``).
    """
    check_norm(norm)
    if n_queries < 1:
        raise ValueError(f"n_queries={n_queries} must be >= 1 (the first query evaluates the start).")
    if x.ndim != 4 or min(x.shape[1:3]) < 2:
        raise ValueError(f"Square needs NHWC images of at least 2x2 pixels, got shape {x.shape}.")
    labels = jnp.asarray(labels, jnp.int32)
    n = x.shape[0]
    active = jnp.ones((n,), bool) if active is None else jnp.asarray(active, bool)
    table = _harmonic_table(2 * max(x.shape[1:3]) + 2)
    init_key, loop_key = jax.random.split(key)
    x_best = _init_linf(init_key, x, eps) if norm == "linf" else _init_l2(init_key, x, eps, table)
    logits = apply_fn(variables, x_best)
    loss_min = margin(logits, labels)
    fooled = active & misclassified(logits, labels)
    queries = active.astype(jnp.int32)

    def body(c):
        i, x_best, loss_min, fooled, queries = c
        todo = active & ~fooled
        p = p_schedule(i, n_queries, p_init)
        ikey = jax.random.fold_in(loop_key, i)
        x_new = _propose_linf(ikey, x, x_best, eps, p) if norm == "linf" else _propose_l2(ikey, x, x_best, eps, p,
                                                                                          table)
        logits = apply_fn(variables, x_new)
        loss = margin(logits, labels)
        now_fooled = todo & misclassified(logits, labels)
        accept = todo & ((loss < loss_min) | now_fooled)
        return (i + 1, jnp.where(per_example(accept, x), x_new, x_best), jnp.where(accept, loss, loss_min),
                fooled | now_fooled, queries + todo.astype(jnp.int32))

    def cond(c):
        return (c[0] < n_queries - 1) & jnp.any(active & ~c[3])

    _, x_best, _, fooled, queries = jax.lax.while_loop(cond, body, (jnp.int32(0), x_best, loss_min, fooled, queries))
    return AttackOutcome(fooled=fooled, x_adv=jnp.where(per_example(fooled, x), x_best, x), queries=queries)


square_attack_jit = jax.jit(square_attack, static_argnames=SQUARE_STATIC_ARGNAMES)
