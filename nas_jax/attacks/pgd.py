"""PGD adversarial evasion (paper §3.2, Figs 2–4; ASR of Eqn 9 = ``result.success.mean()``).

docs/protocol.md §e.1: targeted (most/least likely, k-th, given) or untargeted PGD in pixel space (G1), eval mode
(G2), L∞ or L2, with restarts and per-example early stopping, in the loop of
:func:`nas_jax.attacks.evasion.run_evasion`; check and gradient share one forward/backward pass. ``pgd_attack_jit``
traces ``cfg`` and ``k`` (sweeps, and most/least likely as ``mode='kth'``, reuse one executable); ``apply_fn``
should be created once (a fresh lambda per call recompiles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from nas_jax.attacks.evasion import (
    EvasionConfig,
    EvasionResult,
    is_success,
    needs_prediction,
    resolve_mode,
    run_evasion,
    select_targets,
    to_result,
)

ApplyFn = Callable[[Any, jax.Array], jax.Array]  # (variables, images) -> logits, in eval mode
PGD_STATIC_ARGNAMES = ("apply_fn", "mode")


def evasion_loss(logits: jax.Array, targets: jax.Array, targeted: bool) -> jax.Array:
    """Per-example loss to *descend* (§e.1 step 3): CE(f(x), t) targeted, −CE(f(x), y) untargeted."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return ce if targeted else -ce


def pgd_attack(apply_fn: ApplyFn, variables: Any, x: jax.Array, labels: jax.Array, key: jax.Array,
               cfg: EvasionConfig, mode: str = "most_likely", k: int = 2,
               targets: jax.Array | None = None) -> EvasionResult:
    """Run PGD (docs/protocol.md §e.1) on a batch ``x`` (float32 NHWC in [0, 1]) with true ``labels``.

    ``apply_fn(variables, images) -> logits`` in eval mode. Targets come from the clean prediction (``mode``, ``k``;
    not counted in ``queries``) or ``targets`` (``'given'``). Queries: 1 per check and per gradient, at most R·(2K + 1).
    """
    mode = resolve_mode(mode, targets)
    targeted = mode != "untargeted"
    clean = apply_fn(variables, x) if needs_prediction(mode) else None
    tgt = select_targets(clean, mode, labels, k=k, given=targets)
    labels = jnp.asarray(labels, jnp.int32)

    def success(logits):
        return is_success(jax.nn.softmax(logits, axis=-1), tgt, labels, targeted, cfg.confidence)

    def total_loss(x_adv):
        logits = apply_fn(variables, x_adv)
        # Examples are independent in eval mode, so the gradient of the sum is the per-example gradient.
        return jnp.sum(evasion_loss(logits, tgt, targeted)), logits

    def check_fn(x_adv):
        return success(apply_fn(variables, x_adv))

    def fused_fn(x_adv, _key):
        (_, logits), grad = jax.value_and_grad(total_loss, has_aux=True)(x_adv)
        return success(logits), grad

    rec = run_evasion(check_fn, None, x, key, cfg, fused_fn=fused_fn)
    return to_result(rec, tgt)


pgd_attack_jit = jax.jit(pgd_attack, static_argnames=PGD_STATIC_ARGNAMES)
