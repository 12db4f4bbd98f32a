"""The DARTS search network (supernet) with architecture parameters α (PROTOCOL §b.5, §g).

Paper §5.2 / Eqn 3: every edge (i, j) of a cell is a MixedOp,
``o_ij(x) = Σ_o w_o · o(x)`` with ``w = softmax(α_ij)``, over the eight DARTS
primitives (``none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3,
sep_conv_5x5, dil_conv_3x3, dil_conv_5x5``). Every intermediate node sums all its
predecessors (2 + 3 + 4 + 5 = 14 edges for 4 nodes). One α ∈ R^{14×8} is shared by
all normal cells and one by all reduction cells; both live in the variable
collection ``'arch'`` (``variables = {'params', 'batch_stats', 'arch'}``), so the
weights and α are separate pytrees for the bi-level optimisation.

Construction as in the DARTS reference search model: stem conv 3×3 (3 → 3C) + affine
BN, then ``layers`` cells with reductions at ⌊L/3⌋ and ⌊2L/3⌋, global average pool,
Linear. Every op and preprocessing BN is ``affine=False``; pooling ops are followed by
BN(affine=False). The ops are the evaluation ops of :mod:`nas_jax.models.ops` (and
their CPU/GPU ``conv_impl`` choice).

Skip suppression (paper §5.2, mitigation ii; PROTOCOL §f.4 reading (a)): with
``skip_gamma = γ < 1`` the skip op's softmax weight is multiplied by γ inside every
MixedOp, without renormalising (:func:`edge_weights`).

The ``none`` op contributes exactly 0·x to the sum, and its weight's gradient
⟨∂L/∂out, 0⟩ = 0, so it is not evaluated; its α still enters the softmax.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.models.common import (
    Normalize,
    batch_norm,
    global_avg_pool,
    torch_default_bias_init,
    torch_default_kernel_init,
)
from nas_jax.models.genotypes import primitives
from nas_jax.models.ops import FactorizedReduce, ReLUConvBN, conv, make_op

ARCH = "arch"  # the variable collection of the architecture parameters


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes: 2 + 3 + ... + (steps + 1)."""
    return sum(2 + j for j in range(steps))


def edge_weights(alpha: jax.Array, skip_gamma: float = 1.0, ops: tuple[str, ...] | None = None) -> jax.Array:
    """Mixing weights of every edge: softmax over ops, the skip column scaled by γ (Eqn 3)."""
    ops = ops or primitives()
    w = jax.nn.softmax(alpha, axis=-1)
    if skip_gamma != 1.0:
        w = w.at[..., ops.index("skip_connect")].multiply(skip_gamma)
    return w


class MixedOp(nn.Module):
    """Σ_o w_o · o(x) over the search primitives of one edge."""

    features: int
    stride: int
    ops: tuple[str, ...]
    train: bool
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, weights):
        out = 0.0
        for k, name in enumerate(self.ops):
            if name == "none":  # 0 · x: no contribution, no gradient
                continue
            op = make_op(name, self.features, self.stride, affine=False, pool_bn=True, impl=self.conv_impl,
                         module_name=name)
            out = out + weights[k] * op(x, self.train)
        return out


# A group of edges with the same stride and input shape, vmapped: one copy of the
# MixedOp graph per group instead of per edge, which cuts the compiled program (and
# XLA's compile time) by ~3.5x; each edge keeps its own weights and BN statistics.
EdgeGroup = nn.vmap(MixedOp, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                    in_axes=0, out_axes=0)


def edge_index(node: int, source: int) -> int:
    """Row of α for the edge source -> intermediate node ``node`` (node >= 2; DARTS order)."""
    return num_edges(node - 2) + source


class SearchCell(nn.Module):
    """A cell whose node j sums MixedOps over all its predecessors (§b.5).

    Edges are evaluated in groups: the 2·steps edges from the two cell inputs at once
    (stride 2 in a reduction cell), then for each node its edges from earlier nodes.
    """

    features: int
    reduction: bool
    reduction_prev: bool
    ops: tuple[str, ...]
    steps: int = 4
    multiplier: int = 4
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, s0, s1, weights, train: bool):
        c, impl = self.features, self.conv_impl
        pre0 = FactorizedReduce(c, affine=False, impl=impl) if self.reduction_prev else ReLUConvBN(c, False, impl)
        states = [pre0(s0, train), ReLUConvBN(c, False, impl)(s1, train)]
        nodes = range(2, self.steps + 2)
        rows = jnp.array([edge_index(j, i) for j in nodes for i in (0, 1)])
        from_inputs = EdgeGroup(c, 2 if self.reduction else 1, self.ops, train, impl, name="from_inputs")(
            jnp.stack([states[i] for _ in nodes for i in (0, 1)]), weights[rows])
        for k, j in enumerate(nodes):
            node = from_inputs[2 * k] + from_inputs[2 * k + 1]
            if j > 2:
                rows = jnp.array([edge_index(j, i) for i in range(2, j)])
                node = node + EdgeGroup(c, 1, self.ops, train, impl, name=f"into_node_{j}")(
                    jnp.stack(states[2:j]), weights[rows]).sum(0)
            states.append(node)
        return jnp.concatenate(states[-self.multiplier :], axis=-1)


def init_alpha(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """DARTS reference initialisation: 1e-3 · N(0, 1) (PROTOCOL §g)."""
    return 1e-3 * jax.random.normal(key, shape, jnp.float32)


class Supernet(nn.Module):
    """DARTS search network. ``apply({'params', 'batch_stats', 'arch'}, x, train) -> logits``.

    ``x``: float images in [0, 1], NHWC. Defaults: 8 cells, C = 16, 4 nodes, stem
    multiplier 3 (1,930,618 weights for 10 classes, α excluded; PROTOCOL §b.6).
    """

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    init_channels: int = 16
    layers: int = 8
    steps: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    skip_gamma: float = 1.0
    conv_impl: str = "auto"
    op_names: tuple[str, ...] = ()  # () -> the 8 DARTS primitives; a subset (with 'skip_connect') for tests
    family = "supernet"

    @property
    def ops(self) -> tuple[str, ...]:
        ops = self.op_names or primitives()
        unknown = [o for o in ops if o not in primitives()]
        if unknown or "skip_connect" not in ops:
            raise ValueError(f"supernet ops {ops} must be DARTS primitives {primitives()} including 'skip_connect'; "
                             f"unknown: {unknown}.")
        return tuple(ops)

    @nn.compact
    def __call__(self, x, train: bool = False):
        ops, k = self.ops, num_edges(self.steps)
        alphas = {kind: self.variable(ARCH, kind, lambda: init_alpha(self.make_rng("params"), (k, len(ops)))).value
                  for kind in ("normal", "reduce")}
        weights = {kind: edge_weights(a, self.skip_gamma, ops) for kind, a in alphas.items()}

        x = Normalize(self.mean, self.std)(x)
        c_cur = self.stem_multiplier * self.init_channels
        s0 = s1 = batch_norm(train, name="stem_bn")(conv(c_cur, (3, 3), padding=((1, 1), (1, 1)), name="stem")(x))
        c_cur, reduction_prev = self.init_channels, False
        for i in range(self.layers):
            reduction = i in (self.layers // 3, 2 * self.layers // 3)
            if reduction:
                c_cur *= 2
            cell = SearchCell(c_cur, reduction, reduction_prev, ops, self.steps, self.multiplier, self.conv_impl,
                              name=f"cell_{i}")
            s0, s1 = s1, cell(s0, s1, weights["reduce" if reduction else "normal"], train)
            reduction_prev = reduction
        feats = global_avg_pool(s1)
        return nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                        bias_init=torch_default_bias_init(feats.shape[-1]), name="classifier")(feats)


def supernet_from_config(arch, num_classes: int, mean, std, skip_gamma: float = 1.0, steps: int = 4,
                         ops: tuple[str, ...] = ()) -> Supernet:
    """A supernet with ``arch.init_channels``, ``arch.layers``, ``arch.conv_impl``, ``steps`` nodes per cell
    (output = concat of all of them) and the op subset ``ops`` (() -> the 8 DARTS primitives)."""
    if arch.layers < 1 or arch.init_channels < 1 or steps < 1:
        raise ValueError(f"the supernet needs arch.layers >= 1, arch.init_channels >= 1 and steps >= 1, got "
                         f"{arch.layers}, {arch.init_channels} and {steps}; e.g. --config.arch.layers=5.")
    if not 0.0 < skip_gamma <= 1.0:
        raise ValueError(f"skip_gamma must be in (0, 1], got {skip_gamma} (1 disables skip suppression).")
    model = Supernet(num_classes, tuple(mean), tuple(std), init_channels=arch.init_channels, layers=arch.layers,
                     steps=int(steps), multiplier=int(steps), skip_gamma=float(skip_gamma),
                     conv_impl=arch.conv_impl, op_names=tuple(ops))
    model.ops  # noqa: B018 - validate the op names now, with the list of valid ones
    return model
