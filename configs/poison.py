"""Label-flipping model poisoning: CAD against the poisoning fraction (§3.2, Figure 6).

  python launch/main.py --config=configs/poison.py            # quick: digits, darts + resnet
  python launch/main.py --config=configs/poison.py:paper      # all 17 models on CIFAR-10, 50 epochs

A fraction p in {0, 5, 10, 20, 40}% of the training labels is flipped to a uniformly random wrong class
(exactly round(p·N), seeded, shared by all models) and each model is trained from scratch with the recipe in
``train`` — 50 epochs in the paper preset (Table 5), not the victims' 600 — next to the same training on clean
data (p = 0). Output: a table, `task: "poison"` records (metrics.cad, accuracies) in {workdir}/results.jsonl
and {workdir}/figures/poison_cad.png. The quick preset trains 2 models × 4 fractions × 8 epochs on 32x32
digits: 18.9 min wall on 2 CPU cores (measured); CAD at p = 0.1 / 0.2 / 0.4: darts -0.3 / +1.7 / +5.8
points, resnet 0.0 / +1.4 / +6.4 (clean 98.3 and 99.2%) — growing with p, the NAS-manual gap within the
noise of one seed on 360 test digits.
Paper result (Fig 6): CAD grows with p for every model and is larger for NAS models (CIFAR-100, p = 20%:
4 points higher), the gap widening with p.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.poison import PoisonSettings


def get_config(preset: str = "quick"):
    c = base_config("poison", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "resnet") if quick else paper_zoo()
    # poisoning recipe: §d with E = 50 [paper]. quick: 8 epochs (at 4 the test accuracy is still
    # climbing 20 points per epoch and the CADs are noise: measured -13..+21 points, not monotone in p)
    c.train.epochs = 8 if quick else 50
    c.poison = PoisonSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/poison.py
    return c
