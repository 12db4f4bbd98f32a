"""ResNet-18, CIFAR "_comp" variant (docs/protocol.md §c.3; He et al., "Deep Residual Learning for
Image Recognition", CVPR 2016, arXiv:1512.03385).

torchvision's ``resnet18`` with the CIFAR stem of §c.3 (3x3 stride-1 pad-1 conv1, no max-pool): BasicBlocks
[2, 2, 2, 2], widths 64-512, global average pool, Linear(512, n); 11,173,962 parameters for 10 classes (§b.6).
Initialisation (§b.7, torchvision): convs He-normal (fan_out), BN gamma=1 beta=0, the classifier PyTorch's
default Linear init (also the artifact's fresh stem conv, which gets PyTorch's default init there). Also the
torchvision ``Bottleneck`` ("ResNet v1.5") of ResNeXt and WideResNet and the shared stem and shortcut.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax

from nas_jax.models.common import Normalize, batch_norm, kaiming_normal_fan_out
from nas_jax.models.manual.base import ManualModel, residual_units

# No bias on any conv of the ResNet family (and DLA); He-normal fan_out (§b.7).
conv = functools.partial(nn.Conv, use_bias=False, kernel_init=kaiming_normal_fan_out)

PAD0 = ((0, 0), (0, 0))
PAD1 = ((1, 1), (1, 1))


def comp_stem(x: jax.Array, features: int, train: bool, dtype: Any = None) -> jax.Array:
    """The "_comp" stem (§c.3): 3x3 stride-1 pad-1 conv, BN, ReLU, no max-pool; ``dtype`` the compute dtype.

    Must be called from inside a compact method (the submodules bind to the caller).
    """
    x = conv(features, (3, 3), strides=(1, 1), padding=PAD1, name="conv1", dtype=dtype)(x)
    x = batch_norm(train, name="bn1", dtype=dtype)(x)
    return nn.relu(x)


def shortcut(x: jax.Array, features: int, stride: int, train: bool, dtype: Any = None) -> jax.Array:
    """The identity, or a 1x1 strided conv + BN where the shape changes (torchvision's ``downsample``).

    Must be called from inside a compact method (the submodules bind to the caller).
    """
    if stride == 1 and x.shape[-1] == features:
        return x
    x = conv(features, (1, 1), strides=(stride, stride), padding=PAD0, name="downsample_conv", dtype=dtype)(x)
    return batch_norm(train, name="downsample_bn", dtype=dtype)(x)


class BasicBlock(nn.Module):
    """torchvision BasicBlock: 3x3 conv (stride) - BN - ReLU - 3x3 conv - BN, + shortcut, ReLU.

    The shortcut is ``residual`` where the caller gives one (DLA's trees), else :func:`shortcut`.
    """

    planes: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, residual: jax.Array | None = None) -> jax.Array:
        s, dt = (self.stride, self.stride), self.dtype
        out = conv(self.planes, (3, 3), strides=s, padding=PAD1, name="conv1", dtype=dt)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=dt)(out))
        out = conv(self.planes, (3, 3), strides=(1, 1), padding=PAD1, name="conv2", dtype=dt)(out)
        out = batch_norm(train, name="bn2", dtype=dt)(out)
        if residual is None:
            residual = shortcut(x, self.planes, self.stride, train, dt)
        return nn.relu(out + residual)


class Bottleneck(nn.Module):
    """torchvision Bottleneck (v1.5): 1x1 (width) - 3x3 grouped, strided (width) - 1x1 (out).

    ``width`` is the inner width (torchvision: ``int(planes * base_width / 64) * groups``),
    ``out_features`` the block output (``planes * 4``).
    """

    width: int
    out_features: int
    groups: int = 1
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s, dt = (self.stride, self.stride), self.dtype
        out = conv(self.width, (1, 1), padding=PAD0, name="conv1", dtype=dt)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=dt)(out))
        out = conv(self.width, (3, 3), strides=s, padding=PAD1, feature_group_count=self.groups, name="conv2",
                   dtype=dt)(out)
        out = nn.relu(batch_norm(train, name="bn2", dtype=dt)(out))
        out = conv(self.out_features, (1, 1), padding=PAD0, name="conv3", dtype=dt)(out)
        out = batch_norm(train, name="bn3", dtype=dt)(out)
        return nn.relu(out + shortcut(x, self.out_features, self.stride, train, dt))


class ResNet(ManualModel):
    """ResNet-18 "_comp" (§c.3). ``width_multiplier`` scales every width (64-512) with
    :func:`scale_channels`; ``blocks`` allows tiny test variants."""

    blocks: tuple[int, ...] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Normalize(self.mean, self.std, self.dtype)(x)
        x = comp_stem(x, self.scale(64), train, self.dtype)
        for i, j, stride in residual_units(self.blocks):
            x = BasicBlock(self.scale(64 * 2**i), stride, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
        return self.head(x)
