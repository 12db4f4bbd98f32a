"""PGD adversarial training (paper §5.2 "Post-NAS mitigation", Figure 14, Table 5; docs/protocol.md §e.7).

Madry et al.'s objective: each training step replaces its augmented batch by untargeted L∞ PGD examples against
the current model (ε = 8/255, α = 2/255, 7 iterations [paper]) and minimises the cross-entropy on them only (ratio
1.0 [artifact + library]). :func:`adversarial_transform` is a ``batch_transform`` for
:func:`nas_jax.train.trainer.make_train_step`, so crafting runs inside the compiled step, with
:func:`nas_jax.attacks.pgd.pgd_attack` in ``untargeted`` mode unchanged.

**Every example takes all K steps** (unlike evasion PGD, docs/protocol.md §e.1): the transform passes
``confidence = 2``, which no probability exceeds, so ``x_adv`` is the K-th iterate; ``early_stop = True`` keeps
the first misclassified iterate. **Start point**: the clean input (docs/protocol.md §e.7 [artifact],
``restarts = 0``); ``random_start = True`` draws U(−ε, ε) first [library: Madry / ART; ``restarts = 1``].

**BatchNorm while crafting** (``craft_mode``): ``'train'`` (default; the artifact crafts in ``model.train()``)
attacks the train-mode function the outer step trains: batch statistics, dropout on with one mask fixed over the
K iterations, and the crafting passes' running-statistics updates discarded [project]; early in training the
running averages lag the weights, so eval-mode examples would target a stale function. ``'eval'`` [library: ART]:
running statistics, dropout off (G2). The robustness metric after training is evasion PGD in eval mode
(Figure 14; the ``adv_train`` task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.attacks.pgd import pgd_attack

CRAFT_MODES = ("train", "eval")
NEVER_SUCCEEDS = 2.0  # a confidence above 1: no example counts as successful, so PGD runs all its iterations


@dataclasses.dataclass(frozen=True)
class TrainingPGDConfig:
    """The inner attack of adversarial training (Table 5; docs/protocol.md §e.7): L∞ budget, start point
    (``random_start``), per-example freezing (``early_stop``) and the BN mode while crafting (``craft_mode``, see
    the module docstring). :meth:`evasion_config` is the PGD budget it runs."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    iterations: int = 7
    random_start: bool = False
    early_stop: bool = False
    craft_mode: str = "train"

    def __post_init__(self):
        if self.eps < 0 or self.step_size < 0 or self.iterations < 0:
            raise ValueError(f"eps={self.eps}, step_size={self.step_size} and iterations={self.iterations} must "
                             f"be >= 0.")
        if self.craft_mode not in CRAFT_MODES:
            raise ValueError(f"unknown craft_mode {self.craft_mode!r}; valid: {CRAFT_MODES}.")

    def evasion_config(self) -> EvasionConfig:
        """The inner attack's budget as an :class:`EvasionConfig`: one run from x [artifact], or from a random
        start in the ε-ball with ``random_start = True`` [library]; every example takes all K steps unless
        ``early_stop``."""
        return EvasionConfig(eps=self.eps, step_size=self.step_size, iterations=self.iterations,
                             restarts=1 if self.random_start else 0, norm="linf",
                             confidence=0.0 if self.early_stop else NEVER_SUCCEEDS)


def training_pgd_config(eps: float = 8 / 255, step_size: float = 2 / 255, iterations: int = 7,
                        random_start: bool = False, early_stop: bool = False) -> EvasionConfig:
    """:meth:`TrainingPGDConfig.evasion_config` by keywords (tests and benchmarks that have no config section)."""
    return TrainingPGDConfig(eps, step_size, iterations, random_start, early_stop).evasion_config()


def crafting_apply(model: nn.Module, craft_mode: str, dropout_key: jax.Array) -> Callable:
    """``apply_fn(variables, images) -> logits`` in the chosen BN mode (see the module docstring)."""
    if craft_mode == "eval":
        return lambda variables, x: model.apply(variables, x, train=False)
    if craft_mode == "train":
        def apply_train(variables, x):
            logits, _ = model.apply(variables, x, train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
            return logits  # the running-statistics update is dropped

        return apply_train
    raise ValueError(f"unknown craft_mode {craft_mode!r}; valid: {CRAFT_MODES}.")


def adversarial_transform(model: nn.Module, cfg: EvasionConfig, craft_mode: str = "train"):
    """A ``batch_transform(key, variables, images, labels) -> (x_adv, labels)``: untargeted PGD examples of the
    augmented batch against the current model (Madry: the loss sees only the adversarial batch)."""
    if craft_mode not in CRAFT_MODES:
        raise ValueError(f"unknown craft_mode {craft_mode!r}; valid: {CRAFT_MODES}.")

    def transform(key, variables, images, labels):
        pgd_key, dropout_key = jax.random.split(key)
        apply_fn = crafting_apply(model, craft_mode, dropout_key)
        out = pgd_attack(apply_fn, variables, images, labels, pgd_key, cfg, mode="untargeted")
        return jax.lax.stop_gradient(out.x_adv), labels

    return transform
