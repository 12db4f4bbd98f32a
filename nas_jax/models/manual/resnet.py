"""ResNet-18, CIFAR "_comp" variant (docs/protocol.md §c.3; He et al., "Deep Residual Learning for
Image Recognition", CVPR 2016, arXiv:1512.03385).

torchvision's ``resnet18`` with the CIFAR stem of §c.3 (3x3 stride-1 pad-1 conv1, no max-pool): BasicBlocks
[2, 2, 2, 2], widths 64-512, global average pool, Linear(512, n); 11,173,962 parameters for 10 classes (§b.6).
Initialisation (§b.7, torchvision): convs He-normal (fan_out), BN gamma=1 beta=0, the classifier PyTorch's
default Linear init (also the artifact's fresh stem conv, which gets PyTorch's default init there). Also the
torchvision ``Bottleneck`` ("ResNet v1.5") of ResNeXt and WideResNet and the shared stem / classifier helpers.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax

from nas_jax.models.common import (
    Normalize,
    as_output,
    batch_norm,
    global_avg_pool,
    kaiming_normal_fan_out,
    scale_channels,
    torch_default_bias_init,
    torch_default_kernel_init,
)

# No bias on any conv of the ResNet family; He-normal fan_out (§b.7).
conv = functools.partial(nn.Conv, use_bias=False, kernel_init=kaiming_normal_fan_out)

PAD0 = ((0, 0), (0, 0))
PAD1 = ((1, 1), (1, 1))


def torch_linear(features: int, fan_in: int, name: str, dtype: Any = None) -> nn.Dense:
    """A Dense layer with PyTorch's default Linear init (weight and bias U(+-1/sqrt(fan_in)))."""
    return nn.Dense(
        features,
        kernel_init=torch_default_kernel_init,
        bias_init=torch_default_bias_init(fan_in),
        name=name,
        dtype=dtype,
    )


def comp_stem(x: jax.Array, features: int, train: bool, dtype: Any = None) -> jax.Array:
    """The "_comp" stem (§c.3): 3x3 stride-1 pad-1 conv, BN, ReLU, no max-pool; ``dtype`` the compute dtype.

    Must be called from inside a compact method (the submodules bind to the caller).
    """
    x = conv(features, (3, 3), strides=(1, 1), padding=PAD1, name="conv1", dtype=dtype)(x)
    x = batch_norm(train, name="bn1", dtype=dtype)(x)
    return nn.relu(x)


class BasicBlock(nn.Module):
    """torchvision BasicBlock: 3x3 conv (stride) - BN - ReLU - 3x3 conv - BN, + shortcut, ReLU.

    The shortcut is a 1x1 strided conv + BN when the shape changes.
    """

    planes: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s, dt = (self.stride, self.stride), self.dtype
        out = conv(self.planes, (3, 3), strides=s, padding=PAD1, name="conv1", dtype=dt)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=dt)(out))
        out = conv(self.planes, (3, 3), strides=(1, 1), padding=PAD1, name="conv2", dtype=dt)(out)
        out = batch_norm(train, name="bn2", dtype=dt)(out)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = conv(self.planes, (1, 1), strides=s, padding=PAD0, name="downsample_conv", dtype=dt)(x)
            shortcut = batch_norm(train, name="downsample_bn", dtype=dt)(shortcut)
        return nn.relu(out + shortcut)


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
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.out_features:
            shortcut = conv(self.out_features, (1, 1), strides=s, padding=PAD0, name="downsample_conv", dtype=dt)(x)
            shortcut = batch_norm(train, name="downsample_bn", dtype=dt)(shortcut)
        return nn.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet-18 "_comp" (§c.3). ``width_multiplier`` scales every width (64-512) with
    :func:`scale_channels`; ``blocks`` allows tiny test variants."""

    family: ClassVar[str] = "manual"

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    width_multiplier: float = 1.0
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    dtype: Any = None  # compute dtype; None: float32 as before

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Normalize(self.mean, self.std, self.dtype)(x)
        x = comp_stem(x, scale_channels(64, self.width_multiplier), train, self.dtype)
        for i, num_blocks in enumerate(self.blocks):
            planes = scale_channels(64 * 2**i, self.width_multiplier)
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(planes, stride, self.dtype, name=f"layer{i + 1}_{j}")(x, train)
        feats = global_avg_pool(x)
        self.sow("intermediates", "features", as_output(feats))
        return as_output(torch_linear(self.num_classes, feats.shape[-1], "classifier", self.dtype)(feats))
