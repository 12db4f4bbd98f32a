"""The 7 manual CIFAR models ("_comp" variants, docs/protocol.md §c.3), one module per family.

``MANUAL_MODELS`` maps a family name to its Flax module class; every class is built as
``cls(num_classes=..., mean=..., std=..., width_multiplier=..., dtype=...)`` (``dtype``: the compute dtype of
the activations, None for float32; parameters stay float32).
"""

from __future__ import annotations

import flax.linen as nn

from nas_jax.models.manual.bit import BiT
from nas_jax.models.manual.densenet import DenseNet
from nas_jax.models.manual.dla import DLA
from nas_jax.models.manual.resnet import ResNet
from nas_jax.models.manual.resnext import ResNeXt
from nas_jax.models.manual.vgg import VGG
from nas_jax.models.manual.wideresnet import WideResNet

MANUAL_MODELS: dict[str, type[nn.Module]] = {
    "bit": BiT,
    "densenet": DenseNet,
    "dla": DLA,
    "resnet": ResNet,
    "resnext": ResNeXt,
    "vgg": VGG,
    "wideresnet": WideResNet,
}

__all__ = ["DLA", "MANUAL_MODELS", "VGG", "BiT", "DenseNet", "ResNeXt", "ResNet", "WideResNet"]
