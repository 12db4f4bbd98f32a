"""ResNeXt-50 32x4d, CIFAR "_comp" variant (docs/protocol.md §c.3; Xie et al., "Aggregated Residual
Transformations for Deep Neural Networks", CVPR 2017, arXiv:1611.05431).

torchvision's ``resnext50_32x4d`` with the CIFAR stem of §c.3 and **the 4th stage dropped**: Bottleneck stages
[3, 4, 6], cardinality 32, 4 channels per group in the first stage (inner widths 128-512, outputs 256-1024),
global average pool, Linear(1024, n) **with** bias (the artifact's has none [artifact quirk];
``classifier_bias=False``). Initialisation as ResNet's (§b.7).

Width multiplier: stage i's inner width is ``W = scale_channels(128 * 2**i, m)``; while ``W >= 32`` the
cardinality stays 32 (inner width ``32 * (W // 32)``), below it drops to ``W`` with one channel per group.
Outputs scale as in ResNet (``scale_channels(64 * 2**i, m) * 4``).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from nas_jax.models.common import Normalize, scale_channels
from nas_jax.models.manual.base import ManualModel, residual_units, torch_linear
from nas_jax.models.manual.resnet import Bottleneck, comp_stem


def grouped_width(full_width: int, cardinality: int, multiplier: float) -> tuple[int, int]:
    """(inner width, groups) of a scaled ResNeXt bottleneck (rule in the module docstring)."""
    width = scale_channels(full_width, multiplier)
    if width >= cardinality:
        return cardinality * (width // cardinality), cardinality
    return width, width


class ResNeXt(ManualModel):
    """ResNeXt-50 32x4d "_comp" without its 4th stage (§c.3)."""

    blocks: tuple[int, ...] = (3, 4, 6)
    cardinality: int = 32
    base_width: int = 4
    classifier_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Normalize(self.mean, self.std, self.dtype)(x)
        x = comp_stem(x, self.scale(64), train, self.dtype)
        for i, j, stride in residual_units(self.blocks):
            planes = 64 * 2**i
            width, groups = grouped_width(planes * self.base_width // 64 * self.cardinality, self.cardinality,
                                          self.width_multiplier)
            out_features = self.scale(planes) * 4
            x = Bottleneck(width, out_features, groups, stride, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
        return self.head(x, torch_linear(self.num_classes, x.shape[-1], "classifier", self.dtype,
                                         self.classifier_bias))
