"""Targeted PGD against NAS and manual victims (§3.2, Figure 2) — the main job.

  python launch/main.py --config=configs/pgd.py            # quick: digits, darts, enas and resnet
  python launch/main.py --config=configs/pgd.py:paper      # all 17 models on CIFAR-10, 1,000 inputs

Trains missing victims into the zoo first (progress bars), then runs most-likely
(3 iterations) and least-likely (7 iterations) L∞ PGD, eps 8/255, step 2/255,
5 restarts (Table 5). Output: a table, `task: "pgd"` records in
{workdir}/results.jsonl and {workdir}/figures/pgd_asr.png.
Paper result (CIFAR-10): ASR > 90% (most likely) and > 75% (least likely) for NAS
models, lower for manual ones.

The quick preset (8 epochs per victim, 100 inputs) fits about 15 minutes on 2 CPU cores;
add manual victims with e.g. `--config.models="('darts','enas','resnet','vgg')"`. VGG needs
about 12 epochs on digits to leave its small-init classifier saddle (`--config.train.epochs=12`).
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("pgd", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "enas", "resnet") if quick else paper_zoo()
    c.pgd = ml_collections.ConfigDict()
    c.pgd.n_inputs = 100 if quick else 1000
    c.pgd.eps = 8 / 255
    c.pgd.step_size = 2 / 255
    c.pgd.iterations_most_likely = 3
    c.pgd.iterations_least_likely = 7
    c.pgd.restarts = 5
    c.pgd.norm = "linf"
    c.pgd.confidence = 0.0  # > 0: also require p_target > confidence (the artifact uses 0.99)
    c.pgd.batch_size = 100 if quick else 250
    return c
