"""The DARTS evaluation network built from a genotype (PROTOCOL §b.2–§b.4).

Stem conv 3×3 (3 -> 3C) + BN; L cells with reductions at ⌊L/3⌋ and ⌊2L/3⌋
(channel count doubled there); global average pool; Linear. Every NAS model of
the paper (§c.1) is this network with a different genotype. Regularisers: the
artifact's per-op dropout (default 0.2), the DARTS drop-path (option) and the
auxiliary head at cell ⌊2L/3⌋ with loss weight 0.4 (option).
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

    @nn.compact
    def __call__(self, s0, s1, train: bool, drop_path_prob=0.0):
        c, impl = self.features, self.conv_impl
        s0 = (FactorizedReduce(c, impl=impl) if self.reduction_prev else ReLUConvBN(c, impl=impl))(s0, train)
        s1 = ReLUConvBN(c, impl=impl)(s1, train)
        states = [s0, s1]
        for k in range(0, len(self.cell), 2):
            node = 0.0
            for op_name, idx in self.cell[k : k + 2]:
                stride = 2 if self.reduction and idx < 2 else 1
                y = make_op(op_name, c, stride, impl=impl)(states[idx], train)
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

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.avg_pool(nn.relu(x), (5, 5), (3, 3), "VALID")
        x = nn.relu(batch_norm(train)(conv(128, (1, 1))(x)))
        x = nn.relu(batch_norm(train)(conv(768, (2, 2))(x)))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                        bias_init=torch_default_bias_init(x.shape[-1]))(x)


class DartsNetwork(nn.Module):
    """NAS evaluation network (§b.3). ``__call__(x, train) -> logits``; with the
    auxiliary head enabled its logits are sown as ``intermediates/aux_logits``."""

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
    family = "nas"

    @nn.compact
    def __call__(self, x, train: bool = False, drop_path_prob=0.0):
        x = Normalize(self.mean, self.std)(x)
        c_cur = self.init_channels
        stem = batch_norm(train)(conv(3 * c_cur, (3, 3), padding=((1, 1), (1, 1)))(x))
        s0 = s1 = stem
        reduction_prev = False
        aux_at = 2 * self.layers // 3
        for i in range(self.layers):
            reduction = i in (self.layers // 3, 2 * self.layers // 3)
            if reduction:
                c_cur *= 2
            cell, concat = (
                (self.genotype.reduce, self.genotype.reduce_concat)
                if reduction
                else (self.genotype.normal, self.genotype.normal_concat)
            )
            out = Cell(cell, concat, c_cur, reduction, reduction_prev, self.dropout,
                       self.use_drop_path, self.conv_impl, name=f"cell_{i}")(s0, s1, train, drop_path_prob)
            s0, s1 = s1, out
            reduction_prev = reduction
            if i == aux_at and self.auxiliary and (train or self.is_initializing()):
                self.sow("intermediates", "aux_logits", AuxiliaryHead(self.num_classes, name="aux_head")(s1, train))
        feats = global_avg_pool(s1)
        self.sow("intermediates", "features", feats)
        return nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                        bias_init=torch_default_bias_init(feats.shape[-1]), name="classifier")(feats)
