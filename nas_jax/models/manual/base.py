"""What the 7 manual models share (docs/protocol.md §c.3): the constructor fields, the width scaling, the residual
stages' unit layout and the head (global average pooling, the sown features, the classifier)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax

from nas_jax.models.common import (
    as_output,
    global_avg_pool,
    scale_channels,
    torch_default_bias_init,
    torch_default_kernel_init,
)


def torch_linear(features: int, fan_in: int, name: str, dtype: Any = None, use_bias: bool = True) -> nn.Dense:
    """A Dense layer with PyTorch's default Linear init (weight and bias U(+-1/sqrt(fan_in)))."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=torch_default_kernel_init,
        bias_init=torch_default_bias_init(fan_in),
        name=name,
        dtype=dtype,
    )


def residual_units(blocks: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(stage i, unit j, stride) of every unit of ``blocks`` units per stage: stride 2 on the first unit of every
    stage but the first (torchvision ResNet, big_transfer ResNetV2)."""
    for i, num_units in enumerate(blocks):
        for j in range(num_units):
            yield i, j, 2 if (i > 0 and j == 0) else 1


class ManualModel(nn.Module):
    """Base of the manual models, built as ``cls(num_classes=..., mean=..., std=..., width_multiplier=...,
    dtype=...)`` (``dtype``: the compute dtype of the activations, None for float32; parameters stay float32)."""

    family: ClassVar[str] = "manual"

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    width_multiplier: float = 1.0
    dtype: Any = None  # compute dtype; None: float32 as before

    def scale(self, channels: int) -> int:
        """``channels`` scaled by the width multiplier (:func:`scale_channels`)."""
        return scale_channels(channels, self.width_multiplier)

    def head(self, x: jax.Array, classifier: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
        """Global average pooling, the features sown as ``intermediates/features``, then ``classifier`` (default
        :func:`torch_linear` named ``classifier``); features and logits in at least float32. Called from the
        subclass's compact ``__call__`` (its submodules are the model's)."""
        feats = global_avg_pool(x)
        self.sow("intermediates", "features", as_output(feats))
        if classifier is None:
            classifier = torch_linear(self.num_classes, feats.shape[-1], "classifier", self.dtype)
        return as_output(classifier(feats))
