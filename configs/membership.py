"""Label-only membership inference by HopSkipJump boundary distance (§3.2, Figure 10; Table 4's MI column).

  python launch/main.py --config=configs/membership.py            # quick: digits, darts, snas and resnet
  python launch/main.py --config=configs/membership.py:paper      # all 17 models on CIFAR-10, 1,000 + 1,000 inputs

Trains missing victims into the zoo first, then attacks each correctly classified input with untargeted L2
HopSkipJump through the top-1 label only; the membership score is the distance to the boundary found (0 for
misclassified inputs). Paper preset: Table 5's budget (50 iterations, 2,500 evaluations max, 100 initial
evaluations, 100 initial draws) on 1,000 members + 1,000 non-members, about 24k label queries per input — a GPU
job (hours for 17 models). Quick preset: the artifact's budget (10 iterations, 100 / 25 evaluations, 50 draws) on
100 + 100 inputs, a few minutes per model on 2 CPU cores.
Output: a table, ``task: "membership"`` records (``metrics.auc``, members positive and larger distance = member,
raw; ``auc_max`` = max(AUC, 1 − AUC) as the artifact reports; ``baseline_auc``: correct-vs-incorrect), per-input
distances in {workdir}/membership/ and {workdir}/figures/membership_roc.png.
Paper result: higher AUC on NAS models; on CIFAR-100 the NAS and manual means differ by > 0.05 with manual models
near 0.5; Table 4: DARTS 0.562 on CIFAR-10.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.membership import MembershipSettings


def get_config(preset: str = "quick"):
    c = base_config("membership", preset)
    c.models = ("darts", "snas", "resnet") if c.preset == "quick" else paper_zoo()
    c.membership = MembershipSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/membership.py
    return c
