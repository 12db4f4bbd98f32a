"""Black-box NES evasion, most/least likely (§3.2, Figure 5).

  python launch/main.py --config=configs/nes.py [:paper]

400 queries per gradient estimate (200 antithetic pairs), sigma 1e-3, otherwise
the PGD setting of Figure 2. Paper result (CIFAR-10): NAS models are more
vulnerable, especially in the least-likely case.
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("nes", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "snas", "resnet", "vgg") if quick else paper_zoo()
    c.nes = ml_collections.ConfigDict()
    c.nes.n_inputs = 50 if quick else 1000
    c.nes.eps = 8 / 255
    c.nes.step_size = 2 / 255
    c.nes.iterations_most_likely = 3
    c.nes.iterations_least_likely = 7
    c.nes.restarts = 5
    c.nes.norm = "linf"
    c.nes.confidence = 0.0
    c.nes.n_queries = 400
    c.nes.sigma = 1e-3
    c.nes.query_budget = 0  # 0: no budget beyond the iteration limit
    c.nes.batch_size = 10 if quick else 50
    return c
