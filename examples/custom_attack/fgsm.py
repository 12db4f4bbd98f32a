"""FGSM (Goodfellow et al., ICLR 2015) as a nas_jax task that lives outside the package.

One signed-gradient step of size ε on the cross-entropy, untargeted, against every victim of ``config.models``
on its first ``n_inputs`` correctly classified test inputs (the inputs every task draws from, in the same
order). Everything else (victims trained into the zoo where missing, records, the table, the figure, seeds,
the study grid and its report) comes from the task seam, :mod:`nas_jax.study.seam`; docs/extending.md.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from nas_jax.data import to_float
from nas_jax.report import plots
from nas_jax.report.study import Metric, reader
from nas_jax.study import victims
from nas_jax.study.seam import Measurement, Settings, VictimTask, run_only


@dataclasses.dataclass(frozen=True)
class FGSMSettings(Settings):
    """The attack's settings: defaults here, the quick preset's differences in PRESETS."""

    PRESETS: ClassVar[dict] = {"quick": {"n_inputs": 100}}
    n_inputs: int = run_only(1000)
    eps: float = 8 / 255
    batch_size: int = run_only(100)

    def __post_init__(self):
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps={self.eps} must be in (0, 1], in pixel units (e.g. 8/255).")


def fgsm_fooled(apply, variables, x: jax.Array, labels: jax.Array, eps: float) -> jax.Array:
    """Whether one FGSM step of size ``eps`` (L∞) changes each input's predicted class."""
    def loss(x):
        return optax.softmax_cross_entropy_with_integer_labels(apply(variables, x), labels).sum()

    x_adv = jnp.clip(x + eps * jnp.sign(jax.grad(loss)(x)), 0.0, 1.0)
    return apply(variables, x_adv).argmax(-1) != labels


def measure(ctx, entry):
    """Clean accuracy and FGSM's success rate on one victim (eval mode)."""
    s = ctx.settings
    correct = ctx.correct(entry)
    idx = ctx.inputs(correct, s.n_inputs)
    attack = jax.jit(lambda x, y, _key: fgsm_fooled(entry.model.apply, entry.variables, to_float(x), y, s.eps))
    fooled = victims.AttackBatches(s.batch_size).run(attack, ctx.dataset.x_test[idx], ctx.dataset.y_test[idx],
                                                     ctx.key)
    return Measurement({"clean_accuracy": float(correct.mean()), "asr": float(fooled.mean())}, len(idx))


def figure(rows, path, title):
    return plots.bar_panels(rows, [("asr", "FGSM, untargeted")], path, ylabel="ASR (%)", title=title)


TASK = VictimTask(
    name="fgsm", settings=FGSMSettings, measure=measure, figure=figure, cost_minutes=0.5, in_study=(),
    columns=(("clean_accuracy", "clean acc", ".3f"), ("asr", "FGSM ASR", ".3f")),
    title=lambda s, config: f"FGSM L∞ ε={s.eps * 255:.0f}/255 on {config.dataset}",
    describe=lambda m, n: f"FGSM ASR {m['asr']:.1%} on {n} inputs",
    metrics=(Metric("fgsm_asr", "FGSM ASR, untargeted (extension)", reader("fgsm", "asr"), +1, 1,
                    inputs_task="fgsm"),))
