"""Wide ResNet-50-2, CIFAR "_comp" variant (docs/protocol.md §c.3; Zagoruyko & Komodakis, "Wide Residual
Networks", BMVC 2016, arXiv:1605.07146).

torchvision's ``wide_resnet50_2`` with the CIFAR stem of §c.3; Bottleneck stages [3, 4, 6, 3] with twice
ResNet-50's inner width (128-1024; outputs 256-2048), global average pool, Linear(2048, n); initialisation as
ResNet's (§b.7). Width multiplier: stem 64, inner ``128 * 2**i`` and outputs ``scale_channels(64 * 2**i, m) * 4``
scale with :func:`scale_channels`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax

from nas_jax.models.common import Normalize, as_output, global_avg_pool, scale_channels
from nas_jax.models.manual.resnet import Bottleneck, comp_stem, torch_linear


class WideResNet(nn.Module):
    """WRN-50-2 "_comp" (§c.3)."""

    family: ClassVar[str] = "manual"

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    width_multiplier: float = 1.0
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width_factor: int = 2
    dtype: Any = None  # compute dtype; None: float32 as before

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Normalize(self.mean, self.std, self.dtype)(x)
        x = comp_stem(x, scale_channels(64, self.width_multiplier), train, self.dtype)
        for i, num_blocks in enumerate(self.blocks):
            planes = 64 * 2**i
            width = scale_channels(planes * self.width_factor, self.width_multiplier)
            out_features = scale_channels(planes, self.width_multiplier) * 4
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                x = Bottleneck(width, out_features, 1, stride, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
        feats = global_avg_pool(x)
        self.sow("intermediates", "features", as_output(feats))
        return as_output(torch_linear(self.num_classes, feats.shape[-1], "classifier", self.dtype)(feats))
