"""The DARTS search space's indexing (docs/protocol.md §b.5, §g).

A cell with ``steps`` intermediate nodes has one edge per (node, predecessor) (:func:`num_edges`), in DARTS order
(:func:`edge_index`); α has a row per edge and a column per op. Searchers: :mod:`nas_jax.models.searchers`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes: 2 + 3 + ... + (steps + 1)."""
    return sum(2 + j for j in range(steps))


def edge_index(node: int, source: int) -> int:
    """Row of α for the edge source -> intermediate node ``node`` (node >= 2; DARTS order)."""
    return num_edges(node - 2) + source


def edge_normalisation(beta: jax.Array, steps: int) -> jax.Array:
    """PC-DARTS Eqn 4: per node, softmax of β over its input edges -> (edges,)."""
    return jnp.concatenate([jax.nn.softmax(beta[edge_index(j, 0) : edge_index(j, j)]) for j in range(2, steps + 2)])
