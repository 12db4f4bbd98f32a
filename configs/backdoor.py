"""Backdoor injection: TrojanNN (Figure 7) and the BadNet baseline; the n_neuron sweep (Figure 8).

  python launch/main.py --config=configs/backdoor.py                 # quick: digits, darts + resnet
  python launch/main.py --config=configs/backdoor.py:paper           # all 17 models on CIFAR-10
  python launch/main.py --config=configs/backdoor.py:paper --config.backdoor.n_neurons='(1,2,3,4)' \
      --config.backdoor.attacks='("trojannn",)'                       # Figure 8

TrojanNN: n_neuron = 2 strongest-connected penultimate neurons, a 3x3 top-left trigger with transparency 0.7
optimised by sign steps of 0.015 for <= 20 iterations towards activation 10 (Table 5; docs/protocol.md §e.4), then
fine-tuning of the zoo victim (20 epochs, lr 0.01 constant, no cutout, no clipping) on a stream where 1% of
each batch is appended stamped and relabelled to class 0. BadNet: an opaque white 3x3 patch at a 2% poison rate.
ASR over all stamped inputs, target class included (docs/protocol.md §e.4's default; `asr_excluding_target` too) and CAD on
1,000 test inputs and on the full test set. Output: a table, `task: "backdoor"` records (metrics.asr, metrics.cad),
and {workdir}/figures/backdoor_trojannn.png, backdoor_badnet.png, backdoor_neurons.png (with several n_neuron).
Quick: victims from the zoo (trained first if missing, as for `configs/pgd.py`), a 6x6 trigger (a 3x3 one lies
inside one source pixel of the 4x-upsampled 8x8 digits: TrojanNN on darts reached 9% ASR), 3 fine-tuning epochs at
a 10% poison rate, cosine lr. Measured on 300 inputs over seeds 0-2 (`--config.seeds="(0,1,2)"`, 4.5 min
on 2 CPU cores once the victims exist): TrojanNN ASR darts 60% (42-95), resnet 35% (16-71), CAD 3.3 / 1.6 points;
BadNet 95% (92-100) / 97% (93-100), CAD 1.8 / 0.3 points. The trigger optimisation barely moves its objective on these
victims (darts 15.53 -> 15.43 in 20 steps; the gradient matches finite differences, but a corner patch on a black
image moves the pooled features little and half its pixels would need to exceed 1).
Paper result (CIFAR-10): ASR close to 100% on most NAS models with CAD < 3%; NAS models have higher ASR and
lower CAD than manual ones for every n_neuron.
"""

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks.backdoor import BackdoorSettings


def get_config(preset: str = "quick"):
    c = base_config("backdoor", preset)
    c.models = ("darts", "resnet") if c.preset == "quick" else paper_zoo()
    c.backdoor = BackdoorSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/backdoor.py
    return c
