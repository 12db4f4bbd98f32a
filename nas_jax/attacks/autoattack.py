"""AutoAttack (Croce & Hein 2020, §5): the parameter-free ensemble APGD-CE → APGD-T → FAB-T → Square, each run only
on the inputs still robust; robust accuracy is the fraction that survives all of them.

One jitted program (``eps`` traced): the clean prediction, then every attack of ``cfg`` on the inputs still
robust. The standard version (RobustBench): APGD-CE (100 iterations), APGD-T and FAB-T (100 iterations, 9 target
classes), Square (5,000 queries, p_init 0.8); ``cfg.attacks`` runs a custom list. Eval mode (G2).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nas_jax.attacks.apgd import ApplyFn, apgd_attack, check_norm, misclassified, per_example
from nas_jax.attacks.fab import fab_targeted_attack
from nas_jax.attacks.square import square_attack

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
VERSIONS = ("standard", "custom")


@struct.dataclass
class AutoAttackConfig:
    """Budget and attack settings; only ``eps`` is a pytree leaf (traced). ``attacks=(...)`` (names from
    :data:`ATTACKS`) replaces :data:`STANDARD` (``version`` becomes ``'custom'``); ``n_target_classes`` (APGD-T,
    FAB-T; AutoAttack: 9) is clipped to num_classes − 1 at call time.
    """

    eps: float = 8 / 255
    norm: str = struct.field(pytree_node=False, default="linf")
    version: str = struct.field(pytree_node=False, default="standard")
    attacks: tuple[str, ...] | None = struct.field(pytree_node=False, default=None)
    apgd_iter: int = struct.field(pytree_node=False, default=100)
    apgd_restarts: int = struct.field(pytree_node=False, default=1)
    fab_iter: int = struct.field(pytree_node=False, default=100)
    fab_restarts: int = struct.field(pytree_node=False, default=1)
    n_target_classes: int = struct.field(pytree_node=False, default=9)
    n_queries: int = struct.field(pytree_node=False, default=5000)
    p_init: float = struct.field(pytree_node=False, default=0.8)

    def __post_init__(self):
        check_norm(self.norm)
        if self.version not in VERSIONS:
            raise ValueError(f"unknown AutoAttack version {self.version!r}; choose one of {VERSIONS} "
                             "(pass attacks=(...) for a custom list).")
        if self.attacks is not None:
            unknown = [a for a in self.attacks if a not in ATTACKS]
            if unknown or not self.attacks:
                raise ValueError(f"attacks={self.attacks!r}: unknown {unknown}; choose a non-empty list from "
                                 f"{ATTACKS}.")
        elif self.version == "custom":
            raise ValueError("version='custom' needs attacks=(...), e.g. ('apgd-ce', 'square').")
        for name in ("apgd_iter", "apgd_restarts", "fab_iter", "fab_restarts", "n_target_classes", "n_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")

    @property
    def attack_names(self) -> tuple[str, ...]:
        return tuple(self.attacks) if self.attacks is not None else STANDARD


@struct.dataclass
class AutoAttackResult:
    """Per-example outcome. ``robust``: still correctly classified after every attack (False for inputs
    misclassified clean). ``first_attack``: −1 robust, 0 misclassified clean, j ≥ 1 the attack
    ``attack_names[j − 1]`` that first fooled it. ``x_adv``: that attack's adversarial (x where robust).
    ``queries``: Square's exact queries (0 where it did not run); ``attack_queries``: per attack [N, A]."""

    robust: jax.Array
    x_adv: jax.Array
    first_attack: jax.Array
    clean_correct: jax.Array
    queries: jax.Array
    attack_queries: jax.Array
    attack_names: tuple[str, ...] = struct.field(pytree_node=False, default=STANDARD)


def _run_one(name: str, apply_fn, variables, x, y, key, cfg: AutoAttackConfig, active, num_classes: int):
    n_targets = min(cfg.n_target_classes, num_classes - 1)
    if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr_targeted"}[name]
        return apgd_attack(apply_fn, variables, x, y, key, cfg.eps, cfg.norm, cfg.apgd_iter, cfg.apgd_restarts,
                           loss, n_targets, active=active)
    if name == "fab-t":
        return fab_targeted_attack(apply_fn, variables, x, y, key, cfg.eps, cfg.norm, cfg.fab_iter,
                                   cfg.fab_restarts, n_targets, active=active)
    return square_attack(apply_fn, variables, x, y, key, cfg.eps, cfg.norm, cfg.n_queries, cfg.p_init, active=active)


def autoattack(apply_fn: ApplyFn, variables: Any, x: jax.Array, y: jax.Array, key: jax.Array,
               cfg: AutoAttackConfig | None = None) -> AutoAttackResult:
    """Run the ensemble of ``cfg`` on ``x`` (NHWC in [0, 1]) with labels ``y``; attack j uses key fold_in(key, j).

    Each attack's adversarial is re-checked with one forward pass before it counts, so ``robust`` is exactly
    "``apply_fn`` classifies ``x_adv`` as y" for every input fooled by an attack.
    """
    cfg = AutoAttackConfig() if cfg is None else cfg
    y = jnp.asarray(y, jnp.int32)
    clean_logits = apply_fn(variables, x)
    clean_correct = ~misclassified(clean_logits, y)
    robust = clean_correct
    first = jnp.where(clean_correct, -1, 0).astype(jnp.int32)
    x_adv = x
    per_attack = []
    for j, name in enumerate(cfg.attack_names):
        out = _run_one(name, apply_fn, variables, x, y, jax.random.fold_in(key, j), cfg, robust,
                       clean_logits.shape[-1])
        fooled = robust & out.fooled & misclassified(apply_fn(variables, out.x_adv), y)
        x_adv = jnp.where(per_example(fooled, x), out.x_adv, x_adv)
        first = jnp.where(fooled, j + 1, first)
        robust = robust & ~fooled
        per_attack.append(out.queries)
    names = cfg.attack_names
    queries = per_attack[names.index("square")] if "square" in names else jnp.zeros((x.shape[0],), jnp.int32)
    return AutoAttackResult(robust=robust, x_adv=x_adv, first_attack=first, clean_correct=clean_correct,
                            queries=queries, attack_queries=jnp.stack(per_attack, axis=1), attack_names=names)


autoattack_jit = jax.jit(autoattack, static_argnames=("apply_fn",))
"""``cfg`` is a pytree whose static fields are part of the cache key; ``eps`` is traced."""
