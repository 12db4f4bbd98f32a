"""NES black-box evasion (paper §3.2, Fig 5; gradient estimator of Eqn 10).

docs/protocol.md §e.2: the PGD driver of §e.1 (:func:`nas_jax.attacks.evasion.run_evasion`) with ∇_x L replaced
by the antithetic estimate ĝ = (1/(σ·n)) Σ_j (ℓ(x + σu_j) − ℓ(x − σu_j)) u_j over n/2 pairs u_j ~ N(0, I_d),
fresh every iteration and per example; ℓ from probabilities only: −log p_t (targeted) or +log p_y. Query points
are not clipped. Queries are counted per example (Appendix A item 5): at most R·(K·(n_query + 1) + 1) over
R = max(restarts, 1) runs of K iterations (docs/protocol.md §e.2's bound), + 1 for the clean query that ranks
the targets in the most-/least-likely and k-th modes; ``query_budget > 0`` stops an example before it would
exceed it. The pairs run ``chunk_size`` at a time (a ``lax.scan``), so one call sees 2·chunk_size·N images.
``nes_attack_jit`` takes ``query_fn`` as a pytree, e.g. ``BlackBox(apply_fn, variables)``; for a plain function
use ``jax.jit(nes_attack, static_argnames=("query_fn",) + NES_STATIC_ARGNAMES)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nas_jax.attacks.evasion import (
    EvasionConfig,
    EvasionResult,
    batch_noise,
    fold_in,
    is_success,
    needs_prediction,
    resolve_mode,
    run_evasion,
    select_targets,
    to_result,
)

QueryFn = Callable[[jax.Array], jax.Array]  # images -> probabilities (the black box)
LossFn = Callable[[jax.Array], jax.Array]  # images [N, ...] -> per-example losses [N]
NES_STATIC_ARGNAMES = ("mode", "k", "n_queries", "chunk_size")
_LOG_FLOOR = 1e-30


@struct.dataclass
class BlackBox:
    """``query_fn`` over a model in eval mode that returns probabilities only; a pytree (variables traced)."""

    apply_fn: Callable[[Any, jax.Array], jax.Array] = struct.field(pytree_node=False)
    variables: Any = None

    def __call__(self, images: jax.Array) -> jax.Array:
        return jax.nn.softmax(self.apply_fn(self.variables, images), axis=-1)


@dataclasses.dataclass(frozen=True)
class NESQueryConfig:
    """NES's query settings (§3.2; docs/protocol.md §e.2): ``n_queries`` per gradient estimate (n/2 antithetic pairs),
    the sampling radius ``sigma``, the per-example ``query_budget`` (0: none) and ``chunk_size`` pairs per model
    call. The attack's budget (ε, α, iterations, restarts) is the :class:`EvasionConfig`. Pass it to
    :func:`nes_attack` as ``**dataclasses.asdict(q)``."""

    n_queries: int = 400
    sigma: float = 1e-3
    query_budget: int = 0
    chunk_size: int = 25

    def __post_init__(self):
        _check_queries(self.n_queries, self.chunk_size)
        if not self.sigma > 0:
            raise ValueError(f"sigma={self.sigma} must be > 0 (the radius of the NES samples).")
        if self.query_budget < 0:
            raise ValueError(f"query_budget={self.query_budget} must be >= 0 (0: no budget).")


def query_loss(probs: jax.Array, targets: jax.Array, targeted: bool) -> jax.Array:
    """Per-example loss to descend from returned probabilities: −log p_t, or +log p_y untargeted (§e.2)."""
    p = jnp.take_along_axis(probs, targets[:, None], axis=-1)[:, 0]
    logp = jnp.log(jnp.maximum(p, _LOG_FLOOR))
    return -logp if targeted else logp


def _check_queries(n_queries: int, chunk_size: int) -> None:
    if n_queries < 2 or n_queries % 2:
        raise ValueError(f"n_queries={n_queries} must be an even number >= 2 (antithetic pairs).")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1 antithetic pair per model call.")


def nes_gradient(loss_fn: LossFn, x: jax.Array, key: jax.Array, n_queries: int = 400, sigma: float = 1e-3,
                 chunk_size: int = 25) -> tuple[jax.Array, jax.Array]:
    """Antithetic NES estimate of ∇ loss_fn per example (docs/protocol.md §e.2 steps 1–3, paper Eqn 10).

    ``loss_fn`` gives per-example losses. Pair j uses u_j = normal(fold_in(key, j)), so the estimate is independent
    across examples and of ``chunk_size`` (up to summation order). Returns (ĝ, queries int32[N] = n_queries).
    """
    _check_queries(n_queries, chunk_size)
    n_pairs = n_queries // 2
    pair_loss = jax.vmap(loss_fn)  # [P, N, ...] -> [P, N]

    def chunk_sum(idx: jax.Array) -> jax.Array:
        u = jax.vmap(lambda j: batch_noise(jax.random.normal, fold_in(key, j), x))(idx)  # key: one or per example
        losses = pair_loss(jnp.concatenate([x[None] + sigma * u, x[None] - sigma * u]))
        diff = losses[: idx.shape[0]] - losses[idx.shape[0]:]  # [P, N]
        return jnp.einsum("pn,pn...->n...", diff, u)

    num_full, rest = divmod(n_pairs, chunk_size)
    total = jnp.zeros_like(x)
    if num_full:
        chunks = jnp.arange(num_full * chunk_size, dtype=jnp.uint32).reshape(num_full, chunk_size)
        total, _ = jax.lax.scan(lambda acc, idx: (acc + chunk_sum(idx), None), total, chunks)
    if rest:
        total = total + chunk_sum(jnp.arange(num_full * chunk_size, n_pairs, dtype=jnp.uint32))
    return total / (sigma * n_queries), jnp.full((x.shape[0],), n_queries, jnp.int32)


def nes_attack(query_fn: QueryFn, x: jax.Array, labels: jax.Array, key: jax.Array, cfg: EvasionConfig,
               mode: str = "most_likely", k: int = 2, targets: jax.Array | None = None, n_queries: int = 400,
               sigma: float = 1e-3, query_budget: int = 0, chunk_size: int = 25) -> EvasionResult:
    """Black-box evasion (docs/protocol.md §e.2) through ``query_fn(images) -> probabilities`` only.

    Targets, budget, restarts and success as :func:`nas_jax.attacks.pgd.pgd_attack`; a fresh key per restart and
    iteration. ``result.queries`` is exact; with ``query_budget > 0`` none exceeds it (an example that cannot afford
    its next estimate and check stops, a failure unless already successful).
    """
    _check_queries(n_queries, chunk_size)
    mode = resolve_mode(mode, targets)
    targeted = mode != "untargeted"
    clean = query_fn(x) if needs_prediction(mode) else None
    tgt = select_targets(clean, mode, labels, k=k, given=targets)
    labels = jnp.asarray(labels, jnp.int32)

    def check_fn(x_adv):
        return is_success(query_fn(x_adv), tgt, labels, targeted, cfg.confidence)

    def loss_fn(images):
        return query_loss(query_fn(images), tgt, targeted)  # untargeted: tgt = labels

    def grad_fn(x_adv, kkey):
        return nes_gradient(loss_fn, x_adv, kkey, n_queries, sigma, chunk_size)[0]

    # The clean query that picks most/least-likely targets is counted (and paid from the budget).
    rec = run_evasion(check_fn, grad_fn, x, key, cfg, check_cost=1, grad_cost=n_queries, query_budget=query_budget,
                      initial_queries=int(clean is not None))
    return to_result(rec, tgt)


nes_attack_jit = jax.jit(nes_attack, static_argnames=NES_STATIC_ARGNAMES)
