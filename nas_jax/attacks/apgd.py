"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", §3 and Algorithm 1), L∞ and L2, with the cross-entropy or the DLR loss (§4, Eqn 6) and
its targeted variant (APGD-T).

Per run: a uniform start on the ε-sphere, step η = 2ε, the momentum step of §3.1 (α = 0.75, none on the first
step), and at the checkpoints (intervals of 22% of the iterations, then 3% shorter each time, at least 6%) an
example's step halves and it restarts from its best point when its loss increased in at most ρ = 0.75 of the
steps since, or its step was not halved last time and its best loss has not improved. Every example is stepped;
``active`` selects those attacked, each frozen at its first misclassified iterate (``x_adv``). Runs (restarts;
APGD-T: one per target, the 2nd ... (n_target_classes + 1)-th most likely clean class) and iterations are
``lax.while_loop``s that stop when every active example is fooled. Success is misclassification for every loss,
as in AutoAttack; eval mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nas_jax.attacks.evasion import batch_noise, check_norm, per_example, ranked_class

ApplyFn = Callable[[Any, jax.Array], jax.Array]
LOSSES = ("ce", "dlr", "dlr_targeted")
APGD_STATIC_ARGNAMES = ("apply_fn", "norm", "n_iter", "n_restarts", "loss", "n_target_classes")


class AttackOutcome(NamedTuple):
    """Per-example result of one attack of the AutoAttack ensemble: ``fooled`` (misclassified within the
    budget), ``x_adv`` (the adversarial where fooled, else ``x``) and ``queries`` (model evaluations spent)."""

    fooled: jax.Array
    x_adv: jax.Array
    queries: jax.Array


# ----------------------------------------------------------------------------
# Geometry shared by APGD, FAB and Square
# ----------------------------------------------------------------------------


def row_norm(v: jax.Array, norm: str) -> jax.Array:
    flat = v.reshape(v.shape[0], -1)
    return jnp.max(jnp.abs(flat), axis=-1) if norm == "linf" else jnp.sqrt(jnp.sum(flat * flat, axis=-1))


def project(x0: jax.Array, x_new: jax.Array, eps, norm: str) -> jax.Array:
    """Onto the ε-ball around ``x0`` (per example), then the [0, 1] box; box clipping keeps the ball."""
    delta = x_new - x0
    if norm == "linf":
        delta = optax.projections.projection_linf_ball(delta, eps)
    else:
        delta = jax.vmap(lambda d: optax.projections.projection_l2_ball(d, eps))(delta)
    return optax.projections.projection_box(x0 + delta, 0.0, 1.0)


def sphere_start(key: jax.Array, x: jax.Array, eps, norm: str) -> jax.Array:
    """x + ε·t/‖t‖ clipped to the box: L∞ with t ~ U(−1, 1)^d, L2 with t ~ N(0, I)."""
    if norm == "linf":
        t = batch_noise(jax.random.uniform, key, x, minval=-1.0, maxval=1.0)
    else:
        t = batch_noise(jax.random.normal, key, x)
    t = t / per_example(jnp.maximum(row_norm(t, norm), 1e-12), x)
    return jnp.clip(x + eps * t, 0.0, 1.0)


def misclassified(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1) != labels


# ----------------------------------------------------------------------------
# Losses (to maximise)
# ----------------------------------------------------------------------------


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """z_y − max_{j≠y} z_j (≤ 0 once misclassified; Square's loss)."""
    z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    other = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return z_y - jnp.max(other, axis=-1)


def dlr_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Untargeted DLR (Eqn 6): −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), shift- and scale-invariant."""
    z_sorted = jnp.sort(logits, axis=-1)
    return -margin(logits, labels) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
    """Targeted DLR (§4): −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)."""
    z_sorted = jnp.sort(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    z_t = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def attack_loss(logits, labels, targets, loss: str) -> jax.Array:
    if loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if loss == "dlr":
        return dlr_loss(logits, labels)
    return dlr_targeted_loss(logits, labels, targets)


# ----------------------------------------------------------------------------
# APGD
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def checkpoint_schedule(n_iter: int) -> tuple[tuple[bool, ...], tuple[int, ...]]:
    """Per iteration i: whether a checkpoint follows it, and the length of the interval it closes (§3.2).
    Intervals: max(⌊0.22·N⌋, 1), then each ⌊0.03·N⌋ (≥ 1) shorter, never below max(⌊0.06·N⌋, 1)."""
    flags, lengths = [False] * n_iter, [0] * n_iter
    length, decrease, minimum = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    i = length - 1
    while i < n_iter:
        flags[i], lengths[i] = True, length
        length = max(length - decrease, minimum)
        i += length
    return tuple(flags), tuple(lengths)


def _step(x0, x_adv, x_prev, grad, step, eps, norm: str, first):
    """The momentum step of §3.1; ``step`` is per example, ``first`` drops the momentum (α = 1)."""
    if norm == "linf":
        direction = jnp.sign(grad)
    else:
        direction = grad / per_example(row_norm(grad, "l2") + 1e-12, grad)
    z = project(x0, x_adv + per_example(step, x0) * direction, eps, norm)
    alpha = jnp.where(first, 1.0, 0.75)
    return project(x0, x_adv + alpha * (z - x_adv) + (1.0 - alpha) * (x_adv - x_prev), eps, norm)


def _apgd_run(loss_and_grad, x, labels, targets, active, key, eps, norm: str, n_iter: int, rho: float):
    """One APGD run from a random start; returns (fooled, x_adv) with x_adv the first misclassified iterate."""
    flags, lengths = checkpoint_schedule(n_iter)
    flags, lengths = jnp.asarray(flags), jnp.asarray(lengths, jnp.float32)
    x_adv = sphere_start(key, x, eps, norm)
    loss, logits, grad = loss_and_grad(x_adv, labels, targets)
    fooled = active & misclassified(logits, labels)
    n = x.shape[0]
    state = {"i": jnp.int32(0), "x_adv": x_adv, "x_prev": x_adv, "grad": grad, "loss": loss, "fooled": fooled,
             "x_out": jnp.where(per_example(fooled, x), x_adv, x), "step": jnp.full((n,), 2.0, x.dtype) * eps,
             "x_best": x_adv, "grad_best": grad, "loss_best": loss, "loss_best_last": loss,
             "increases": jnp.zeros((n,)), "reduced_last": jnp.ones((n,), bool)}

    def body(s):
        i = s["i"]
        x_new = _step(x, s["x_adv"], s["x_prev"], s["grad"], s["step"], eps, norm, i == 0)
        loss, logits, grad = loss_and_grad(x_new, labels, targets)
        new_fooled = active & ~s["fooled"] & misclassified(logits, labels)
        x_out = jnp.where(per_example(new_fooled, x), x_new, s["x_out"])
        better = loss > s["loss_best"]
        x_best = jnp.where(per_example(better, x), x_new, s["x_best"])
        grad_best = jnp.where(per_example(better, x), grad, s["grad_best"])
        loss_best = jnp.where(better, loss, s["loss_best"])
        increases = s["increases"] + (loss > s["loss"])
        # Checkpoint (§3.2): halve and restart from the best point where condition 1 or 2 holds.
        at_check = flags[i]
        cond1 = increases <= rho * lengths[i]
        cond2 = ~s["reduced_last"] & (s["loss_best_last"] >= loss_best)
        reduce = at_check & (cond1 | cond2)
        m = per_example(reduce, x)
        return {"i": i + 1, "x_adv": jnp.where(m, x_best, x_new), "x_prev": s["x_adv"],
                "grad": jnp.where(m, grad_best, grad), "loss": loss, "fooled": s["fooled"] | new_fooled,
                "x_out": x_out, "step": jnp.where(reduce, 0.5 * s["step"], s["step"]), "x_best": x_best,
                "grad_best": grad_best, "loss_best": loss_best,
                "loss_best_last": jnp.where(at_check, loss_best, s["loss_best_last"]),
                "increases": jnp.where(at_check, 0.0, increases),
                "reduced_last": jnp.where(at_check, reduce, s["reduced_last"])}

    def cond(s):
        return (s["i"] < n_iter) & jnp.any(active & ~s["fooled"])

    s = jax.lax.while_loop(cond, body, state)
    return s["fooled"], s["x_out"], s["i"]


def prepare_attack(apply_fn: ApplyFn, variables: Any, x: jax.Array, labels, active, norm: str, n_iter: int,
                   n_restarts: int, n_target_classes: int | None = None):
    """The checks and set-up APGD and FAB-T share -> (int32 labels, active mask, clean logits)."""
    check_norm(norm)
    if n_iter < 1 or n_restarts < 1:
        raise ValueError(f"n_iter={n_iter} and n_restarts={n_restarts} must both be >= 1.")
    active = jnp.ones((x.shape[0],), bool) if active is None else jnp.asarray(active, bool)
    clean = apply_fn(variables, x)
    num_classes = clean.shape[-1]
    if n_target_classes is not None and not 1 <= n_target_classes <= num_classes - 1:
        raise ValueError(f"n_target_classes={n_target_classes} must be in [1, {num_classes - 1}] for "
                         f"{num_classes} classes.")
    return jnp.asarray(labels, jnp.int32), active, clean


def attack_runs(run, x: jax.Array, active: jax.Array, runs: int, queries: jax.Array) -> AttackOutcome:
    """Runs r = 0, 1, ... of ``run(r, todo) -> (fooled, x_adv, queries per example of todo)`` on the ``active``
    examples not fooled yet (``todo``), until ``runs`` or none is left (APGD, FAB-T); ``queries``: the initial
    count. Each fooled example keeps the x_adv of the run that fooled it."""

    def body(c):
        r, fooled, x_out, queries = c
        todo = active & ~fooled
        f, xa, q = run(r, todo)
        return r + 1, fooled | f, jnp.where(per_example(f, x), xa, x_out), queries + q * todo.astype(jnp.int32)

    def cond(c):
        return (c[0] < runs) & jnp.any(active & ~c[1])

    init = (jnp.int32(0), jnp.zeros((x.shape[0],), bool), x, queries)
    _, fooled, x_out, queries = jax.lax.while_loop(cond, body, init)
    return AttackOutcome(fooled=fooled, x_adv=x_out, queries=queries)


def apgd_attack(apply_fn: ApplyFn, variables: Any, x: jax.Array, labels: jax.Array, key: jax.Array, eps=8 / 255,
                norm: str = "linf", n_iter: int = 100, n_restarts: int = 1, loss: str = "ce",
                n_target_classes: int = 9, rho: float = 0.75, active: jax.Array | None = None) -> AttackOutcome:
    """APGD-CE (``loss='ce'``), APGD-DLR (``'dlr'``) or APGD-T (``'dlr_targeted'``: ``n_target_classes`` runs
    per restart, against the 2nd, 3rd, ... most likely clean class) on ``x`` (NHWC in [0, 1]).

    ``apply_fn`` in eval mode; ``active`` (default: all) selects the examples attacked, the others come back unfooled
    with x_adv = x. ``queries``: passes per attacked example (APGD-T 1 clean, 1 per start, 1 per iteration).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose one of {LOSSES}.")
    targeted = loss == "dlr_targeted"
    labels, active, clean = prepare_attack(apply_fn, variables, x, labels, active, norm, n_iter, n_restarts,
                                           n_target_classes if targeted else None)
    num_classes = clean.shape[-1]
    if loss != "ce" and num_classes < (4 if targeted else 3):
        raise ValueError(f"the {loss} loss needs at least {4 if targeted else 3} classes, the model has {num_classes}.")

    def total(x_adv, y, t):
        logits = apply_fn(variables, x_adv)
        per = attack_loss(logits, y, t, loss)
        return jnp.sum(per), (per, logits)  # examples are independent in eval mode

    def loss_and_grad(x_adv, y, t):
        (_, (per, logits)), grad = jax.value_and_grad(total, has_aux=True)(x_adv, y, t)
        return per, logits, grad

    def run(r, todo):
        targets = ranked_class(clean, 2 + r // n_restarts) if targeted else labels
        f, xa, iters = _apgd_run(loss_and_grad, x, labels, targets, todo, jax.random.fold_in(key, r), eps, norm,
                                 n_iter, rho)
        return f, xa, 1 + iters

    runs = n_restarts * (n_target_classes if targeted else 1)
    return attack_runs(run, x, active, runs, active.astype(jnp.int32) * int(targeted))


apgd_attack_jit = jax.jit(apgd_attack, static_argnames=APGD_STATIC_ARGNAMES)
