"""The DARTS evaluation network built from a genotype (docs/protocol.md §b.2–§b.4).

Stem conv 3×3 (3 -> 3C) + BN; L cells with reductions at ⌊L/3⌋ and ⌊2L/3⌋
(channel count doubled there); global average pool; Linear. Every NAS model of
the paper (§c.1) is this network with a different genotype. Regularisers: the
artifact's per-op dropout (default 0.2), the DARTS drop-path (option) and the
auxiliary head at cell ⌊2L/3⌋ with loss weight 0.4 (option).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.models.common import (
    Normalize,
    as_output,
    batch_norm,
    global_avg_pool,
    torch_default_bias_init,
    torch_default_kernel_init,
)
from nas_jax.models.genotypes import Genotype
from nas_jax.models.ops import FactorizedReduce, ReLUConvBN, conv, make_op


def drop_path(module: nn.Module, x, drop_prob):
    """Per-sample Bernoulli(keep) mask divided by keep (DARTS drop-path)."""
    keep = 1.0 - drop_prob
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, 0.0)


class Cell(nn.Module):
    """One genotype cell: preprocess both inputs, sum op pairs into nodes, concat."""

    cell: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]
    features: int
    reduction: bool
    reduction_prev: bool
    dropout: float = 0.2
    use_drop_path: bool = False
    conv_impl: str = "auto"
    dtype: Any = None  # compute dtype; None: float32 as before

    @nn.compact
    def __call__(self, s0, s1, train: bool, drop_path_prob=0.0):
        c, impl, dt = self.features, self.conv_impl, self.dtype
        s0 = (FactorizedReduce if self.reduction_prev else ReLUConvBN)(c, impl=impl, dtype=dt)(s0, train)
        s1 = ReLUConvBN(c, impl=impl, dtype=dt)(s1, train)
        states = [s0, s1]
        for k in range(0, len(self.cell), 2):
            node = 0.0
            for op_name, idx in self.cell[k : k + 2]:
                stride = 2 if self.reduction and idx < 2 else 1
                y = make_op(op_name, c, stride, impl=impl, dtype=dt)(states[idx], train)
                is_identity = op_name == "skip_connect" and stride == 1
                if op_name != "none" and not is_identity and self.dropout > 0:
                    y = nn.Dropout(self.dropout, deterministic=not train)(y)
                if train and self.use_drop_path and not is_identity:
                    y = drop_path(self, y, drop_path_prob)
                node = node + y
            states.append(node)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier at 8×8 (§b.4): ReLU, avg-pool 5/3, 1×1 conv 128, 2×2 conv 768, Linear."""

    num_classes: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        dt = self.dtype
        x = nn.avg_pool(nn.relu(x), (5, 5), (3, 3), "VALID")
        x = nn.relu(batch_norm(train, dtype=dt)(conv(128, (1, 1), dtype=dt)(x)))
        x = nn.relu(batch_norm(train, dtype=dt)(conv(768, (2, 2), dtype=dt)(x)))
        x = x.reshape(x.shape[0], -1)
        return as_output(nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                                  bias_init=torch_default_bias_init(x.shape[-1]), dtype=dt)(x))


def cell_runs(signatures: list[tuple], breaks: tuple[int, ...] = ()) -> list[tuple[int, int]]:
    """Split cells 0..L−1 into [start, stop) runs of consecutive, structurally identical cells whose
    outputs can be carried as (s0, s1): same signature, and output shape = both input shapes. A cell in
    ``breaks`` (the auxiliary head's cell) ends its run."""
    runs, start = [], 0
    for i in range(1, len(signatures) + 1):
        sig = signatures[i - 1]
        carried = sig[1] == sig[2] == sig[3]  # (…, s0 shape, s1 shape, out shape)
        if i == len(signatures) or signatures[i] != sig or not carried or (i - 1) in breaks:
            runs.append((start, i))
            start = i
    return runs


def run_name(run: tuple[int, int]) -> str:
    """The variable name of a scanned run's stacked cells [start, stop): ``cells_{start}_to_{stop-1}``."""
    return f"cells_{run[0]}_to_{run[1] - 1}"


def is_stacked_run(name: str) -> bool:
    """Whether a top-level variable name is a stacked run of cells (:func:`run_name`): its leaves carry the cells
    on a leading axis."""
    return re.fullmatch(r"cells_\d+_to_\d+", name) is not None


def stack_runs(tree: dict, runs) -> dict:
    """A per-cell variable dict (``cell_0 … cell_{L−1}``) with the cells of each run stacked on a leading axis
    into one entry :func:`run_name`: the layout :class:`DartsNetwork` reads."""
    out = dict(tree)
    for a, b in runs:
        cells = [out.pop(f"cell_{i}") for i in range(a, b)]
        out[run_name((a, b))] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *cells)
    return out


class DartsNetwork(nn.Module):
    """NAS evaluation network (§b.3). ``__call__(x, train) -> logits``; with the
    auxiliary head enabled its logits are sown as ``intermediates/aux_logits``.

    Compile time: the structurally identical cells of a stage (every cell but the first of the network,
    the reductions and the cell after each reduction) run as one ``lax.scan`` over their stacked variables,
    so the compiled program holds one copy of such a cell per stage instead of one per cell
    (``scan_cells=False`` unrolls them). This is the network's variable layout: a scanned run's parameters and
    BN statistics are one entry :func:`run_name` with the cells on a leading axis, from :meth:`init` on, and
    their gradients, optimiser buffers and checkpoints keep it (no per-cell copy exists). ``init`` draws each
    cell as the unrolled network does and stacks the runs once, so both layouts start from the same values.
    Dropout and drop-path masks of the scanned cells come from per-cell keys split from the module's
    ``dropout`` stream (same distribution as unrolled, different draws).

    ``dtype`` is the compute dtype of the activations (None: float32, unchanged; jnp.bfloat16 for
    ``arch.dtype=bfloat16``); parameters and BN statistics stay float32, logits and features leave as float32.
    """

    genotype: Genotype
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    init_channels: int = 36
    layers: int = 20
    auxiliary: bool = False
    dropout: float = 0.2
    use_drop_path: bool = False
    conv_impl: str = "auto"
    scan_cells: bool = True
    dtype: Any = None
    family = "nas"

    def cells(self, image_hw: tuple[int, int], stem_channels: int) -> list[tuple[Cell, tuple]]:
        """The unbound cells of the network with their signatures (cell, s0 shape, s1 shape, out shape)."""
        c_cur, reduction_prev = self.init_channels, False
        hw = tuple(image_hw)
        s0 = s1 = (*hw, stem_channels)
        out = []
        for i in range(self.layers):
            reduction = i in (self.layers // 3, 2 * self.layers // 3)
            if reduction:
                c_cur *= 2
                hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
            module, outputs = self.make_cell(reduction, reduction_prev, c_cur)
            shape = (*hw, outputs * c_cur)
            out.append((module, ((reduction, reduction_prev, c_cur), s0, s1, shape)))
            s0, s1 = s1, shape
            reduction_prev = reduction
        return out

    def make_cell(self, reduction: bool, reduction_prev: bool, features: int) -> tuple[nn.Module, int]:
        """An unbound cell of the network and the number of nodes it concatenates."""
        cell, concat = ((self.genotype.reduce, self.genotype.reduce_concat) if reduction
                        else (self.genotype.normal, self.genotype.normal_concat))
        return Cell(cell, concat, features, reduction, reduction_prev, self.dropout, self.use_drop_path,
                    self.conv_impl, self.dtype, parent=None), len(concat)

    def scan_runs(self, image_hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """The [start, stop) runs of cells that ``__call__`` scans (every run, length 1 included; all length 1
        with ``scan_cells=False``). The auxiliary head's cell ends a run."""
        if not self.scan_cells:
            return tuple((i, i + 1) for i in range(self.layers))
        cells = self.cells(tuple(image_hw), 3 * self.init_channels)  # the stem's 3C channels
        return tuple(cell_runs([sig for _, sig in cells], breaks=(2 * self.layers // 3,)))

    def stacked_runs(self, image_hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """The runs of two or more cells, whose variables are stacked (:func:`run_name`)."""
        return tuple((a, b) for a, b in self.scan_runs(image_hw) if b - a > 1)

    @nn.nowrap
    def init(self, rngs, x, *args, **kwargs):
        """The network's variables in its layout: the cells initialised one by one (as unrolled), then each
        scanned run's cells stacked into one entry."""
        variables = super().init(rngs, x, *args, **kwargs)
        runs = self.stacked_runs(x.shape[1:3])
        return {col: stack_runs(tree, runs) if col in ("params", "batch_stats") else tree
                for col, tree in variables.items()}

    def cell_inputs(self) -> dict[bool, tuple]:
        """What every cell's call takes after ``(s0, s1, train, drop_path_prob)``, by reduction flag: nothing here
        (the genotype is the cells' structure); the genotype arrays in :class:`~nas_jax.models.space.SpaceNetwork`."""
        return {False: (), True: ()}

    def _scanned(self, cell: Cell, run: tuple[int, int], s0, s1, train: bool, drop_path_prob, extra=()):
        """Cells ``run`` = [start, stop) (structurally identical) as one lax.scan over their stacked variables."""
        name = run_name(run)
        stacked = {col: self.get_variable(col, name) for col in ("params", "batch_stats") if self.has_variable(col, name)}
        needs_rng = train and (self.dropout > 0 or self.use_drop_path)
        keys = jax.random.split(self.make_rng("dropout"), run[1] - run[0]) if needs_rng else None
        mutable = ["batch_stats"] if train and "batch_stats" in stacked else False

        def body(carry, xs):
            variables, key = xs
            out = cell.apply(variables, *carry, train, drop_path_prob, *extra,
                             rngs={"dropout": key} if needs_rng else None, mutable=mutable)
            out, stats = out if mutable else (out, {})
            return (carry[1], out), stats.get("batch_stats", {})

        (s0, s1), stats = jax.lax.scan(body, (s0, s1), (stacked, keys))
        if mutable and self.is_mutable_collection("batch_stats"):
            self.put_variable("batch_stats", name, stats)
        return s0, s1

    @nn.compact
    def __call__(self, x, train: bool = False, drop_path_prob=0.0):
        dt = self.dtype
        x = Normalize(self.mean, self.std, dt)(x)
        c_cur = self.init_channels
        stem = batch_norm(train, dtype=dt)(conv(3 * c_cur, (3, 3), padding=((1, 1), (1, 1)), dtype=dt)(x))
        s0 = s1 = stem
        aux_at = 2 * self.layers // 3
        cells = self.cells(x.shape[1:3], stem.shape[-1])
        extra = self.cell_inputs()
        scan = self.scan_cells and not self.is_initializing()
        for start, stop in self.scan_runs(x.shape[1:3]) if scan else [(i, i + 1) for i in range(self.layers)]:
            cell, ((reduction, *_), *_) = cells[start]
            if stop - start > 1:
                s0, s1 = self._scanned(cell, (start, stop), s0, s1, train, drop_path_prob, extra[reduction])
                continue
            s0, s1 = s1, cell.clone(parent=self, name=f"cell_{start}")(s0, s1, train, drop_path_prob, *extra[reduction])
            if start == aux_at and self.auxiliary and (train or self.is_initializing()):
                self.sow("intermediates", "aux_logits", AuxiliaryHead(self.num_classes, dt, name="aux_head")(s1, train))
        feats = global_avg_pool(s1)
        self.sow("intermediates", "features", as_output(feats))
        return as_output(nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init, dtype=dt,
                                  bias_init=torch_default_bias_init(feats.shape[-1]), name="classifier")(feats))
