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

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.pgd import PGDSettings


def get_config(preset: str = "quick"):
    c = base_config("pgd", preset)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()
    c.pgd = PGDSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/pgd.py
    return c
