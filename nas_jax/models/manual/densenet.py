"""DenseNet-121, CIFAR "_comp" variant (docs/protocol.md §c.3; Huang et al., "Densely Connected
Convolutional Networks", CVPR 2017, arXiv:1608.06993).

torchvision's ``densenet121`` (growth 32, blocks [6, 12, 24, 16], 64 initial features, bottleneck 128,
compression 0.5, no dropout) with the "_comp" stem of §c.3 (a 3x3 stride-1 pad-1 conv0, no stem BN, ReLU or
max-pool); norm5 + ReLU, global average pooling, Linear(1024, n). Initialisation (§b.7, torchvision): convs
He-normal (fan_in), BN gamma=1 beta=0, the classifier PyTorch's default Linear weight with a **zero** bias.
Width multiplier: the growth rate and initial features scale with :func:`scale_channels`; bottlenecks and
transitions follow from them as in torchvision.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.models.common import Normalize, batch_norm, kaiming_normal_fan_in, torch_default_kernel_init
from nas_jax.models.manual.base import ManualModel

conv = functools.partial(nn.Conv, use_bias=False, kernel_init=kaiming_normal_fan_in)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth); output concatenated."""

    growth_rate: int
    bn_size: int = 4
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dt = self.dtype
        out = nn.relu(batch_norm(train, name="norm1", dtype=dt)(x))
        out = conv(self.bn_size * self.growth_rate, (1, 1), padding=((0, 0), (0, 0)), name="conv1", dtype=dt)(out)
        out = nn.relu(batch_norm(train, name="norm2", dtype=dt)(out))
        out = conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), name="conv2", dtype=dt)(out)
        return jnp.concatenate([x, out], axis=-1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv (compression) - 2x2 stride-2 average pool."""

    out_features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(batch_norm(train, name="norm", dtype=self.dtype)(x))
        x = conv(self.out_features, (1, 1), padding=((0, 0), (0, 0)), name="conv", dtype=self.dtype)(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class DenseNet(ManualModel):
    """DenseNet-121 "_comp" (§c.3)."""

    blocks: tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    init_features: int = 64
    bn_size: int = 4
    compression: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        growth, dt = self.scale(self.growth_rate), self.dtype
        x = Normalize(self.mean, self.std, dt)(x)
        x = conv(self.scale(self.init_features), (3, 3), padding=((1, 1), (1, 1)), name="conv0", dtype=dt)(x)
        for b, num_layers in enumerate(self.blocks):
            for i in range(num_layers):
                x = DenseLayer(growth, self.bn_size, dt, name=f"denseblock{b + 1}_layer{i + 1}")(x, train)
            if b != len(self.blocks) - 1:
                out_features = max(1, int(x.shape[-1] * self.compression))
                x = Transition(out_features, dt, name=f"transition{b + 1}")(x, train)
        x = nn.relu(batch_norm(train, name="norm5", dtype=dt)(x))
        return self.head(x, nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                                     bias_init=nn.initializers.zeros, name="classifier", dtype=dt))
