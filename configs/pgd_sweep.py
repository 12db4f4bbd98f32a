"""Untargeted PGD ASR against eps, step eps/3 (§3.2, Figure 3).

  python launch/main.py --config=configs/pgd_sweep.py [:paper]

Paper result (CIFAR-10): manual models are more robust at every eps; the gap
shrinks as eps grows.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.pgd_sweep import SweepSettings


def get_config(preset: str = "quick"):
    c = base_config("pgd_sweep", preset)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()
    c.pgd_sweep = SweepSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/pgd_sweep.py
    return c
