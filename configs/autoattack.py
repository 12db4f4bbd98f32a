"""Robust accuracy under AutoAttack, NAS vs manual, and a gradient-masking check of the PGD results.

  python launch/main.py --config=configs/autoattack.py          # quick: digits; darts, snas, resnet, vgg
  python launch/main.py --config=configs/autoattack.py:paper    # all 17 models on CIFAR-10, 1,000 inputs

Trains missing victims into the zoo first, then runs AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square;
L∞ ε = 8/255) and untargeted PGD-7 (step 2/255, 5 restarts) on the same correctly classified test inputs.
Output: a table (robust accuracy, both success rates and their difference, per-attack success), `task:
"autoattack"` records in {workdir}/results.jsonl and {workdir}/figures/autoattack.png. A custom list:
`--config.autoattack.attacks="('apgd-ce','square')"`; L2: `--config.autoattack.norm=l2 --config.autoattack.eps=0.5
--config.autoattack.pgd_step_size=0.1`.

The quick preset keeps the standard sequence at a reduced budget so that it fits CPU minutes: 25 APGD/FAB
iterations (AutoAttack: 100), 3 target classes (9), 500 Square queries (5,000), on 50 inputs. A model robust under
it may still fall to the full budget (the `small`/`paper` presets use AutoAttack's settings).
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.autoattack import AutoAttackSettings


def get_config(preset: str = "quick"):
    c = base_config("autoattack", preset)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()
    c.autoattack = AutoAttackSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/autoattack.py
    return c
