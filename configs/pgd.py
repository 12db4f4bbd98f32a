"""Targeted PGD against NAS and manual victims (§3.2, Figure 2) — the main job.

  python launch/main.py --config=configs/pgd.py            # quick: digits; darts, snas, resnet, vgg
  python launch/main.py --config=configs/pgd.py:paper      # all 17 models on CIFAR-10, 1,000 inputs

Trains missing victims into the zoo first (progress bars), then runs most-likely
(3 iterations) and least-likely (7 iterations) L∞ PGD, eps 8/255, step 2/255,
5 restarts (Table 5). Output: a table, `task: "pgd"` records in
{workdir}/results.jsonl and {workdir}/figures/pgd_asr.png.
Paper result (CIFAR-10): ASR > 90% (most likely) and > 75% (least likely) for NAS
models, lower for manual ones.

The quick preset (two NAS and two manual victims: 8 epochs each, VGG 12 — see
``train_overrides`` in nas_jax/config.py; 100 inputs) fits about 15 minutes on 2 CPU cores
from a fresh install. Other victims: e.g. `--config.models="('darts','enas','resnet')"`.
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("pgd", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "snas", "resnet", "vgg") if quick else paper_zoo()
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
