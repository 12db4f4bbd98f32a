"""Random search with weight sharing (Li & Talwalkar, UAI 2019, §4.2, "RSWS").

Training: every step trains the shared supernet weights on one uniformly random
genotype-shaped path (:func:`nas_jax.models.searchers.random_path`; the search step with
``search.method='random'``), with the DARTS step budget and schedules. Selection: ``n`` random
genotypes, drawn from the search seed alone, are ranked by their weight-sharing validation
accuracy (the shared weights evaluated on that genotype's path, train-mode BN as in every
search pass) on a fixed set of α-half batches; the best one is the search's result (ties: the
lower validation loss, then the earlier candidate).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import parallel
from nas_jax.data.augment import to_float
from nas_jax.models.genotypes import Genotype, primitives
from nas_jax.models.searchers import random_path
from nas_jax.models.supernet import ARCH
from nas_jax.search.darts import SearchState, stacked_sharding
from nas_jax.search.genotype import derive_cell
from nas_jax.train.trainer import cross_entropy


def candidates(seed: int, n: int, steps: int, ops: tuple[str, ...]) -> dict:
    """``n`` random genotypes as one-hot path weights ``{'normal': (n, E, O), 'reduce': (n, E, O)}``."""
    if n < 1:
        raise ValueError(f"search.random.candidates must be >= 1, got {n}.")
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 7919), 2 * n).reshape(2, n)
    return {kind: np.asarray(jax.vmap(lambda k: random_path(k, steps, ops))(keys[i]), np.float32)
            for i, kind in enumerate(("normal", "reduce"))}


def genotype_of(weights: dict, index: int, ops: tuple[str, ...], steps: int, multiplier: int) -> Genotype:
    """The genotype of candidate ``index`` (its one-hot path read by the DARTS derivation)."""
    cells = {kind: derive_cell(weights[kind][index], ops, steps) for kind in ("normal", "reduce")}
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(cells["normal"], concat, cells["reduce"], concat)


def random_genotypes(seed: int, n: int, steps: int = 4, ops: tuple[str, ...] | None = None) -> list[Genotype]:
    """``n`` uniformly random genotypes of the DARTS space, drawn as random search draws its paths
    (:func:`~nas_jax.models.searchers.random_path`: per intermediate node two distinct predecessors, a
    non-``none`` op each; concat = every intermediate node). Genotype ``i`` depends on ``seed`` and ``i`` only, so
    a larger ``n`` extends the same list."""
    ops = tuple(ops or primitives())
    base = jax.random.fold_in(jax.random.key(seed), 2022)
    keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(base, i)))(jnp.arange(n))  # (n, 2): normal, reduce
    paths = np.asarray(jax.vmap(jax.vmap(lambda k: random_path(k, steps, ops)))(keys), np.float32)
    return [genotype_of({"normal": paths[:, 0], "reduce": paths[:, 1]}, i, ops, steps, steps) for i in range(n)]


@functools.cache
def make_rank_fn(model, mesh):
    """``fn(state, x_u8 (k, B, ...), y (k, B), weights) -> (accuracy (n,), loss (n,))`` of every candidate."""

    def fn(state: SearchState, xs, ys, weights):
        images = jax.vmap(to_float)(xs)
        variables = {"params": state.params, "batch_stats": state.batch_stats, ARCH: state.arch}

        def one(w):
            def batch(x, y):
                logits, _ = model.apply(variables, x, train=True, weights=w, mutable=["batch_stats"])
                return jnp.mean(jnp.argmax(logits, -1) == y), cross_entropy(logits, y)

            acc, loss = jax.lax.map(lambda b: batch(*b), (images, ys))
            return acc.mean(), loss.mean()

        return jax.lax.map(one, weights)

    rep, stacked = parallel.replicated(mesh), stacked_sharding(mesh)
    return jax.jit(fn, in_shardings=(rep, stacked, stacked, rep), out_shardings=rep)


def best_candidate(accuracy, loss) -> int:
    """Highest accuracy; ties: lower loss, then the earlier candidate."""
    order = np.lexsort((np.arange(len(accuracy)), np.asarray(loss), -np.asarray(accuracy)))
    return int(order[0])
