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

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("stealing", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "resnet") if quick else paper_zoo()
    s = c.stealing = ml_collections.ConfigDict()
    s.budgets = (250, 500, 1000) if quick else (1000, 2000, 4000, 8000, 16000)  # quick pool: 1,437 images
    s.matrix_models = ("darts", "resnet") if quick else ("resnet", "densenet", "darts", "enas")
    s.matrix_budget = 1000 if quick else 8000  # 0 disables the architecture-agnostic matrix
    s.sampling = "adaptive"  # 'adaptive' [paper] | 'random' (without replacement) [artifact]
    s.reward = "all"  # 'all' [paper, Table 5] | 'cert' | 'div' | 'loss'
    s.labels = "soft"  # 'soft' (victim probabilities) [paper] | 'hard' (argmax)
    s.pool_dataset = ""  # '' -> the victim's training images; or another dataset name of the same image shape
    s.pool_augment = True  # crop/flip the pool once, then freeze it [artifact]
    s.query_batch_size = 96  # victim queries per call (random sampling) [artifact]
    s.scan_chunk = 250  # adaptive rounds per compiled scan call
    s.thief_seed_offset = 1  # replica init seed = seed + offset (never the victim's own initialisation)
    t = s.thief = ml_collections.ConfigDict()  # the replica's train section (docs/protocol.md §d "Knockoff thief")
    t.epochs = 10 if quick else 50
    t.lr = 0.025
    t.lr_schedule = "constant"
    t.momentum = 0.9
    t.weight_decay = 5e-4
    t.grad_clip = 0.0
    t.batch_size = 96
    t.crop_padding = 0
    t.flip = False
    t.cutout = 0
    return c
