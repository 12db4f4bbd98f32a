"""PGD adversarial training: clean accuracy drop and untargeted PGD ASR after training (§5.2, Figure 14).

  python launch/main.py --config=configs/adv_train.py            # quick: digits, darts + resnet
  python launch/main.py --config=configs/adv_train.py:paper      # all 17 models on CIFAR-10

Madry adversarial training: each batch is replaced by untargeted L∞ PGD examples (eps 8/255, step 2/255,
7 iterations; Table 5) started from the clean input (docs/protocol.md §e.7 [artifact]; `adv_train.random_start=True` for a
U(-eps, eps) start) and crafted inside the train step against the current model, BatchNorm in
train mode while crafting (batch statistics; running statistics untouched; `craft_mode='eval'` for running
statistics). Paper preset: from scratch with the §d recipe for 100 epochs [project], compared with a standard
training of the same recipe. Quick preset: adversarial fine-tuning of the zoo victim (trained first if
missing) for 2 epochs, compared with that victim. Robustness: untargeted PGD (eps 8/255, step 2/255,
7 iterations, 5 restarts) on 1,000 correctly classified test inputs. Clean accuracy drop against the standard
model of the AT recipe (metrics.accuracy_drop) and against the Table 1 zoo victim (metrics.accuracy_drop_zoo; the
same in the quick preset, whose reference is the zoo victim). Output: a table, `task: "adv_train"` records
(metrics.accuracy_drop, accuracy_drop_zoo, asr, asr_standard) and {workdir}/figures/adv_train.png.
Quick, inner PGD from the clean input (measured once the victims exist, zoo victims with PyTorch BN statistics):
darts clean accuracy 98.6 -> 93.6%, untargeted PGD ASR 98.0 -> 23.0%; resnet 98.9 -> 98.3%, 25.5 -> 7.5% (200
inputs); 704 CPU s (29.9 min wall on 2 cores shared with other jobs, load ~12). With the earlier random-start
default: darts 98.3 -> 96.9%, 99.5 -> 22.5%; resnet 99.2 -> 96.7%, 25.5 -> 11.0% (12.4 min, 1,200 CPU s).
Paper result (CIFAR-10): some NAS models (e.g. DARTS) reach accuracy and robustness comparable with manual
models after AT; others (e.g. DrNAS) are worse on both.
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo


def get_config(preset: str = "quick"):
    c = base_config("adv_train", preset)
    quick = c.preset == "quick"
    c.models = ("darts", "resnet") if quick else paper_zoo()
    a = c.adv_train = ml_collections.ConfigDict()
    a.init = "finetune" if quick else "scratch"  # 'finetune': adversarial fine-tuning of the zoo victim
    a.epochs = 2 if quick else 100
    a.lr = 0.01 if quick else 0.0  # 0: config.train.lr
    a.eps = 8 / 255
    a.step_size = 2 / 255
    a.iterations = 7
    a.random_start = False  # start from x [artifact; docs/protocol.md §e.7]; True: U(-eps, eps) start [library: Madry/ART]
    a.early_stop = False  # True: freeze each example at its first misclassified iterate
    a.craft_mode = "train"  # BN batch statistics while crafting [artifact]; 'eval': running statistics
    a.eval_eps = 8 / 255
    a.eval_step_size = 2 / 255
    a.eval_iterations = 7
    a.eval_restarts = 5
    a.n_inputs = 200 if quick else 1000
    a.batch_size = 200 if quick else 250
    return c
