"""Gradient variance of NAS and manual models before and after training (§4, Eqn 14, Figure 12;
docs/protocol.md §f.3).

  python launch/main.py --config=configs/grad_variance.py           # quick: digits, darts, snas, resnet, n=128
  python launch/main.py --config=configs/grad_variance.py:paper     # CIFAR-10, 16 models (no Random), n=512

Per model, phase (init, trained; trains missing victims into the zoo) and BN state (raw running
statistics; calibrated = re-estimated on `calibration_batches` training batches): per-example gradients
of all parameters with vmap(grad) in eval mode, `chunk` examples at a time, and both metrics:
trace_cov = E‖g − E g‖² (Eqn 14) and sum_std = Σ_j std_j with per-example clipping to norm 5 (the
artifact's). Output: a table, the manual/NAS ratio per setting, `task: "grad_variance"` records and
{workdir}/figures/grad_variance_{trace_cov,sum_std}.png. Quick preset: a few minutes on 2 CPU cores once
the victims are trained. Paper result: at initialisation NAS models' variance is > 2 orders of magnitude
below manual models'; it grows during training for NAS models (the artifact README: about 2.2 ± 0.5 lower in the
artifact's metric).
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.grad_variance import GradVarianceSettings


def get_config(preset: str = "quick"):
    c = base_config("grad_variance", preset)
    # The artifact's gradient-variance script leaves out Random (docs/protocol.md §0).
    c.models = ("darts", "snas", "resnet") if c.preset == "quick" else tuple(m for m in paper_zoo() if m != "random")
    c.grad_variance = GradVarianceSettings.section(c.preset)  # defaults: nas_jax/tasks/grad_variance.py
    return c
