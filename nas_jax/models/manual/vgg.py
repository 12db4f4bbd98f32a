"""VGG-13-BN, CIFAR "_comp" variant (docs/protocol.md §c.3; Simonyan & Zisserman, "Very Deep
Convolutional Networks for Large-Scale Image Recognition", ICLR 2015, arXiv:1409.1556).

torchvision's ``vgg13_bn`` conv stack (3x3 pad-1 convs **with bias** + BN + ReLU, 2x2 max-pools), global average
pooling instead of the 7x7 adaptive pool, and the "_comp" classifier
Linear(512, 512)-ReLU-Dropout(0.5)-Linear(512, 512)-ReLU-Dropout(0.5)-Linear(512, n). Initialisation (§b.7,
torchvision): convs He-normal (fan_out) with zero bias, BN gamma=1 beta=0, linear layers N(0, 0.01), zero bias.

Width multiplier: conv widths scale with :func:`scale_channels`; the classifier's hidden width stays 512
[project]: three N(0, 0.01) layers start near a saddle that a narrower classifier escapes slowly (at width 0.25
with 128 hidden, the quick VGG stayed at chance for 8 of 12 epochs; with 512 it reaches 96%). Dropout draws from
the ``'dropout'`` rng in train mode.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from nas_jax.models.common import Normalize, batch_norm, kaiming_normal_fan_out, normal_init
from nas_jax.models.manual.base import ManualModel

# torchvision cfg "B" (VGG-13); 0 marks a 2x2 stride-2 max-pool.
VGG13_CFG: tuple[int, ...] = (64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0)


class VGG(ManualModel):
    """VGG-13-BN "_comp" (§c.3). The first classifier Linear is named ``classifier``."""

    cfg: tuple[int, ...] = VGG13_CFG
    hidden: int = 512
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dt = self.dtype
        x = Normalize(self.mean, self.std, dt)(x)
        conv_index = 0
        for v in self.cfg:
            if v == 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
                continue
            x = nn.Conv(
                self.scale(v),
                (3, 3),
                padding=((1, 1), (1, 1)),
                use_bias=True,
                kernel_init=kaiming_normal_fan_out,
                bias_init=nn.initializers.zeros,
                name=f"conv{conv_index}",
                dtype=dt,
            )(x)
            x = nn.relu(batch_norm(train, name=f"bn{conv_index}", dtype=dt)(x))
            conv_index += 1
        hidden = self.hidden  # not scaled by width_multiplier (see the module docstring)

        def classifier(y: jax.Array) -> jax.Array:
            names = ("classifier", "classifier_1", "classifier_2")
            for k, name in enumerate(names):
                features = self.num_classes if k == len(names) - 1 else hidden
                y = nn.Dense(features, kernel_init=normal_init(0.01), bias_init=nn.initializers.zeros, name=name,
                             dtype=dt)(y)
                if k < len(names) - 1:
                    y = nn.relu(y)
                    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            return y

        return self.head(x, classifier)
