"""Per-input commonality of least-likely PGD, eps 4/255 (§3.2, Figure 4).

  python launch/main.py --config=configs/pgd_commonality.py [:paper]

Paper result (CIFAR-10): > 300 inputs fool all 7 NAS models counted, < 10 fool all manual ones.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.pgd_commonality import CommonalitySettings


def get_config(preset: str = "quick"):
    c = base_config("pgd_commonality", preset)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()
    c.pgd_commonality = CommonalitySettings.section(c.preset)  # defaults: nas_jax/tasks/pgd_commonality.py
    return c
