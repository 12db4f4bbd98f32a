"""DLA-34, CIFAR "_comp" variant (docs/protocol.md §c.3; Yu et al., "Deep Layer Aggregation", CVPR 2018,
arXiv:1707.06484; reference code ucbdrive/dla ``dla34``).

The official ``dla34`` (BasicBlock trees, channels [16, 32, 64, 128, 256, 512], levels [1, 2, 2, 1], level_root
on the last three trees, 1x1 Root convs without root residual) with the artifact's "_comp" changes (§c.3): a 3x3
stride-1 base conv (officially 7x7), level 1 at stride **1** (was 2), tree strides [1, 2, 2, 2], global average
pool, Linear(512, n). Like the artifact (and timm) the never-used ``project`` layers of trees with ``levels > 1``
are omitted (15,232,314 parameters for 10 classes); the 1x1-conv ``fc`` is a Dense layer (same function); the
shortcut's down-sampling is a 2x2 max-pool. Initialisation (ucbdrive/dla): convs N(0, 2 / (k*k*out_channels)),
BN gamma=1 beta=0, the classifier PyTorch's default Linear init (the artifact leaves every conv at PyTorch's
default). Width multiplier: every channel count scales with :func:`scale_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.models.common import Normalize, batch_norm
from nas_jax.models.manual.base import ManualModel
from nas_jax.models.manual.resnet import PAD0, PAD1, BasicBlock, conv


class Root(nn.Module):
    """Aggregation node: concat - kxk conv - BN - ReLU (no root residual in DLA-34)."""

    out_features: int
    kernel_size: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], train: bool = False) -> jax.Array:
        k = self.kernel_size
        p = (k - 1) // 2
        out = conv(self.out_features, (k, k), padding=((p, p), (p, p)), name="conv", dtype=self.dtype)(
            jnp.concatenate(xs, axis=-1))
        return nn.relu(batch_norm(train, name="bn", dtype=self.dtype)(out))


class Tree(nn.Module):
    """Hierarchical deep aggregation tree of ``levels`` levels (official ``Tree``).

    The Root's input width (``root_dim`` in the official code) is inferred from the
    concatenated children, so it is not a field.
    """

    levels: int
    out_features: int
    stride: int = 1
    level_root: bool = False
    root_kernel_size: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, children: Sequence[jax.Array] | None = None, train: bool = False) -> jax.Array:
        children = [] if children is None else list(children)
        bottom = x
        if self.stride > 1:
            bottom = nn.max_pool(x, (self.stride, self.stride), strides=(self.stride, self.stride), padding="VALID")
        if self.level_root:
            children.append(bottom)
        dt = self.dtype
        if self.levels == 1:
            residual = bottom
            if x.shape[-1] != self.out_features:
                residual = conv(self.out_features, (1, 1), padding=PAD0, name="project_conv", dtype=dt)(bottom)
                residual = batch_norm(train, name="project_bn", dtype=dt)(residual)
            x1 = BasicBlock(self.out_features, self.stride, dt, name="tree1")(x, train, residual)
            x2 = BasicBlock(self.out_features, 1, dt, name="tree2")(x1, train)
            return Root(self.out_features, self.root_kernel_size, dt, name="root")([x2, x1, *children], train)
        x1 = Tree(
            self.levels - 1, self.out_features, self.stride, root_kernel_size=self.root_kernel_size, dtype=dt,
            name="tree1",
        )(x, None, train)
        children.append(x1)
        return Tree(self.levels - 1, self.out_features, 1, root_kernel_size=self.root_kernel_size, dtype=dt,
                    name="tree2")(x1, children, train)


class DLA(ManualModel):
    """DLA-34 "_comp" (§c.3). ``levels`` allows tiny test variants."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    levels: tuple[int, ...] = (1, 2, 2, 1)
    strides: tuple[int, ...] = (1, 2, 2, 2)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c, dt = [self.scale(ch) for ch in self.channels], self.dtype
        x = Normalize(self.mean, self.std, dt)(x)
        for name, width in (("base", c[0]), ("level0", c[0]), ("level1", c[1])):
            x = conv(width, (3, 3), padding=PAD1, name=f"{name}_conv", dtype=dt)(x)
            x = nn.relu(batch_norm(train, name=f"{name}_bn", dtype=dt)(x))
        for i, (levels, stride) in enumerate(zip(self.levels, self.strides, strict=True)):
            x = Tree(levels, c[i + 2], stride, level_root=i > 0, dtype=dt, name=f"level{i + 2}")(x, None, train)
        return self.head(x)
