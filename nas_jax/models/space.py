"""One DARTS evaluation network for every genotype of the search space: the genotype is an input.

:class:`SpaceNetwork` is :class:`~nas_jax.models.darts.DartsNetwork` (stem, cells, reductions at ⌊L/3⌋ and
⌊2L/3⌋, pool, Linear; docs/protocol.md §b.2–§b.3) whose cells hold, in each of their 2·steps slots, every op of
the space (:data:`SPACE_OPS`; in a reduction cell a stride-2 bank for the cell inputs and a stride-1 bank for the
intermediate nodes) and run only the one the genotype names (``nn.switch``), on the input it names. The genotype
is the variable collection ``'genotype'`` (:func:`genotype_arrays`), an input of the compiled program like the
weights: one program per shape (channels, cells, batch) serves every genotype. With the variables of a
per-genotype network placed in its slots (:func:`variables_from_network`), it computes the same function.

Not yet: per-op dropout and drop-path (the cells refuse them), the auxiliary head.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from nas_jax.models.darts import DartsNetwork
from nas_jax.models.genotypes import Genotype, primitives
from nas_jax.models.ops import FactorizedReduce, ReLUConvBN, make_op

SPACE_OPS = tuple(o for o in primitives() if o != "none")  # the DARTS space's ops (an edge's op id: its index)
ZOO_OPS = (*SPACE_OPS, "sep_conv_7x7", "conv_7x1_1x7")  # with the NASNet/AmoebaNet ops of the named genotypes
GENOTYPE = "genotype"  # the variable collection of the genotype arrays


def shape_of(g: Genotype) -> tuple[int, int, int]:
    """What the program depends on besides channels, cells and batch: (nodes, normal concat, reduce concat)."""
    return len(g.normal) // 2, len(g.normal_concat), len(g.reduce_concat)


def genotype_arrays(g: Genotype, ops: tuple[str, ...] = SPACE_OPS) -> dict[str, np.ndarray]:
    """``{'{kind}_ops', '{kind}_inputs'}`` (int32, one per edge) and ``'{kind}_concat'`` (the concatenated nodes,
    0-based) of ``g``, op ids indexing ``ops``."""
    out = {}
    for kind, cell, concat in (("normal", g.normal, g.normal_concat), ("reduce", g.reduce, g.reduce_concat)):
        unknown = sorted({op for op, _ in cell} - set(ops))
        if unknown:
            raise ValueError(f"the {kind} cell uses {unknown}, not among the space network's ops {ops}.")
        out[f"{kind}_ops"] = np.array([ops.index(op) for op, _ in cell], np.int32)
        out[f"{kind}_inputs"] = np.array([i for _, i in cell], np.int32)
        out[f"{kind}_concat"] = np.array([i - 2 for i in concat], np.int32)
    return out


class Slot(nn.Module):
    """One (node, input) slot of a cell: every op of ``ops``, of which ``op`` runs on input ``source``."""

    features: int
    reduction: bool
    node: int  # 0-based intermediate node: its sources are the cell inputs 0, 1 and the nodes before it
    ops: tuple[str, ...] = SPACE_OPS
    conv_impl: str = "auto"
    dtype: object = None

    def setup(self):
        stride = 2 if self.reduction else 1
        self.from_inputs = [make_op(o, self.features, stride, impl=self.conv_impl, dtype=self.dtype)
                            for o in self.ops]
        both = self.reduction and self.node > 0  # a reduction cell's nodes are at the reduced resolution
        self.from_nodes = [make_op(o, self.features, 1, impl=self.conv_impl, dtype=self.dtype)
                           for o in self.ops] if both else []

    def __call__(self, inputs, nodes, op, source, train: bool):
        """``inputs`` (2, ...) the preprocessed cell inputs, ``nodes`` (steps, ...) the node buffer."""
        n = len(self.ops)
        if not self.reduction:  # one bank: every source has the same shape
            x = jnp.concatenate([inputs, nodes])[source]
            branches = [lambda m, x, k=k: m.from_inputs[k](x, train) for k in range(n)]
            if self.is_initializing():
                return sum(b(self, x) for b in branches)
            return nn.switch(op, branches, self, x)
        x_in, x_node = inputs[jnp.minimum(source, 1)], nodes[jnp.maximum(source - 2, 0)]
        branches = [lambda m, a, b, k=k: m.from_inputs[k](a, train) for k in range(n)]
        branches += [lambda m, a, b, k=k: m.from_nodes[k](b, train) for k in range(len(self.from_nodes))]
        if self.is_initializing():
            return sum(b(self, x_in, x_node) for b in branches)
        index = op + n * (source >= 2) if self.from_nodes else op
        return nn.switch(index, branches, self, x_in, x_node)


class SpaceCell(nn.Module):
    """A cell of any genotype of the space (module docstring); the genotype enters as ``ops`` and ``inputs``."""

    features: int
    reduction: bool
    reduction_prev: bool
    steps: int = 4
    space_ops: tuple[str, ...] = SPACE_OPS
    conv_impl: str = "auto"
    dtype: object = None

    @nn.compact
    def __call__(self, s0, s1, train: bool, drop_path_prob, ops, inputs, concat):
        c, impl, dt = self.features, self.conv_impl, self.dtype
        pre0 = FactorizedReduce(c, impl=impl, dtype=dt, name="pre0") if self.reduction_prev else \
            ReLUConvBN(c, impl=impl, dtype=dt, name="pre0")
        states = jnp.stack([pre0(s0, train), ReLUConvBN(c, impl=impl, dtype=dt, name="pre1")(s1, train)])
        n, h, w = states.shape[1:4]
        shape = (n, (h + 1) // 2, (w + 1) // 2, c) if self.reduction else (n, h, w, c)
        nodes = jnp.zeros((self.steps, *shape), states.dtype)
        for k in range(2 * self.steps):
            y = Slot(c, self.reduction, k // 2, self.space_ops, impl, dt, name=f"slot_{k}")(
                states, nodes, ops[k], inputs[k], train)
            nodes = nodes.at[k // 2].add(y)
        return jnp.concatenate(list(nodes[concat]), axis=-1)


class SpaceNetwork(DartsNetwork):
    """:class:`DartsNetwork` with :class:`SpaceCell` cells over the ops ``space_ops``. ``genotype`` sets the
    shape (:func:`shape_of`) and the initial ``'genotype'`` collection, which ``apply`` may replace with the
    arrays of any genotype of that shape (:func:`genotype_arrays`)."""

    space_ops: tuple[str, ...] = SPACE_OPS

    def make_cell(self, reduction: bool, reduction_prev: bool, features: int) -> tuple[nn.Module, int]:
        if self.dropout > 0 or self.use_drop_path or self.auxiliary:
            raise ValueError("the space network has no per-op dropout, drop-path or auxiliary head yet; set "
                             "arch.dropout=0, arch.drop_path=False and arch.auxiliary=False.")
        steps, normal, reduce = shape_of(self.genotype)
        return SpaceCell(features, reduction, reduction_prev, steps, self.space_ops, self.conv_impl, self.dtype,
                         parent=None), reduce if reduction else normal

    def cell_inputs(self) -> dict[bool, tuple]:
        arrays = genotype_arrays(self.genotype, self.space_ops)
        g = {k: self.variable(GENOTYPE, k, lambda v=v: jnp.asarray(v)).value for k, v in arrays.items()}
        return {kind == "reduce": (g[f"{kind}_ops"], g[f"{kind}_inputs"], g[f"{kind}_concat"])
                for kind in ("normal", "reduce")}


def _cell_variables(per_genotype: dict, cell, reduction: bool, reduction_prev: bool, target: dict,
                    ops: tuple[str, ...]) -> dict:
    """``target`` (a SpaceCell's variables of one collection) with a genotype Cell's variables in their slots."""
    out = dict(target)
    counts: dict[str, int] = {}

    def auto_name(cls_name: str) -> str:  # flax names unnamed submodules {Class}_{n} in creation order
        n = counts.get(cls_name, 0)
        counts[cls_name] = n + 1
        return f"{cls_name}_{n}"

    pre = [auto_name("FactorizedReduce" if reduction_prev else "ReLUConvBN"), auto_name("ReLUConvBN")]
    for name, source in zip(("pre0", "pre1"), pre, strict=True):
        if source in per_genotype:
            out[name] = per_genotype[source]
    for k, (op, idx) in enumerate(cell):
        stride = 2 if reduction and idx < 2 else 1
        module = make_op(op, 1, stride)
        source = auto_name(type(module).__name__)
        if source in per_genotype:
            bank = "from_nodes" if reduction and idx >= 2 else "from_inputs"
            out[f"slot_{k}"] = {**out[f"slot_{k}"], f"{bank}_{ops.index(op)}": per_genotype[source]}
    return out


def variables_from_network(network: DartsNetwork, variables: dict, target: dict,
                           ops: tuple[str, ...] = SPACE_OPS) -> dict:
    """``target`` (a :class:`SpaceNetwork`'s variables, same shapes) with ``network``'s variables in the slots of
    its genotype, and that genotype as the ``'genotype'`` collection: the space network then computes
    ``network``'s function. Stacked runs map leaf by leaf (the cells' names are the same)."""
    g = network.genotype
    flags = {}
    for i, (module, _sig) in enumerate(network.cells((8, 8), 3 * network.init_channels)):
        flags[i] = (module.reduction, module.reduction_prev)
    out = {}
    for col in ("params", "batch_stats"):
        tree = dict(target[col])
        for name, value in variables[col].items():
            if name.startswith(("cell_", "cells_")):
                first = int(name.split("_")[1])
                reduction, reduction_prev = flags[first]
                cell = g.reduce if reduction else g.normal
                tree[name] = _cell_variables(value, cell, reduction, reduction_prev, target[col][name], ops)
            else:
                tree[name] = value
        out[col] = tree
    out[GENOTYPE] = {k: jnp.asarray(v) for k, v in genotype_arrays(g, ops).items()}
    return out


