"""BiT (ResNetV2-50x1), CIFAR "_comp" variant (docs/protocol.md §c.3; Kolesnikov et al., "Big Transfer
(BiT): General Visual Representation Learning", ECCV 2020, arXiv:1912.11370; pre-activation
units from He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016).

The artifact's ``bit-m-r50x1_comp`` trained from scratch: big_transfer's PyTorch ResNetV2 with pre-activation
bottlenecks [3, 4, 6, 3] (GroupNorm + ReLU before each weight-standardised conv, stride on the 3x3, a WS 1x1
projection where the shape changes), the root one WS 3x3 stride-1 conv (3 -> 64) without pooling, and the head's
GroupNorm + ReLU before global average pooling and Linear(2048, n). Weight standardisation per output channel:
``w = (w - mean) / sqrt(var + 1e-10)`` (biased variance); GroupNorm eps 1e-5 with ``gcd(32, c)`` groups.
Initialisation: PyTorch's defaults (big_transfer sets none). No BatchNorm, no dropout: ``train`` has no effect and
the variables hold only ``'params'``. Width multiplier: every channel count scales with :func:`scale_channels`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.models.common import Normalize, as_compute, torch_default_kernel_init
from nas_jax.models.manual.base import ManualModel, residual_units

WS_EPS = 1e-10
GN_EPS = 1e-5


class StdConv(nn.Module):
    """Weight-standardised conv without bias (big_transfer ``StdConv2d``); explicit padding."""

    features: int
    kernel_size: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = as_compute(x, self.dtype)
        k = self.kernel_size
        kernel = self.param("kernel", torch_default_kernel_init, (k, k, x.shape[-1], self.features))
        mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) / jnp.sqrt(var + WS_EPS)
        p = (k - 1) // 2
        return jax.lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


def group_norm(channels: int, name: str, dtype: Any = None) -> nn.GroupNorm:
    """GroupNorm with gcd(32, channels) groups and PyTorch's eps; statistics in at least float32 (Flax),
    output in ``dtype``."""
    return nn.GroupNorm(
        dtype=dtype,
        num_groups=math.gcd(32, channels),
        epsilon=GN_EPS,
        use_fast_variance=False,
        scale_init=nn.initializers.ones,
        bias_init=nn.initializers.zeros,
        name=name,
    )


class PreActBottleneck(nn.Module):
    """GN-ReLU-1x1 WS conv (mid) - GN-ReLU-3x3 WS conv (mid, stride) - GN-ReLU-1x1 WS conv (out)."""

    out_features: int
    mid_features: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        out = nn.relu(group_norm(x.shape[-1], "gn1", dt)(x))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.out_features:
            shortcut = StdConv(self.out_features, 1, self.stride, dt, name="downsample")(out)
        out = StdConv(self.mid_features, 1, dtype=dt, name="conv1")(out)
        out = nn.relu(group_norm(self.mid_features, "gn2", dt)(out))
        out = StdConv(self.mid_features, 3, self.stride, dt, name="conv2")(out)
        out = nn.relu(group_norm(self.mid_features, "gn3", dt)(out))
        out = StdConv(self.out_features, 1, dtype=dt, name="conv3")(out)
        return out + shortcut


class BiT(ManualModel):
    """BiT-M-R50x1 "_comp" (§c.3). ``blocks`` allows tiny test variants."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width_factor: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no BatchNorm, no dropout
        wf, dt = self.width_factor, self.dtype
        x = Normalize(self.mean, self.std, dt)(x)
        x = StdConv(self.scale(64 * wf), 3, dtype=dt, name="root_conv")(x)
        for i, j, stride in residual_units(self.blocks):
            out_features, mid_features = self.scale(256 * wf * 2**i), self.scale(64 * wf * 2**i)
            x = PreActBottleneck(out_features, mid_features, stride, dt, name=f"block{i + 1}_unit{j + 1:02d}")(x)
        x = nn.relu(group_norm(x.shape[-1], "head_gn", dt)(x))
        return self.head(x)
