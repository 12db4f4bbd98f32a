"""The search space's indexing and the searchers' mixing weights (docs/protocol.md §b.5, §g).

A cell with ``steps`` intermediate nodes has one edge per (node, predecessor): 2 + 3 + ... + (steps + 1) edges
(:func:`num_edges`), in DARTS order (:func:`edge_index`); α holds one row per edge and one column per op. How a
row of α becomes the edge's mixing weights is what tells the searchers apart (:func:`method_weights`,
:data:`METHODS`; the edges themselves are :mod:`nas_jax.models.supernet`):

- ``darts`` (Eqn 3) and ``pc_darts``: softmax(α); ``skip_gamma = γ < 1`` scales the skip column
  (paper §5.2, mitigation ii; docs/protocol.md §f.4 reading (a)), without renormalising;
  PC-DARTS also weights each node's input edges by softmax(β) (:func:`edge_normalisation`, its Eqn 4);
- ``gdas`` (GDAS §3.2 Eqns 5–7): hard one-hot of argmax(α + g) forward, straight-through
  softmax((α + g)/τ) backward;
- ``snas`` (SNAS §2.2 Eqn 3): the relaxed Gumbel-softmax softmax((α + g)/τ);
- ``drnas`` (DrNAS §3.1 Eqn 3): w ~ Dirichlet(elu(α) + 1), reparameterised through the gamma draws;
- ``random`` (Li & Talwalkar §4.2): a uniformly random genotype-shaped path (:func:`random_path`).

Without a key the sampling methods use their deterministic relaxation: softmax(α) for gdas/snas/random, the
Dirichlet mean for drnas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nas_jax.models.genotypes import primitives

METHODS = ("darts", "pc_darts", "gdas", "snas", "drnas", "random")
SINGLE_PATH = ("gdas", "random")  # one op per edge evaluated in the forward pass


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes: 2 + 3 + ... + (steps + 1)."""
    return sum(2 + j for j in range(steps))


def edge_index(node: int, source: int) -> int:
    """Row of α for the edge source -> intermediate node ``node`` (node >= 2; DARTS order)."""
    return num_edges(node - 2) + source


def dirichlet_concentration(alpha: jax.Array) -> jax.Array:
    """DrNAS §3.1: concentration β = elu(α) + 1 > 0."""
    return jax.nn.elu(alpha) + 1.0


def method_weights(method: str, alpha: jax.Array, key: jax.Array | None, tau: float = 1.0,
                   skip_gamma: float = 1.0, ops: tuple[str, ...] | None = None, steps: int = 4) -> jax.Array:
    """Mixing weights (edges, ops) of one cell type for ``method`` (module docstring); γ scales the skip column."""
    ops = ops or primitives()
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; valid: {METHODS}.")
    if key is None or method in ("darts", "pc_darts"):
        w = dirichlet_concentration(alpha) if method == "drnas" else jax.nn.softmax(alpha, axis=-1)
        if method == "drnas":
            w = w / w.sum(-1, keepdims=True)
    elif method == "snas":
        w = jax.nn.softmax((alpha + jax.random.gumbel(key, alpha.shape, alpha.dtype)) / tau, axis=-1)
    elif method == "gdas":
        logits = alpha + jax.random.gumbel(key, alpha.shape, alpha.dtype)
        soft = jax.nn.softmax(logits / tau, axis=-1)
        hard = jax.nn.one_hot(jnp.argmax(logits, -1), alpha.shape[-1], dtype=alpha.dtype)
        w = hard - jax.lax.stop_gradient(soft) + soft
    elif method == "drnas":
        w = jax.random.dirichlet(key, dirichlet_concentration(alpha))
    else:  # random
        w = random_path(key, steps, ops).astype(alpha.dtype)
    if skip_gamma != 1.0:
        w = w.at[..., ops.index("skip_connect")].multiply(skip_gamma)
    return w


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


def edge_normalisation(beta: jax.Array, steps: int) -> jax.Array:
    """PC-DARTS Eqn 4: per node, softmax of β over its input edges -> (edges,)."""
    out, start = [], 0
    for j in range(steps):
        out.append(jax.nn.softmax(beta[start : start + j + 2]))
        start += j + 2
    return jnp.concatenate(out)
