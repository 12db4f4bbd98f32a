"""One DARTS evaluation network for every genotype of the search space: the genotype is an input.

:class:`SpaceNetwork` is :class:`~nas_jax.models.darts.DartsNetwork` (stem, cells, reductions at ⌊L/3⌋ and
⌊2L/3⌋, pool, Linear; docs/protocol.md §b.2–§b.3) whose cells hold, in each of their 2·steps slots, every op of
the space (:data:`SPACE_OPS`; in a reduction cell a stride-2 bank for the cell inputs and a stride-1 bank for the
intermediate nodes) and run only the one the genotype names (``nn.switch``), on the input it names. The genotype
is the variable collection ``'genotype'`` (:func:`genotype_arrays`), an input of the compiled program like the
weights: one program per shape (channels, cells, batch) serves every genotype. With the variables of a
per-genotype network placed in its slots (:func:`variables_from_network`), it computes the same function.
Per-op dropout and drop-path skip an identity ``skip_connect`` as the per-genotype cell does; the auxiliary head
is :class:`DartsNetwork`'s.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.models.darts import DartsNetwork, drop_path, is_stacked_run
from nas_jax.models.genotypes import Genotype, primitives
from nas_jax.models.ops import FactorizedReduce, ReLUConvBN, make_op

SPACE_OPS = tuple(o for o in primitives() if o != "none")  # the DARTS space's ops (an edge's op id: its index)
ZOO_OPS = (*SPACE_OPS, "sep_conv_7x7", "conv_7x1_1x7")  # with the NASNet/AmoebaNet ops of the named genotypes
GENOTYPE = "genotype"  # the variable collection of the genotype arrays


def shape_of(g: Genotype) -> tuple[int, int, int]:
    """What the program depends on besides channels, cells and batch: (nodes, normal concat, reduce concat)."""
    return len(g.normal) // 2, len(g.normal_concat), len(g.reduce_concat)


def program_ops(genotypes: list[Genotype]) -> tuple[str, ...]:
    """The ops of a program for ``genotypes``: the space's, plus the other zoo ops any of them uses."""
    used = {op for g in genotypes for op, _ in (*g.normal, *g.reduce)}
    return tuple(op for op in ZOO_OPS if op in SPACE_OPS or op in used)


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


def with_genotype(variables: dict, g: Genotype, ops: tuple[str, ...] = SPACE_OPS) -> dict:
    """``variables`` with ``g`` as the ``'genotype'`` collection: the program then computes ``g``'s network."""
    return {**variables, GENOTYPE: {k: jnp.asarray(a) for k, a in genotype_arrays(g, ops).items()}}


def _shape_arrays(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Genotype arrays of ``shape`` that :meth:`SpaceNetwork.init` traces with, so that its program is the
    shape's, not a genotype's (initialisation runs every op of every slot)."""
    steps, normal, reduce = shape
    zeros = np.zeros(2 * steps, np.int32)
    return {"normal_ops": zeros, "normal_inputs": zeros, "normal_concat": np.arange(normal, dtype=np.int32),
            "reduce_ops": zeros, "reduce_inputs": zeros, "reduce_concat": np.arange(reduce, dtype=np.int32)}


class Slot(nn.Module):
    """One (node, input) slot of a cell: every op of ``ops``, of which ``op`` runs on input ``source`` and adds to
    node ``node``. A cell scans one Slot over its 2·steps slots (their variables stacked): the program holds one
    slot's ops per cell, not 2·steps copies. A reduction cell's slot has a stride-2 bank for the cell inputs and a
    stride-1 bank for the intermediate nodes (unused by node 0). The scan rematerialises the slot: a switch's
    backward pass would otherwise store the residuals of every op, zero-filled for those it did not run (input
    gradients 207 -> 131 ms at C=8, 5 cells, 32 images on a 2-core CPU; docs/space.md). In training, ``dropout``
    and drop-path (``use_drop_path``) act on the op's output unless it is an identity (a stride-1
    ``skip_connect``), as in :class:`~nas_jax.models.darts.Cell` (same distribution, other draws)."""

    features: int
    reduction: bool
    train: bool
    ops: tuple[str, ...] = SPACE_OPS
    conv_impl: str = "auto"
    dtype: object = None
    dropout: float = 0.0
    use_drop_path: bool = False

    def setup(self):
        stride = 2 if self.reduction else 1
        self.from_inputs = [make_op(o, self.features, stride, impl=self.conv_impl, dtype=self.dtype)
                            for o in self.ops]
        self.from_nodes = [make_op(o, self.features, 1, impl=self.conv_impl, dtype=self.dtype)
                           for o in self.ops] if self.reduction else []
        self.op_dropout = nn.Dropout(self.dropout)

    def __call__(self, nodes, slot, inputs, drop_path_prob):
        """``nodes`` the node buffer (the scan's carry): in a normal cell (steps + 2, ...) with the cell inputs
        first, in a reduction cell (steps, ...) and ``inputs`` (2, ...) the preprocessed cell inputs; ``slot``
        (op, source, node) of this slot."""
        op, source, node = slot
        n, train = len(self.ops), self.train
        if not self.reduction:  # one bank; the inputs are nodes 0 and 1 of the buffer (no copy per slot)
            branches = [lambda m, x, k=k: m.from_inputs[k](x, train) for k in range(n)]
            x = nodes[source]
            y = sum(b(self, x) for b in branches) if self.is_initializing() else nn.switch(op, branches, self, x)
            return nodes.at[node + 2].add(self.regularised(y, op == self.ops.index("skip_connect"),
                                                           drop_path_prob)), None
        x_in, x_node = inputs[jnp.minimum(source, 1)], nodes[jnp.maximum(source - 2, 0)]
        branches = [lambda m, a, b, k=k: m.from_inputs[k](a, train) for k in range(n)]
        branches += [lambda m, a, b, k=k: m.from_nodes[k](b, train) for k in range(n)]
        if self.is_initializing():
            y = sum(b(self, x_in, x_node) for b in branches)
        else:
            y = nn.switch(op + n * (source >= 2), branches, self, x_in, x_node)
        identity = (op == self.ops.index("skip_connect")) & (source >= 2)  # from an input it reduces (stride 2)
        return nodes.at[node].add(self.regularised(y, identity, drop_path_prob)), None

    def regularised(self, y, identity, drop_path_prob):
        """``y`` after per-op dropout and drop-path in training, unless the op was an ``identity``."""
        if not self.train or (self.dropout == 0 and not self.use_drop_path):
            return y
        z = self.op_dropout(y, deterministic=False) if self.dropout > 0 else y
        z = drop_path(self, z, drop_path_prob) if self.use_drop_path else z
        return jnp.where(identity, y, z)


ScannedSlots = nn.scan(nn.remat(Slot), variable_axes={"params": 0, "batch_stats": 0},
                       split_rngs={"params": True, "dropout": True}, in_axes=(0, nn.broadcast, nn.broadcast))


class SpaceCell(nn.Module):
    """A cell of any genotype of the space (module docstring); the genotype enters as ``ops`` and ``inputs``."""

    features: int
    reduction: bool
    reduction_prev: bool
    steps: int = 4
    space_ops: tuple[str, ...] = SPACE_OPS
    conv_impl: str = "auto"
    dtype: object = None
    dropout: float = 0.0
    use_drop_path: bool = False

    @nn.compact
    def __call__(self, s0, s1, train: bool, drop_path_prob, ops, inputs, concat):
        c, impl, dt = self.features, self.conv_impl, self.dtype
        pre0 = FactorizedReduce(c, impl=impl, dtype=dt, name="pre0") if self.reduction_prev else \
            ReLUConvBN(c, impl=impl, dtype=dt, name="pre0")
        states = jnp.stack([pre0(s0, train), ReLUConvBN(c, impl=impl, dtype=dt, name="pre1")(s1, train)])
        n, h, w = states.shape[1:4]
        shape = (n, (h + 1) // 2, (w + 1) // 2, c) if self.reduction else (n, h, w, c)
        slots = ScannedSlots(c, self.reduction, train, self.space_ops, impl, dt, self.dropout, self.use_drop_path,
                             name="slots")
        node_of_slot = jnp.arange(2 * self.steps, dtype=jnp.int32) // 2
        if self.reduction:
            nodes, _ = slots(jnp.zeros((self.steps, *shape), states.dtype), (ops, inputs, node_of_slot), states,
                             drop_path_prob)
        else:
            buffer = jnp.concatenate([states, jnp.zeros((self.steps, *shape), states.dtype)])
            nodes, _ = slots(buffer, (ops, inputs, node_of_slot), None, drop_path_prob)
            nodes = nodes[2:]
        return jnp.concatenate(list(nodes[concat]), axis=-1)


class SpaceNetwork(DartsNetwork):
    """:class:`DartsNetwork` with :class:`SpaceCell` cells over the ops ``space_ops``. ``genotype`` sets the
    shape (:func:`shape_of`). ``apply`` computes the genotype of the ``'genotype'`` collection when the
    variables hold one (:func:`with_genotype`; one program per shape), else ``genotype``'s (its arrays then
    constants of the program). ``init`` creates no ``'genotype'`` collection and traces the shape's program;
    :meth:`architecture_variables` is ``genotype``'s collection, which the trainer adds to the initial
    variables."""

    space_ops: tuple[str, ...] = SPACE_OPS

    def make_cell(self, reduction: bool, reduction_prev: bool, features: int) -> tuple[nn.Module, int]:
        steps, normal, reduce = shape_of(self.genotype)
        return SpaceCell(features, reduction, reduction_prev, steps, self.space_ops, self.conv_impl, self.dtype,
                         self.dropout, self.use_drop_path, parent=None), reduce if reduction else normal

    @nn.nowrap
    def architecture_variables(self) -> dict:
        """The variables that make the shape's program this network: ``{'genotype': genotype's arrays}``."""
        return with_genotype({}, self.genotype, self.space_ops)

    def cell_inputs(self) -> dict[bool, tuple]:
        if self.has_variable(GENOTYPE, "normal_ops"):
            g = self.variables[GENOTYPE]
        elif self.is_initializing():
            g = _shape_arrays(shape_of(self.genotype))
        else:
            g = genotype_arrays(self.genotype, self.space_ops)
        return {kind == "reduce": (jnp.asarray(g[f"{kind}_ops"]), jnp.asarray(g[f"{kind}_inputs"]),
                                   jnp.asarray(g[f"{kind}_concat"])) for kind in ("normal", "reduce")}


def _cell_variables(per_genotype: dict, cell, reduction: bool, reduction_prev: bool, target: dict,
                    ops: tuple[str, ...], stacked: bool) -> dict:
    """``target`` (a SpaceCell's variables of one collection) with a genotype Cell's variables in their slots:
    slot k of bank ``from_{inputs,nodes}_{op id}`` (axis 0 of the slots' stacked leaves; axis 1 in a stacked run
    of cells)."""
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
    slots = dict(out.get("slots", {}))
    for k, (op, idx) in enumerate(cell):
        module = make_op(op, 1, 2 if reduction and idx < 2 else 1)
        source = auto_name(type(module).__name__)
        if source in per_genotype:
            bank = f"{'from_nodes' if reduction and idx >= 2 else 'from_inputs'}_{ops.index(op)}"
            slots[bank] = jax.tree_util.tree_map(
                lambda t, v, k=k: t.at[:, k].set(v) if stacked else t.at[k].set(v), slots[bank], per_genotype[source])
    if slots:
        out["slots"] = slots
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
                tree[name] = _cell_variables(value, cell, reduction, reduction_prev, target[col][name], ops,
                                             is_stacked_run(name))
            else:
                tree[name] = value
        out[col] = tree
    return with_genotype(out, g, ops)


