"""Genotype derivation from the architecture parameters α (docs/protocol.md §g; DARTS §2.4).

For every intermediate node j: score each incoming edge by its strongest non-``none`` mixing weight, keep the
top-2 (stable: ties to the lower input), and give each its argmax non-``none`` op (ties to the earlier
primitive); concat = all intermediate nodes. The mixing weights are the supernet's, with the skip column scaled
by γ (mitigation ii, §f.4 reading (a)): the searcher's deterministic relaxation (:func:`mean_weights`; drnas: the
Dirichlet mean), and with edge weights β (PC-DARTS §3.3) edges ranked by softmax(α)·β̃. Random search derives its
genotype from its candidates (:mod:`nas_jax.search.random_search`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nas_jax import files
from nas_jax.models.genotypes import Genotype, genotype_from_dict, primitives
from nas_jax.models.search_space import edge_index, edge_normalisation, num_edges
from nas_jax.models.searchers import SEARCHERS, Searcher
from nas_jax.models.supernet import skip_scaled


def derive_cell(weights: np.ndarray, ops: tuple[str, ...] | None = None, steps: int = 4) -> tuple[tuple[str, int], ...]:
    """(op, input) pairs of one cell from its (edges, ops) mixing weights; strongest edge first per node."""
    ops = ops or primitives()
    weights = np.asarray(weights, np.float64)
    if weights.shape != (num_edges(steps), len(ops)):
        raise ValueError(f"mixing weights of shape {weights.shape} do not fit {steps} nodes and {len(ops)} ops; "
                         f"expected {(num_edges(steps), len(ops))}.")
    keep = [k for k, name in enumerate(ops) if name != "none"]
    gene = []
    for j in range(2, steps + 2):
        w = weights[edge_index(j, 0) : edge_index(j, j)][:, keep]
        strongest = w.max(axis=1)
        edges = sorted(range(j), key=lambda i: -strongest[i])[:2]  # stable: ties to the lower input
        gene += [(ops[keep[int(np.argmax(w[i]))]], i) for i in edges]
    return tuple(gene)


def mean_weights(arch: dict, kind: str, searcher: Searcher = SEARCHERS["darts"], skip_gamma: float = 1.0,
                 ops: tuple[str, ...] | None = None, steps: int = 4) -> np.ndarray:
    """The (edges, ops) weights the genotype is derived from (module docstring), skip × γ."""
    ops = tuple(ops or primitives())
    w = np.asarray(skip_scaled(searcher.relaxation(np.asarray(arch[kind])), skip_gamma, ops))
    if f"beta_{kind}" in arch:  # edge weights (PC-DARTS)
        w = w * np.asarray(edge_normalisation(np.asarray(arch[f"beta_{kind}"]), steps))[:, None]
    return w


def derive_genotype(arch: dict, skip_gamma: float = 1.0, ops: tuple[str, ...] | None = None, steps: int = 4,
                    multiplier: int = 4, searcher: Searcher = SEARCHERS["darts"]) -> Genotype:
    """The discrete genotype of α = ``{'normal': (14, 8), 'reduce': (14, 8)}`` (columns in ``ops`` order)."""
    ops = tuple(ops or primitives())
    cells = {kind: derive_cell(mean_weights(arch, kind, searcher, skip_gamma, ops, steps), ops, steps)
             for kind in ("normal", "reduce")}
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(cells["normal"], concat, cells["reduce"], concat)


def save_genotype(genotype: Genotype, path: str | Path) -> Path:
    """Write ``genotype`` as a ``genotypes.json`` entry (loadable as ``genotype:PATH``); atomic."""
    path = Path(path)
    genotype_from_dict(genotype.to_json(), source=str(path))  # refuse anything the loader would refuse
    files.write_text(path, json.dumps(genotype.to_json(), indent=2) + "\n")
    return path
