"""The searchers of the DARTS search space: one record per method (docs/search.md, docs/protocol.md §g).

A :class:`Searcher` holds what tells one method apart: how a row of α becomes an edge's mixing weights (with a
sampling key; without one, the deterministic relaxation the genotype is derived from), which edge the supernet
builds, whether α is trained (and its regulariser), the τ schedule, and its own settings
(``config.search.<name>``). :func:`resolve` finds it from ``config.search.method``; adding a searcher is one
record and one entry in :data:`SEARCHERS`.

- ``darts`` (DARTS Eqn 3): softmax(α) on every edge.
- ``pc_darts`` (PC-DARTS §3.2–3.3): softmax(α); 1/K of the channels through the mixed op, node inputs weighted
  by softmax(β) (:func:`nas_jax.models.search_space.edge_normalisation`).
- ``gdas`` (GDAS §3.2 Eqns 5–7): one-hot argmax(α + g) forward, straight-through softmax((α + g)/τ) backward;
  only the sampled op runs; τ linear 10 → 0.1 (its §4.1).
- ``snas`` (SNAS §2.2 Eqn 3): the relaxed Gumbel softmax((α + g)/τ); τ geometric 1 → 0.03.
- ``drnas`` (DrNAS §3.1 Eqn 3): w ~ Dirichlet(elu(α) + 1), reparameterised; relaxation: its mean; regulariser
  ``reg`` · KL(Dir(β) ‖ Dir(1)) (mean over edges).
- ``random`` (Li & Talwalkar §4.2, random search with weight sharing): a random genotype-shaped path per step, no
  α; the best of ``candidates`` random genotypes (:mod:`nas_jax.search.random_search`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from nas_jax.errors import UserError

EDGES = ("mixed", "partial", "single_path")


@dataclasses.dataclass(frozen=True)
class Searcher:
    """One search method (module docstring). Functions take and return (edges, ops) arrays per cell type."""

    name: str
    relaxation: Callable = lambda alpha: jax.nn.softmax(alpha, axis=-1)  # α -> weights without a key
    sample: Callable | None = None  # (key, α, τ, steps, ops) -> sampled weights; None: never samples
    edge: str = "mixed"  # EDGES: every op / PC-DARTS partial channels with edge weights β / the sampled op only
    trains_alpha: bool = True  # False: no α update; the result is the best of ``candidates`` random genotypes
    # ranked on ``eval_batches`` α-half batches (its settings hold both; random search)
    temperature: Callable | None = None  # (fraction of the search done, settings) -> τ; None: no τ
    regulariser: Callable | None = None  # (α of both cell types, settings) -> a term added to the α objective
    defaults: Callable[[str], dict] = lambda preset: {}  # preset -> the method's settings, config.search.<name>

    def weights(self, alpha, key=None, tau=1.0, steps: int = 4, ops: tuple[str, ...] = ()):
        """The mixing weights of one cell type: sampled with ``key``, else the deterministic relaxation."""
        if key is None or self.sample is None:
            return self.relaxation(alpha)
        return self.sample(key, alpha, tau, steps, ops)


def dirichlet_concentration(alpha: jax.Array) -> jax.Array:
    """DrNAS §3.1: concentration β = elu(α) + 1 > 0."""
    return jax.nn.elu(alpha) + 1.0


def dirichlet_kl(arch) -> jax.Array:
    """DrNAS §3.1: mean over edges of KL(Dir(β) ‖ Dir(1)), β = elu(α) + 1, summed over the cell types."""
    total = 0.0
    for kind in ("normal", "reduce"):
        c = dirichlet_concentration(arch[kind])
        c0, n = c.sum(-1), c.shape[-1]
        kl = (gammaln(c0) - gammaln(c).sum(-1) - gammaln(float(n))
              + jnp.sum((c - 1.0) * (digamma(c) - digamma(c0)[..., None]), -1))
        total = total + kl.mean()
    return total


def random_path(key: jax.Array, steps: int, ops: tuple[str, ...]) -> jax.Array:
    """One-hot (edges, ops) of a uniformly random genotype: per node two distinct inputs, a non-``none`` op each."""
    keep = jnp.array([k for k, o in enumerate(ops) if o != "none"])
    rows = []
    for j in range(steps):
        k_in, k_op, key = jax.random.split(key, 3)
        chosen = jax.random.permutation(k_in, j + 2)[:2]
        active = jnp.zeros(j + 2, bool).at[chosen].set(True)
        op = keep[jax.random.randint(k_op, (j + 2,), 0, len(keep))]
        rows.append(jax.nn.one_hot(op, len(ops)) * active[:, None])
    return jnp.concatenate(rows)


def _gumbel_soft(key, alpha, tau, steps, ops):
    return jax.nn.softmax((alpha + jax.random.gumbel(key, alpha.shape, alpha.dtype)) / tau, axis=-1)


def _gumbel_hard(key, alpha, tau, steps, ops):
    logits = alpha + jax.random.gumbel(key, alpha.shape, alpha.dtype)
    soft = jax.nn.softmax(logits / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(logits, -1), alpha.shape[-1], dtype=alpha.dtype)
    return hard - jax.lax.stop_gradient(soft) + soft


def _dirichlet_mean(alpha):
    c = dirichlet_concentration(alpha)
    return c / c.sum(-1, keepdims=True)


SEARCHERS = {s.name: s for s in (
    Searcher("darts"),
    Searcher("pc_darts", edge="partial", defaults=lambda preset: {"k": 4}),
    Searcher("gdas", sample=_gumbel_hard, edge="single_path",
             temperature=lambda done, s: s["tau_max"] - (s["tau_max"] - s["tau_min"]) * done,
             defaults=lambda preset: {"tau_max": 10.0, "tau_min": 0.1}),
    Searcher("snas", sample=_gumbel_soft,
             temperature=lambda done, s: s["tau_max"] * (s["tau_min"] / s["tau_max"]) ** done,
             defaults=lambda preset: {"tau_max": 1.0, "tau_min": 0.03}),
    Searcher("drnas", relaxation=_dirichlet_mean,
             sample=lambda key, alpha, tau, steps, ops: jax.random.dirichlet(key, dirichlet_concentration(alpha)),
             regulariser=lambda arch, s: s["reg"] * dirichlet_kl(arch), defaults=lambda preset: {"reg": 1e-3}),
    Searcher("random", sample=lambda key, alpha, tau, steps, ops: random_path(key, steps, ops).astype(alpha.dtype),
             edge="single_path", trains_alpha=False,
             defaults=lambda preset: {"candidates": 8 if preset == "quick" else 100,
                                      "eval_batches": 4 if preset == "quick" else 10}),
)}


def resolve(search) -> tuple[Searcher, dict]:
    """(searcher, its settings) of a ``config.search`` section: ``search.<method>`` over the defaults; settings
    a config does not hold (one written before the method had them) take the defaults."""
    name = search.get("method", "darts")
    if name not in SEARCHERS:
        raise UserError(f"unknown search.method {name!r}; valid: {tuple(SEARCHERS)} (docs/search.md).")
    searcher = SEARCHERS[name]
    given = search.get(searcher.name, None)
    settings = {**searcher.defaults("quick"), **(dict(given) if given is not None else {})}
    if searcher.temperature is not None and not 0 < settings["tau_min"] <= settings["tau_max"]:
        raise UserError(f"search.{searcher.name}.tau_min and tau_max need 0 < tau_min <= tau_max, got "
                        f"{settings['tau_min']}, {settings['tau_max']}.")
    return searcher, settings
