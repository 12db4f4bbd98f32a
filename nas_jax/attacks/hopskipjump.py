"""HopSkipJump: untargeted L2, label-only, batched in one ``jit`` (docs/protocol.md §e.6; paper §3.2 Fig 10, §4 Fig 13).

Chen, Jordan & Wainwright ("HopSkipJumpAttack", S&P 2020) with ART's semantics [library], through
``label_fn(images) -> class`` only, along the boundary of the clean *predicted* class c:

1. **Init**: up to ``init_size`` draws u ~ U[0,1]^d; the first not labelled c is blended towards x by a binary
   search on β in (1 − β)x + βu (tolerance 0.001). Without one, x is returned and ``initialized`` is False.
2. For t = 0..max_iter−1: δ_t = 0.1 (t = 0) else 0.01·dist_t; binary search between x and the current point
   (tolerance θ = 0.01/√d); gradient estimate from n_t = min(⌊init_eval·√(t+1)⌋, max_eval) Gaussian directions
   (clipped to [0,1], signs baselined by their mean unless all agree); geometric step search from
   ε = dist_t/√(t+1), halving until adversarial, at most ``max_halvings`` trials (else the point stays).
3. No final binary search (ART): the output lies about ε beyond the boundary. ``final_search=True`` adds one
   (the HSJA reference ends every step with one).

Label queries are counted per input (clean label, init draws, binary-search steps, n_t per estimate, halvings);
``query_budget > 0`` stops an input before a query it cannot afford. Once initialised the current point is always
adversarial. Loops are ``lax.while_loop``/``fori_loop`` with per-example masks; gradient samples run
``chunk_size`` per example per call. Init draw k uses ``fold_in(fold_in(key, 0), k)``, iteration t's chunk c
``fold_in(fold_in(key, t + 1), c)``, so results depend on the key, the batch and ``chunk_size``. Pass an ``rbg``
key: XLA:CPU compiles threefry several times slower (~15 s vs ~4 s measured).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nas_jax.attacks.apgd import row_norm
from nas_jax.attacks.evasion import per_example

LabelFn = Callable[[jax.Array], jax.Array]  # images [N, ...] in [0, 1] -> int classes [N]


@dataclasses.dataclass(frozen=True)
class HSJConfig:
    """HopSkipJump budget (Table 5 defaults; docs/protocol.md §e.6). Hashable: a static ``jit`` argument.

    ``max_eval``/``init_eval`` set n_t = min(⌊init_eval·√(t+1)⌋, max_eval); ``init_size``: initial draws;
    ``max_halvings``: cap on the step search [project; ART has none]; ``query_budget``: per-input cap (0: none);
    ``chunk_size``: gradient samples per input per call (memory; fixes the draws); ``final_search``: see the module.
    """

    max_iter: int = 50
    max_eval: int = 2500
    init_eval: int = 100
    init_size: int = 100
    max_halvings: int = 30
    init_tolerance: float = 1e-3
    query_budget: int = 0
    chunk_size: int = 100
    final_search: bool = False

    def __post_init__(self):
        for name in ("max_eval", "init_eval", "init_size", "max_halvings", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"HSJConfig.{name}={getattr(self, name)} must be >= 1.")
        if self.max_iter < 0 or self.query_budget < 0:
            raise ValueError(f"HSJConfig.max_iter={self.max_iter} and query_budget={self.query_budget} must be >= 0.")
        if self.init_eval > self.max_eval:
            raise ValueError(f"HSJConfig.init_eval={self.init_eval} must not exceed max_eval={self.max_eval} (as ART).")
        if not 0 < self.init_tolerance < 1:
            raise ValueError(f"HSJConfig.init_tolerance={self.init_tolerance} must be in (0, 1).")

    def n_evals(self) -> tuple[int, ...]:
        """Gradient samples n_t of iterations t = 0..max_iter−1 (ART's float64 rounding)."""
        return tuple(min(int(self.init_eval * np.sqrt(t + 1)), self.max_eval) for t in range(self.max_iter))

    def max_queries(self, d: int) -> int:
        """The most queries one input can use without a budget: clean label, init draws and search, and per
        iteration a binary search, n_t samples and max_halvings trials."""
        return (1 + self.init_size + search_steps(self.init_tolerance) + sum(self.n_evals())
                + (self.max_iter + self.final_search) * search_steps(theta(d)) + self.max_iter * self.max_halvings)


def theta(d: int) -> float:
    """ART's binary-search tolerance θ = 0.01/√d on the blend coefficient (L2)."""
    return 0.01 / math.sqrt(d)


def search_steps(tolerance: float) -> int:
    """Steps of a blend binary search from [0, 1] until the interval is ≤ ``tolerance``: ⌈log2(1/tol)⌉."""
    return max(0, math.ceil(math.log2(1.0 / tolerance) - 1e-12))


@struct.dataclass
class LabelOracle:
    """``label_fn`` over a model in eval mode that returns the top-1 class only; a pytree (variables traced)."""

    apply_fn: Callable[[Any, jax.Array], jax.Array] = struct.field(pytree_node=False)
    variables: Any = None

    def __call__(self, images: jax.Array) -> jax.Array:
        return jnp.argmax(self.apply_fn(self.variables, images), axis=-1)


@struct.dataclass
class HSJResult:
    """Per-input outcome. ``x_adv`` is x itself where ``initialized`` is False (no adversarial draw);
    ``label`` is the clean predicted class; ``halving_capped`` counts step searches that hit the cap."""

    x_adv: jax.Array
    distance_l2: jax.Array
    distance_linf: jax.Array
    initialized: jax.Array
    queries: jax.Array
    label: jax.Array
    halving_capped: jax.Array


def blend(x: jax.Array, cur: jax.Array, alpha: jax.Array) -> jax.Array:
    """(1 − α)x + α·cur per row."""
    a = per_example(alpha, x)
    return (1.0 - a) * x + a * cur


def _affordable(queries: jax.Array, cost, budget: int) -> jax.Array:
    return jnp.ones(queries.shape, bool) if budget <= 0 else queries + cost <= budget


def _is_adv(label_fn: LabelFn, points: jax.Array, label: jax.Array) -> jax.Array:
    return label_fn(jnp.clip(points, 0.0, 1.0)) != label


def binary_search(label_fn: LabelFn, x: jax.Array, cur: jax.Array, label: jax.Array, active: jax.Array,
                  tolerance: float, queries: jax.Array, budget: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Binary search on α of the blend (1 − α)x + α·cur for the rows in ``active`` (docs/protocol.md §e.6 step 2.2).

    Invariant: α = 0 (x) is labelled ``label`` and α = 1 (cur) is adversarial; each step queries the midpoint
    and moves the bound on its side, until upper − lower ≤ ``tolerance``. Returns (the blend at the upper bound,
    which is adversarial, the upper bound α, queries); inactive rows are returned unchanged (α = 1).
    """
    lower, upper = jnp.zeros(x.shape[0]), jnp.ones(x.shape[0])

    def stepping(lo, hi, q):
        return active & (hi - lo > tolerance) & _affordable(q, 1, budget)

    def body(carry):
        lo, hi, q = carry
        s = stepping(lo, hi, q)
        mid = (lo + hi) / 2.0
        adv = _is_adv(label_fn, blend(x, cur, mid), label)
        return jnp.where(s & ~adv, mid, lo), jnp.where(s & adv, mid, hi), q + s.astype(q.dtype)

    lower, upper, queries = jax.lax.while_loop(lambda c: jnp.any(stepping(*c)), body, (lower, upper, queries))
    return jnp.where(per_example(active, x), blend(x, cur, upper), cur), upper, queries


def _initial_points(label_fn, x, label, key, cfg: HSJConfig, queries):
    """Step 1: the first adversarial uniform draw of each row, blended towards x."""
    found = jnp.zeros(x.shape[0], bool)
    init_key = jax.random.fold_in(key, 0)

    def searching(k, found, q):
        return (k < cfg.init_size) & ~found & _affordable(q, 1, cfg.query_budget)

    def body(carry):
        k, cur, found, q = carry
        s = searching(k, found, q)
        u = jax.random.uniform(jax.random.fold_in(init_key, k), x.shape, x.dtype)
        hit = s & _is_adv(label_fn, u, label)
        return k + 1, jnp.where(per_example(hit, x), u, cur), found | hit, q + s.astype(q.dtype)

    _, cur, found, queries = jax.lax.while_loop(lambda c: jnp.any(searching(c[0], c[2], c[3])), body,
                                                (jnp.int32(0), x, found, queries))
    cur, _, queries = binary_search(label_fn, x, cur, label, found, cfg.init_tolerance, queries, cfg.query_budget)
    return cur, found, queries


def estimate_direction(label_fn: LabelFn, cur: jax.Array, label: jax.Array, key: jax.Array, n_samples: jax.Array,
                       delta: jax.Array, chunk_size: int) -> jax.Array:
    """Monte-Carlo estimate of the boundary normal at ``cur`` from ``n_samples`` label queries per row
    (docs/protocol.md §e.6 step 2.3), returned as the unnormalised mean ḡ (zero where all samples cancel).

    Chunk c of ``chunk_size`` samples per row draws its directions from ``fold_in(key, c)``.
    """
    n, shape = cur.shape[0], cur.shape[1:]
    d_rows = per_example(delta, cur)[:, None]

    def chunk(c, acc):
        sum_su, sum_u, sum_s = acc
        j = c * chunk_size + jnp.arange(chunk_size)
        valid = (j < n_samples).astype(cur.dtype)  # [C]
        u = jax.random.normal(jax.random.fold_in(key, c), (n, chunk_size, *shape), cur.dtype)
        u = u / jnp.sqrt(jnp.sum(u ** 2, axis=tuple(range(2, u.ndim)), keepdims=True))
        points = jnp.clip(cur[:, None] + d_rows * u, 0.0, 1.0)
        u = (points - cur[:, None]) / d_rows
        adv = label_fn(points.reshape(n * chunk_size, *shape)).reshape(n, chunk_size) != label[:, None]
        s = jnp.where(adv, 1.0, -1.0) * valid
        w = jnp.broadcast_to(valid, (n, chunk_size))
        return (sum_su + jnp.einsum("nc,nc...->n...", s, u), sum_u + jnp.einsum("nc,nc...->n...", w, u),
                sum_s + s.sum(1))

    zeros = jnp.zeros_like(cur)
    n_chunks = (n_samples + chunk_size - 1) // chunk_size
    sum_su, sum_u, sum_s = jax.lax.fori_loop(0, n_chunks, chunk, (zeros, zeros, jnp.zeros(n, cur.dtype)))
    mean_s = sum_s / n_samples
    unanimous = per_example(jnp.abs(mean_s) == 1.0, cur)  # all +1: mean(u); all −1: −mean(u); both are mean(s·u)
    return jnp.where(unanimous, sum_su / n_samples, sum_su / n_samples - per_example(mean_s, cur) * sum_u / n_samples)


def _step_search(label_fn, x, cur, direction, label, active, t, queries, cfg: HSJConfig):
    """Step 2.4: geometric search from ε = 2·dist/√(t+1), halved before every trial."""
    eps = 2.0 * row_norm(cur - x, "l2") / jnp.sqrt(t + 1.0)

    def searching(h, done, q):
        return active & ~done & (h < cfg.max_halvings) & _affordable(q, 1, cfg.query_budget)

    def body(carry):
        h, eps, done, cand, q = carry
        s = searching(h, done, q)
        eps = jnp.where(s, eps / 2.0, eps)
        trial = cur + per_example(eps, x) * direction
        hit = s & _is_adv(label_fn, trial, label)
        cand = jnp.where(per_example(hit, x), jnp.clip(trial, 0.0, 1.0), cand)
        return h + 1, eps, done | hit, cand, q + s.astype(q.dtype)

    init = (jnp.int32(0), eps, jnp.zeros(x.shape[0], bool), cur, queries)
    _, _, done, cand, queries = jax.lax.while_loop(lambda c: jnp.any(searching(c[0], c[2], c[4])), body, init)
    return cand, done, queries


def hopskipjump(label_fn: LabelFn, x: jax.Array, key: jax.Array, cfg: HSJConfig = HSJConfig()) -> HSJResult:
    """Untargeted L2 HopSkipJump on a batch ``x`` in [0, 1] through ``label_fn`` only (see the module docstring)."""
    n, d = x.shape[0], int(np.prod(x.shape[1:]))
    th, budget = theta(d), cfg.query_budget
    label = label_fn(x)
    queries = jnp.ones(n, jnp.int32)  # the clean label
    cur, initialized, queries = _initial_points(label_fn, x, label, key, cfg, queries)
    n_table = jnp.asarray(cfg.n_evals() or (0,), jnp.int32)

    def body(carry):
        t, cur, active, q, capped = carry
        delta = jnp.where(t == 0, 0.1, math.sqrt(d) * th * row_norm(cur - x, "l2"))
        delta = jnp.maximum(delta, 1e-12)
        cur, _, q = binary_search(label_fn, x, cur, label, active, th, q, budget)
        n_t = n_table[t]
        active = active & _affordable(q, n_t, budget)
        g = estimate_direction(label_fn, cur, label, jax.random.fold_in(key, t + 1), n_t, delta, cfg.chunk_size)
        q = q + jnp.where(active, n_t, 0)
        g_norm = row_norm(g, "l2")
        direction = g / per_example(jnp.where(g_norm > 0, g_norm, 1.0), g)
        stepping = active & (g_norm > 0)
        cand, done, q_after = _step_search(label_fn, x, cur, direction, label, stepping, t, q, cfg)
        capped = capped + (stepping & ~done & (q_after - q == cfg.max_halvings)).astype(jnp.int32)
        active = active & (done | ~stepping | (q_after - q == cfg.max_halvings))  # budget stops end the walk
        return t + 1, jnp.where(per_example(done, x), cand, cur), active, q_after, capped

    def cond(carry):
        return (carry[0] < cfg.max_iter) & jnp.any(carry[2])

    init = (jnp.int32(0), cur, initialized, queries, jnp.zeros(n, jnp.int32))
    _, cur, active, queries, capped = jax.lax.while_loop(cond, body, init)
    if cfg.final_search:
        cur, _, queries = binary_search(label_fn, x, cur, label, active, th, queries, budget)
    x_adv = jnp.where(per_example(initialized, x), cur, x)
    return HSJResult(x_adv=x_adv, distance_l2=row_norm(x_adv - x, "l2"), distance_linf=row_norm(x_adv - x, "linf"),
                     initialized=initialized, queries=queries, label=label, halving_capped=capped)


hopskipjump_jit = jax.jit(hopskipjump, static_argnames=("cfg",))
hopskipjump_jit.__doc__ = """``hopskipjump`` compiled; ``label_fn`` is a pytree argument (e.g. a :class:`LabelOracle`,
parameters traced), ``cfg`` static. For a plain function, jit ``hopskipjump`` with ``label_fn`` static."""
