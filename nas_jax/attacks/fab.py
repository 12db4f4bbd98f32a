"""FAB-T: the targeted fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack", §3, Eqns 6–9; the targeted version of the AutoAttack paper, §4).

For target t the boundary f = z_t − z_y is linearised at x_i; its minimal-norm projections in the [0, 1] box from
x_i (δ_i) and from x (δ_0) give the step (Eqn 8)

    x_{i+1} = P_box((1 − α)(x_i + η δ_i) + α (x + η δ_0)),   α = min(‖δ_i‖ / (‖δ_i‖ + ‖δ_0‖), α_max)

with η = 1.05, α_max = 0.1; a misclassified x_{i+1} is kept if closest so far and pulled back,
x_{i+1} ← x + 0.9 (x_{i+1} − x) (§3.3). Success: the closest adversarial has ‖·‖ ≤ ε (AutoAttack's use). The
box-constrained projection is exact per example (:func:`hyperplane_box_projection`). Per target (2nd ...
(n_target_classes + 1)-th most likely clean class) ``n_restarts`` runs, the first from x, later ones from a
random point at distance ε/2; loops and masks as in :mod:`nas_jax.attacks.apgd`; eval mode.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from nas_jax.attacks.apgd import (
    ApplyFn,
    AttackOutcome,
    attack_runs,
    misclassified,
    per_example,
    prepare_attack,
    ranked_class,
    row_norm,
    sphere_start,
)

FAB_STATIC_ARGNAMES = ("apply_fn", "norm", "n_iter", "n_restarts", "n_target_classes")


def hyperplane_box_projection(p: jax.Array, w: jax.Array, c: jax.Array, norm: str) -> jax.Array:
    """Minimal-norm δ with wᵀδ = c and p + δ ∈ [0, 1]^d, per row of ``p``, ``w`` ([N, d]) and ``c`` ([N]).

    Moving coordinate i in direction s_i = sign(c·w_i), with room u_i (1 − p_i or p_i), the optimum is
    L∞: δ_i = s_i·min(θ, u_i); L2: δ_i = s_i·min(θ|w_i|, u_i), with θ ≥ 0 solving the piecewise-linear
    F(θ) = Σ_i |w_i||δ_i| = |c|. F is found exactly over the sorted breakpoints (u_i, resp. u_i/|w_i|); when
    |c| is out of reach inside the box every coordinate moves to its bound.
    """
    s = jnp.sign(c)[:, None] * jnp.sign(w)
    absw = jnp.abs(w)
    room = jnp.where(s > 0, 1.0 - p, jnp.where(s < 0, p, 0.0))
    if norm == "linf":
        brk, slope = room, absw
    else:
        brk, slope = jnp.where(absw > 0, room / jnp.maximum(absw, 1e-30), 0.0), absw * absw
    sat = absw * room  # contribution of a saturated coordinate
    order = jnp.argsort(brk, axis=-1)
    b_sorted = jnp.take_along_axis(brk, order, axis=-1)
    a_sorted = jnp.take_along_axis(sat, order, axis=-1)
    s_sorted = jnp.take_along_axis(slope, order, axis=-1)
    a_before = jnp.cumsum(a_sorted, axis=-1) - a_sorted  # saturated strictly before breakpoint k
    s_from = jnp.flip(jnp.cumsum(jnp.flip(s_sorted, -1), axis=-1), -1)  # slopes of k and later
    f_at = a_before + b_sorted * s_from  # F(b_k)
    target = jnp.abs(c)[:, None]
    reach = f_at >= target
    k = jnp.argmax(reach, axis=-1)  # first breakpoint where F reaches |c|
    feasible = jnp.any(reach, axis=-1)
    a_k = jnp.take_along_axis(a_before, k[:, None], -1)[:, 0]
    s_k = jnp.take_along_axis(s_from, k[:, None], -1)[:, 0]
    theta = jnp.where(feasible, (jnp.abs(c) - a_k) / jnp.maximum(s_k, 1e-30), jnp.max(brk, axis=-1))
    theta = theta[:, None]
    mag = jnp.minimum(theta, room) if norm == "linf" else jnp.minimum(theta * absw, room)
    return s * mag


def _fab_run(grad_fn, predict, x, labels, targets, active, start, eps, norm, n_iter, alpha_max, eta, beta):
    """One FAB run towards ``targets``; returns (fooled within ε, closest adversarial, iterations run)."""
    n = x.shape[0]
    x0 = x.reshape(n, -1)

    def body(c):
        i, x1, best, x_best = c
        df, dg = grad_fn(x1, labels, targets)  # f = z_t − z_y and its gradient
        w = dg.reshape(n, -1)
        # Linearised boundary f(x1) + wᵀ(z − x1) = 0; project x1 and x0 onto it (inside the box).
        xf = x1.reshape(n, -1)
        d1 = hyperplane_box_projection(xf, w, -df, norm)
        d2 = hyperplane_box_projection(x0, w, jnp.sum(w * (xf - x0), -1) - df, norm)
        a1 = jnp.maximum(row_norm(d1, norm), 1e-8)
        a2 = jnp.maximum(row_norm(d2, norm), 1e-8)
        alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
        x_new = jnp.clip((xf + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha, 0.0, 1.0)
        x_new = x_new.reshape(x.shape)
        adv = active & misclassified(predict(x_new), labels)
        dist = row_norm(x_new - x, norm)
        closer = adv & (dist < best)
        x_best = jnp.where(per_example(closer, x), x_new, x_best)
        best = jnp.where(closer, dist, best)
        x1 = jnp.where(per_example(adv, x), x + beta * (x_new - x), x_new)  # backward step
        return i + 1, x1, best, x_best

    init = (jnp.int32(0), start, jnp.full((n,), jnp.inf, x.dtype), x)
    i, _, best, x_best = jax.lax.while_loop(lambda c: (c[0] < n_iter) & jnp.any(active), body, init)
    return active & (best <= eps), x_best, i


def fab_targeted_attack(apply_fn: ApplyFn, variables: Any, x: jax.Array, labels: jax.Array, key: jax.Array,
                        eps=8 / 255, norm: str = "linf", n_iter: int = 100, n_restarts: int = 1,
                        n_target_classes: int = 9, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                        active: jax.Array | None = None) -> AttackOutcome:
    """FAB-T on ``x`` (NHWC in [0, 1]); ``fooled`` = a misclassified point within ε was found. ``queries`` per attacked
    example: 1 clean forward, then per iteration 1 forward+backward and 1 forward (the check).
    """
    labels, active, clean = prepare_attack(apply_fn, variables, x, labels, active, norm, n_iter, n_restarts,
                                           n_target_classes)
    rows = jnp.arange(x.shape[0])

    def margin(x_adv, y, t):
        logits = apply_fn(variables, x_adv)
        f = logits[rows, t] - logits[rows, y]
        return jnp.sum(f), f

    def grad_fn(x_adv, y, t):
        dg, df = jax.grad(margin, has_aux=True)(x_adv, y, t)
        return df, dg

    def run(r, todo):
        targets = ranked_class(clean, 2 + r // n_restarts)
        random = sphere_start(jax.random.fold_in(key, r), x, 0.5 * eps, norm)
        start = jnp.where(r % n_restarts == 0, x, random)
        f, xa, iters = _fab_run(grad_fn, functools.partial(apply_fn, variables), x, labels, targets, todo, start, eps,
                                norm, n_iter, alpha_max, eta, beta)
        return f, xa, 2 * iters

    return attack_runs(run, x, active, n_restarts * n_target_classes, active.astype(jnp.int32))


fab_targeted_attack_jit = jax.jit(fab_targeted_attack, static_argnames=FAB_STATIC_ARGNAMES)
