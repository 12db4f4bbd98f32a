"""Train one zoo model (Table 1 accuracy) into the victim zoo.

  python launch/main.py --config=configs/train.py --config.model=darts
  python launch/main.py --config=configs/train.py:paper --config.model=resnet --config.dataset=cifar10

quick (default): `digits`, C=8, 5 cells / width ×0.25, 8 epochs, no per-op dropout: about
2–4 minutes on 2 CPU cores, ≥ 90% test accuracy for darts and resnet. paper: CIFAR-10, C=36, 20
cells / full widths, 600 epochs (Table 5).
"""

from nas_jax.config import base_config


def get_config(preset: str = "quick"):
    return base_config("train", preset)
