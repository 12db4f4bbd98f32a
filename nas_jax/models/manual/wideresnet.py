"""Wide ResNet-50-2, CIFAR "_comp" variant (docs/protocol.md §c.3; Zagoruyko & Komodakis, "Wide Residual
Networks", BMVC 2016, arXiv:1605.07146).

torchvision's ``wide_resnet50_2`` with the CIFAR stem of §c.3; Bottleneck stages [3, 4, 6, 3] with twice
ResNet-50's inner width (128-1024; outputs 256-2048), global average pool, Linear(2048, n); initialisation as
ResNet's (§b.7). Width multiplier: stem 64, inner ``128 * 2**i`` and outputs ``scale_channels(64 * 2**i, m) * 4``
scale with :func:`scale_channels`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from nas_jax.models.common import Normalize
from nas_jax.models.manual.base import ManualModel, residual_units
from nas_jax.models.manual.resnet import Bottleneck, comp_stem


class WideResNet(ManualModel):
    """WRN-50-2 "_comp" (§c.3)."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width_factor: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Normalize(self.mean, self.std, self.dtype)(x)
        x = comp_stem(x, self.scale(64), train, self.dtype)
        for i, j, stride in residual_units(self.blocks):
            width, out_features = self.scale(64 * 2**i * self.width_factor), self.scale(64 * 2**i) * 4
            x = Bottleneck(width, out_features, 1, stride, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
        return self.head(x)
