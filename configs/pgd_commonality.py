"""Per-input commonality of least-likely PGD, eps 4/255 (§3.2, Figure 4).

  python launch/main.py --config=configs/pgd_commonality.py [:paper]

Paper result (CIFAR-10): > 300 inputs fool all 7 NAS models counted, < 10 fool all manual ones.
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("pgd_commonality", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "snas", "resnet", "vgg") if quick else paper_zoo()
    c.pgd = ml_collections.ConfigDict()
    c.pgd.n_inputs = 200 if quick else 1000
    c.pgd.eps = 4 / 255
    c.pgd.step_size = 1 / 255
    c.pgd.iterations = 7
    c.pgd.restarts = 5
    c.pgd.norm = "linf"
    c.pgd.confidence = 0.0
    c.pgd.batch_size = 200 if quick else 250
    return c
