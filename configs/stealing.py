"""Knockoff Nets functionality stealing (§3.2, Figure 9 and Table 2; docs/protocol.md §e.5).

  python launch/main.py --config=configs/stealing.py            # quick: digits, darts + resnet, 3 budgets + 2x2
  python launch/main.py --config=configs/stealing.py:paper      # 17 models x 5 budgets + the 4x4 matrix, CIFAR-10

Trains missing victims into the zoo first, then steals each victim through its probability outputs only.
Architecture-aware (Figure 9): replica = victim architecture, ACE against the query budget (1k..16k).
Architecture-agnostic (Table 2): victims x replicas of {ResNet, DenseNet, DARTS, ENAS} at 8k queries.
Defaults (paper / Table 5): adaptive sampling (gradient bandit, reward 'all'), soft labels with a true soft-label
cross entropy, thief trained 50 epochs with SGD lr 0.025 constant, momentum 0.9, wd 5e-4, batch 96, no clipping or
augmentation [artifact]; the pool is the victim's training set augmented once (crop/flip) and frozen [artifact].
Runtime: paper preset ~17 x 5 + 12 thief trainings of 50 epochs on up to 16k images (GPU hours); quick preset:
18.3 min wall on 2 CPU cores once the victims exist (measured; 8 adaptive-sampling thieves of 10 epochs). Quick
result: ACE at 250 / 500 / 1k queries darts 2.09 / 1.03 / 1.05 (floor 0.15), resnet 2.27 / 1.17 / 0.40 (floor
0.09); at 1k a DARTS replica (10 epochs on 1k images) fits either victim worse than a ResNet replica (ACE 1.05
vs 0.55 on darts, 0.47 vs 0.40 on resnet), so the quick matrix reflects the replica more than the victim.
Output: tables, ``task: "stealing"`` records (``metrics.ace``, ``victim_entropy`` = ACE's floor, ``kl``,
``replica_accuracy``, ``agreement``), {workdir}/figures/stealing_ace_budget.png and stealing_matrix.png.
Paper result: lower ACE with lower variance on NAS victims (Figure 9); Table 2 (CIFAR-10, 8k): with the replica
fixed, NAS victims give lower ACE, e.g. ResNet replica: ResNet 1.286, DenseNet 1.288, DARTS 1.272, ENAS 1.259.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.stealing import StealingSettings


def get_config(preset: str = "quick"):
    c = base_config("stealing", preset)
    c.models = ("darts", "resnet") if c.preset == "quick" else paper_zoo()
    c.stealing = StealingSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/stealing.py
    return c
