"""Condition number of the empirical NTK at initialisation, and its correlation with PGD ASR (§5.3
"Other trainability metrics" — beyond the paper).

  python launch/main.py --config=configs/pgd.py --workdir=workdir/why      # first, for the correlation
  python launch/main.py --config=configs/ntk.py --workdir=workdir/why      # quick: the pgd quick victims
  python launch/main.py --config=configs/ntk.py:paper --workdir=workdir/why_paper

κ = λ_max/λ_min of the n × n empirical NTK (TE-NAS's `logit_sum` kernel by default; `trace` for the
class-traced one) on n common test images, per model, at initialisation (the zoo's init key; no training
needed), with BN raw (initial running statistics) and calibrated. With `task: "pgd"` records in the same
workdir, prints and records the Pearson/Spearman correlation of log10 κ with the most-/least-likely ASR.
Output: a table, `task: "ntk"` (and `"ntk_correlation"`) records, {workdir}/figures/ntk_condition.png and
ntk_vs_pgd.png. Quick preset: about a minute on 2 CPU cores. Expectation (TE-NAS): lower κ = more
trainable; the paper suggests trainability relates to vulnerability, so NAS models should show lower κ.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.ntk import NTKSettings


def get_config(preset: str = "quick"):
    c = base_config("ntk", preset)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()  # the pgd config's victims
    c.ntk = NTKSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/ntk.py
    return c
