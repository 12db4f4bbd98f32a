"""PGD adversarial evasion (paper §3.2, Figs 2–4; ASR of Eqn 9 = ``result.success.mean()``).

docs/protocol.md §e.1: targeted (most/least likely, k-th, given) or untargeted PGD in pixel space (G1) on a model in
eval mode (G2), L∞ (default) or L2, with random restarts and per-example early stopping. The loop structure is
:func:`nas_jax.attacks.evasion.run_evasion`; this module supplies the white-box check and gradient, fused into
one forward/backward pass per iteration.

Jitting: ``pgd_attack_jit`` (``apply_fn`` and ``mode`` static; ``cfg`` and ``k`` traced, so sweeps over ε, iterations
or restarts reuse one executable, and so do most- and least-likely targets run as ``mode='kth'`` with k = 2 and
k = num_classes), or ``jax.jit(pgd_attack, static_argnames=("apply_fn", "cfg", "mode", "k"))``. Create
``apply_fn`` once (e.g. ``model.apply`` or a module-level function); a fresh lambda per call recompiles.
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

    ``apply_fn(variables, images) -> logits`` must be in eval mode (e.g. ``partial(model.apply, train=False)``);
    ``variables`` are only read. Targets come from the clean prediction (``mode``, ``k``) or from ``targets``
    (mode ``'given'``); the clean prediction used for ranking is not counted in ``queries``. Queries count 1 per
    success check and 1 per gradient, i.e. at most R·(2K + 1) per example.
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

    def grad_fn(x_adv, _key):
        return jax.grad(lambda v: total_loss(v)[0])(x_adv)

    rec = run_evasion(check_fn, grad_fn, x, key, cfg, fused_fn=fused_fn)
    return to_result(rec, tgt)


pgd_attack_jit = jax.jit(pgd_attack, static_argnames=PGD_STATIC_ARGNAMES)
