"""The DARTS search network (supernet) with architecture parameters α (docs/protocol.md §b.5, §g).

Paper §5.2 / Eqn 3: every edge (i, j) of a cell is a MixedOp ``o_ij(x) = Σ_o w_o · o(x)``, ``w = softmax(α_ij)``,
over the eight DARTS primitives; every intermediate node sums all its predecessors (14 edges for 4 nodes). One
α ∈ R^{14×8} is shared by all normal cells and one by all reduction cells, in the variable collection ``'arch'``,
so weights and α are separate pytrees for the bi-level optimisation. As in the DARTS reference search model: stem
conv 3×3 (3 → 3C) + affine BN, ``layers`` cells (reductions at ⌊L/3⌋ and ⌊2L/3⌋), global average pool, Linear;
every op and preprocessing BN is ``affine=False``, pooling ops are followed by BN(affine=False).

Each searcher's record (:mod:`nas_jax.models.searchers`) turns α into the mixing weights; skip suppression γ
scales the skip column. Its ``edge``: ``partial`` (PC-DARTS, Xu et al. ICLR 2020, §3.2 Eqn 2 and §3.3 Eqn 4: 1/K
of the channels go through the mixed op, then a channel shuffle; nodes weight their input edges by softmax(β);
:class:`PartialMixedOp`) or ``single_path`` (GDAS, random search: only the sampled op runs, :class:`SingleOpEdge`).
The ``none`` op contributes exactly 0 and a zero gradient, so it is not evaluated; its α still enters the softmax.
Sampling draws from the ``'sample'`` RNG at temperature ``tau``; without it (:mod:`nas_jax.search.smoothness`)
the deterministic relaxation. ``weights`` passed to the call override α (random search's fixed genotypes).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.errors import UserError
from nas_jax.models.common import (
    Normalize,
    batch_norm,
    global_avg_pool,
    torch_default_bias_init,
    torch_default_kernel_init,
)
from nas_jax.models.genotypes import primitives
from nas_jax.models.ops import FactorizedReduce, ReLUConvBN, conv, make_op
from nas_jax.models.search_space import edge_index, edge_normalisation, num_edges
from nas_jax.models.searchers import EDGES, SEARCHERS, Searcher

ARCH = "arch"  # the variable collection of the architecture parameters
def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet channel shuffle of NHWC ``x`` (PC-DARTS §3.2)."""
    c = x.shape[-1]
    return x.reshape(*x.shape[:-1], groups, c // groups).swapaxes(-1, -2).reshape(x.shape)


class MixedOp(nn.Module):
    """Σ_o w_o · o(x) over the search primitives of one edge (its fields are those of every edge module)."""

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


class PartialMixedOp(MixedOp):
    """PC-DARTS Eqn 2: the mixed op on the first C/K channels, the rest bypassing it, then channel shuffle."""

    k: int = 4

    @nn.compact
    def __call__(self, x, weights):
        c = x.shape[-1] // self.k
        head, rest = x[..., :c], x[..., c:]
        out = MixedOp(c, self.stride, self.ops, self.train, self.conv_impl, name="mixed")(head, weights)
        if self.k == 1:
            return out
        if self.stride == 2:
            rest = nn.max_pool(rest, (2, 2), strides=(2, 2))
        return channel_shuffle(jnp.concatenate([out, rest], axis=-1), self.k)


class SingleOpEdge(MixedOp):
    """GDAS §3.2 / random search: ``w[k*] · op_{k*}(x)`` with k* = argmax(w), only op k* evaluated
    (``nn.switch``; at init every op runs once to create its variables).

    The α-gradient flows through w[k*] only (then through the softmax to every α of the edge). The GDAS authors'
    code also adds the unsampled weights w[j] (value 0, gradient 1) to the edge output, which gives each w[j] the
    gradient sum(dL/dout) too; that term is an implementation choice of theirs, not in Eqns 5-7, and is left out."""

    def setup(self):
        self.candidates = [make_op(name, self.features, self.stride, affine=False, pool_bn=True,
                                   impl=self.conv_impl) for name in self.ops]

    def __call__(self, x, weights):
        if self.is_initializing():
            return sum(weights[k] * op(x, self.train) for k, op in enumerate(self.candidates))
        index = jnp.argmax(weights)
        branches = [lambda mdl, x, k=k: mdl.candidates[k](x, mdl.train) for k in range(len(self.ops))]
        return weights[index] * nn.switch(index, branches, self, x)


# A group of edges with the same stride and input shape, vmapped: one copy of the MixedOp graph per
# group instead of per edge; each edge keeps its own weights and BN statistics (stacked on axis 0).
# These create the variables; the call runs them vmapped (``scan_edges=False``) or scanned.
EdgeGroup, PartialEdgeGroup = (nn.vmap(op, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                                       in_axes=0, out_axes=0) for op in (MixedOp, PartialMixedOp))


class SearchCell(nn.Module):
    """A cell whose node j sums MixedOps over all its predecessors (§b.5).

    Variables are stacked per group of edges: ``from_inputs`` (the 2·steps edges from the cell inputs) and
    ``into_node_j``. ``scan_edges`` (default) runs the edges as one ``lax.scan``, so the compiled program holds one
    MixedOp; ``False`` vmaps each group, slower to compile on XLA:CPU and very slow with ``conv_impl='xla'``
    (BENCHMARKS.md "search methods"). Both are the same function of the same variables (tests/test_search.py).
    """

    features: int
    reduction: bool
    reduction_prev: bool
    ops: tuple[str, ...]
    steps: int = 4
    multiplier: int = 4
    conv_impl: str = "auto"
    edge: str = "mixed"  # searchers.EDGES
    partial_k: int = 4  # PC-DARTS K
    scan_edges: bool = True

    @nn.compact
    def __call__(self, s0, s1, weights, train: bool, edge_scale=None):
        """``edge_scale`` (edges,): PC-DARTS edge normalisation, multiplied into every edge output."""
        c, impl = self.features, self.conv_impl
        pre0 = FactorizedReduce(c, affine=False, impl=impl) if self.reduction_prev else ReLUConvBN(c, False, impl)
        states = [pre0(s0, train), ReLUConvBN(c, False, impl)(s1, train)]
        nodes = range(2, self.steps + 2)
        if self.edge == "single_path":  # per-edge modules: a vmapped switch would run every branch
            for j in nodes:
                node = 0.0
                for i in range(j):
                    stride = 2 if self.reduction and i < 2 else 1
                    node = node + SingleOpEdge(c, stride, self.ops, train, impl, name=f"edge_{j}_{i}")(
                        states[i], weights[edge_index(j, i)])
                states.append(node)
            return jnp.concatenate(states[-self.multiplier :], axis=-1)

        groups = [("from_inputs", [(j, i) for j in nodes for i in (0, 1)])]
        groups += [(f"into_node_{j}", [(j, i) for i in range(2, j)]) for j in nodes if j > 2]
        if self.is_initializing() or not self.scan_edges:
            return self._vmapped(groups, states, weights, edge_scale, train)
        if self.reduction:  # the stride-2 edges from the cell inputs first, then one scan over the rest
            first, edges = groups[0][1], [e for _, g in groups[1:] for e in g]
            out = self._scan(groups[:1], train, 2, weights, edge_scale, inputs=jnp.stack([states[i] for _, i in first]))
            nodes_in = jnp.stack([out[2 * k] + out[2 * k + 1] for k in range(self.steps)])
            states = list(nodes_in)  # the node states only: the output is the last `multiplier` of them
            if edges:
                states = list(self._scan(groups[1:], train, 1, weights, edge_scale, buffer=nodes_in,
                                         moves=[(j - 2, i - 2) for j, i in edges]))
        else:
            zeros = jnp.zeros((self.steps, *states[0].shape), states[0].dtype)
            edges = [e for _, g in groups for e in g]
            states = list(self._scan(groups, train, 1, weights, edge_scale,
                                     buffer=jnp.concatenate([jnp.stack(states), zeros]), moves=edges))
        return jnp.concatenate(states[-self.multiplier :], axis=-1)

    def _edge(self, stride: int, train: bool, group: bool = False, **kw):
        """One edge, a MixedOp (PC-DARTS: a PartialMixedOp), or with ``group`` its vmapped group (``EdgeGroup``);
        ``kw``: ``name``, or ``parent=None`` for an unbound module whose variables are passed to ``apply``."""
        if self.edge != "partial":
            return (EdgeGroup if group else MixedOp)(self.features, stride, self.ops, train, self.conv_impl, **kw)
        op = PartialEdgeGroup if group else PartialMixedOp
        return op(self.features, stride, self.ops, train, self.conv_impl, k=self.partial_k, **kw)

    def _vmapped(self, groups, states, weights, edge_scale, train: bool):
        """Each group of edges (same stride and input shape) as one vmapped edge; this also creates the
        variables, stacked per group, that :meth:`_scan` runs over."""
        def run(name: str, edges, stride: int, xs):
            rows = jnp.array([edge_index(j, i) for j, i in edges])
            out = self._edge(stride, train, group=True, name=name)(xs, weights[rows])
            return out if edge_scale is None else out * edge_scale[rows][:, None, None, None, None]

        (name, first), rest = groups[0], dict(groups[1:])
        from_inputs = run(name, first, 2 if self.reduction else 1, jnp.stack([states[i] for _, i in first]))
        for k, j in enumerate(range(2, self.steps + 2)):
            node = from_inputs[2 * k] + from_inputs[2 * k + 1]
            if j > 2:
                node = node + run(f"into_node_{j}", rest[f"into_node_{j}"], 1, jnp.stack(states[2:j])).sum(0)
            states.append(node)
        return jnp.concatenate(states[-self.multiplier :], axis=-1)

    def _scan(self, groups, train: bool, stride: int, weights, edge_scale, inputs=None, buffer=None, moves=()):
        """The edges of ``groups`` (in order) as one ``lax.scan`` over their variables, concatenated from the
        groups' stacked ones. With ``inputs`` (edges,) + state: edge k runs on ``inputs[k]``; returns the stacked
        outputs. With ``buffer`` (states,) + state: edge k with move (dst, src) adds its output on
        ``buffer[src]`` to ``buffer[dst]``, in order; returns the final buffer."""
        names = [name for name, _ in groups]
        counts = [len(edges) for _, edges in groups]
        rows = jnp.array([edge_index(j, i) for _, edges in groups for j, i in edges])
        cols = [col for col in ("params", "batch_stats") if self.has_variable(col, names[0])]
        variables = {col: jax.tree_util.tree_map(lambda *v: jnp.concatenate(v), *[self.get_variable(col, n)
                                                                                   for n in names]) for col in cols}
        mutable = ["batch_stats"] if train and "batch_stats" in cols else False
        edge = self._edge(stride, train, parent=None)
        scale = jnp.ones(rows.shape) if edge_scale is None else edge_scale[rows]

        # Rematerialised: the backward pass recomputes each edge's forward from its input instead of storing
        # it; without that the scan keeps every op's intermediates of all edges, which at the §g size
        # outgrew 24 GB in the first-order step (4.3 GB with it; docs/compile_time.md).
        @functools.partial(jax.checkpoint, prevent_cse=False)
        def run(v, x, w, c):
            out = edge.apply(v, x, w, mutable=mutable)
            out, new = out if mutable else (out, {})
            return c * out, new.get("batch_stats", {})

        if inputs is not None:
            xs = (variables, inputs, weights[rows], scale)
            out, stats = jax.lax.scan(lambda _, xs: (None, run(*xs)), None, xs)[1]
        else:
            def body(buf, xs):
                v, w, c, dst, src = xs
                out, new = run(v, jax.lax.dynamic_index_in_dim(buf, src, keepdims=False), w, c)
                node = jax.lax.dynamic_index_in_dim(buf, dst, keepdims=False) + out
                return jax.lax.dynamic_update_index_in_dim(buf, node, dst, 0), new

            dst, src = (jnp.array(m) for m in zip(*moves))
            out, stats = jax.lax.scan(body, buffer, (variables, weights[rows], scale, dst, src))
        if mutable:
            bounds = [sum(counts[:k]) for k in range(len(counts) + 1)]
            for k, name in enumerate(names):
                self.put_variable("batch_stats", name, jax.tree_util.tree_map(
                    lambda v, k=k: v[bounds[k] : bounds[k + 1]], stats))
        return out


def init_alpha(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """DARTS reference initialisation: 1e-3 · N(0, 1) (docs/protocol.md §g)."""
    return 1e-3 * jax.random.normal(key, shape, jnp.float32)


class Supernet(nn.Module):
    """DARTS search network. ``apply({'params', 'batch_stats', 'arch'}, x, train) -> logits``.

    ``x``: float images in [0, 1], NHWC. Defaults: 8 cells, C = 16, 4 nodes, stem
    multiplier 3 (1,930,618 weights for 10 classes, α excluded; docs/protocol.md §b.6).
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
    searcher: Searcher = SEARCHERS["darts"]
    partial_k: int = 4  # PC-DARTS: 1/K of the channels through the mixed op
    scan_edges: bool = True
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
    def __call__(self, x, train: bool = False, tau: float = 1.0, weights: dict | None = None):
        """``tau``: sampling temperature (gdas, snas); ``weights``: fixed mixing weights per cell type."""
        ops, k = self.ops, num_edges(self.steps)
        alphas = {kind: self.variable(ARCH, kind, lambda: init_alpha(self.make_rng("params"), (k, len(ops)))).value
                  for kind in ("normal", "reduce")}
        scale = {kind: None for kind in alphas}
        if self.searcher.edge == "partial":
            scale = {kind: edge_normalisation(self.variable(ARCH, f"beta_{kind}", lambda: init_alpha(
                self.make_rng("params"), (k,))).value, self.steps) for kind in alphas}
        if weights is None:
            sampling = self.searcher.sample is not None and self.has_rng("sample")
            keys = dict(zip(alphas, jax.random.split(self.make_rng("sample"), 2))) if sampling else {}
            weights = {kind: skip_scaled(self.searcher.weights(a, keys.get(kind), tau, self.steps, ops),
                                         self.skip_gamma, ops) for kind, a in alphas.items()}

        x = Normalize(self.mean, self.std)(x)
        c_cur = self.stem_multiplier * self.init_channels
        s0 = s1 = batch_norm(train, name="stem_bn")(conv(c_cur, (3, 3), padding=((1, 1), (1, 1)), name="stem")(x))
        c_cur, reduction_prev = self.init_channels, False
        for i in range(self.layers):
            reduction = i in (self.layers // 3, 2 * self.layers // 3)
            if reduction:
                c_cur *= 2
            cell = SearchCell(c_cur, reduction, reduction_prev, ops, self.steps, self.multiplier, self.conv_impl,
                              self.searcher.edge, self.partial_k, self.scan_edges, name=f"cell_{i}")
            kind = "reduce" if reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[kind], train, scale[kind])
            reduction_prev = reduction
        feats = global_avg_pool(s1)
        return nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                        bias_init=torch_default_bias_init(feats.shape[-1]), name="classifier")(feats)


def skip_scaled(weights: jax.Array, skip_gamma: float, ops: tuple[str, ...]) -> jax.Array:
    """Mitigation (ii), paper §5.2: the skip column × γ (docs/protocol.md §f.4 reading (a)), not renormalised."""
    return weights if skip_gamma == 1.0 else weights.at[..., ops.index("skip_connect")].multiply(skip_gamma)


def supernet_from_config(arch, num_classes: int, mean, std, skip_gamma: float = 1.0, steps: int = 4,
                         ops: tuple[str, ...] = (), searcher: Searcher = SEARCHERS["darts"],
                         partial_k: int = 4) -> Supernet:
    """A supernet with ``arch.init_channels``, ``arch.layers``, ``arch.conv_impl``, ``steps`` nodes per cell
    (output = concat of all of them), the op subset ``ops`` (() -> the 8 DARTS primitives) and ``searcher``."""
    if arch.layers < 1 or arch.init_channels < 1 or steps < 1:
        raise ValueError(f"the supernet needs arch.layers >= 1, arch.init_channels >= 1 and steps >= 1, got "
                         f"{arch.layers}, {arch.init_channels} and {steps}; e.g. --config.arch.layers=5.")
    if not 0.0 < skip_gamma <= 1.0:
        raise ValueError(f"skip_gamma must be in (0, 1], got {skip_gamma} (1 disables skip suppression).")
    if searcher.edge not in EDGES:
        raise ValueError(f"searcher {searcher.name!r} has edge {searcher.edge!r}; valid: {EDGES}.")
    if searcher.edge == "partial" and (partial_k < 1 or arch.init_channels % partial_k):
        raise UserError(f"search.{searcher.name}.k must be >= 1 and divide arch.init_channels "
                        f"({arch.init_channels}), got {partial_k}; e.g. --config.search.{searcher.name}.k=4 with C=16.")
    model = Supernet(num_classes, tuple(mean), tuple(std), init_channels=arch.init_channels, layers=arch.layers,
                     steps=int(steps), multiplier=int(steps), skip_gamma=float(skip_gamma),
                     conv_impl=arch.conv_impl, op_names=tuple(ops), searcher=searcher, partial_k=int(partial_k))
    model.ops  # noqa: B018 - validate the op names now, with the list of valid ones
    return model
