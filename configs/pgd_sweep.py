"""Untargeted PGD ASR against eps, step eps/3 (§3.2, Figure 3).

  python launch/main.py --config=configs/pgd_sweep.py [:paper]

Paper result (CIFAR-10): manual models are more robust at every eps; the gap
shrinks as eps grows.
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("pgd_sweep", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "snas", "resnet", "vgg") if quick else paper_zoo()
    c.pgd = ml_collections.ConfigDict()
    c.pgd.n_inputs = 200 if quick else 1000
    c.pgd.eps_grid_255 = (1, 2, 3, 4, 5, 6, 7, 8)
    c.pgd.iterations = 7
    c.pgd.restarts = 5
    c.pgd.norm = "linf"
    c.pgd.eps = 8 / 255  # unused: each grid point sets eps and step eps/3
    c.pgd.step_size = 2 / 255
    c.pgd.confidence = 0.0
    c.pgd.batch_size = 200 if quick else 250
    return c
