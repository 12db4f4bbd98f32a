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

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.adv_train import AdvTrainSettings


def get_config(preset: str = "quick"):
    c = base_config("adv_train", preset)
    c.models = ("darts", "resnet") if c.preset == "quick" else paper_zoo()
    c.adv_train = AdvTrainSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/adv_train.py
    return c
