"""Black-box NES evasion, most/least likely (§3.2, Figure 5).

  python launch/main.py --config=configs/nes.py [:paper]

400 queries per gradient estimate (200 antithetic pairs), sigma 1e-3, otherwise
the PGD setting of Figure 2. Paper result (CIFAR-10): NAS models are more
vulnerable, especially in the least-likely case.

Quick preset, reduced: 20 inputs (paper 1,000) and one run (paper 5 restarts), the query budget per estimate and
the iterations as in the paper. It checks the pipeline in about 5 minutes on 2 CPU cores once the victims exist
(with 50 inputs and 5 restarts it did not finish in 40 minutes); it does not show the paper's direction: with 400
queries in the 3,072 dimensions of the upsampled digits, 3 or 7 sign steps move too little. Measured (seed 0, the
quick victims; `python launch/main.py --config=configs/nes.py`, 5.0 min): most-likely ASR darts 10%, snas 5%,
resnet 5%, vgg 5%; least-likely 0% for all four (white-box PGD with the same budget: darts 63%, resnet 13%).
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.nes import NESSettings


def get_config(preset: str = "quick"):
    c = base_config("nes", preset)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()
    c.nes = NESSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/nes.py
    return c
