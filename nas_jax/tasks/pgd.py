"""Task ``pgd``: targeted white-box PGD against NAS and manual victims (§3.2, Figure 2).

For every victim: clean accuracy, then most-likely (3 iterations) and least-likely (7 iterations) L∞ PGD with
ε 8/255, step 2/255 and 5 random restarts (Table 5) on ``n_inputs`` correctly classified test inputs. A table,
one ``task: "pgd"`` record per model and a Figure 2-style bar chart ``{workdir}/figures/pgd_asr.png``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from nas_jax.report.study import Metric, reader
from nas_jax.report.summary import Summary, newest_cells
from nas_jax.study.evasion import (
    TARGETED_COLUMNS,
    TargetedSettings,
    describe_targeted,
    run_pgd,
    targeted_figure,
    targeted_metrics,
)
from nas_jax.study.seam import VictimTask


@dataclasses.dataclass(frozen=True)
class PGDSettings(TargetedSettings):
    """Table 5's PGD budget; quick: 100 inputs."""

    PRESETS: ClassVar[dict] = {"quick": {"n_inputs": 100, "batch_size": 100}}


def measure(ctx, entry):
    s = ctx.settings

    def attack(x, y, mode, iterations, key):
        return run_pgd(entry, x, y, s.budget(iterations), mode, key, s.batch_size)

    def mean_iterations(out, mode):
        return {f"mean_iterations_{mode}": float(out.iterations[out.success].mean()) if out.success.any() else None}

    return targeted_metrics(ctx, entry, s.n_inputs, s.iterations(), attack, mean_iterations)


TABLE4 = Summary((("clean_accuracy", "clean acc", ".1%"), ("pgd_m", "PGD ASR (M)", ".1%"),
                  ("pgd_l", "PGD ASR (L)", ".1%")), newest_cells("pgd", {
                      "clean_accuracy": "clean_accuracy", "pgd_m": "asr_most_likely", "pgd_l": "asr_least_likely"}),
                 place=1)


TASK = VictimTask(
    name="pgd", settings=PGDSettings, measure=measure, columns=TARGETED_COLUMNS, figure=targeted_figure,
    in_study=("quick", "paper"), figure_file="pgd_asr.png", describe=describe_targeted, cost_minutes=1.0,
    title=lambda s, config: f"PGD {'L∞' if s.norm == 'linf' else 'L2'} ε={s.eps * 255:.0f}/255 on {config.dataset}",
    metrics=(Metric("pgd_m", "PGD ASR most likely (Fig. 2)", reader("pgd", "asr_most_likely"), +1, 1,
                    paper_gap=0.10, inputs_task="pgd", summary=TABLE4),
             Metric("pgd_l", "PGD ASR least likely (Fig. 2)", reader("pgd", "asr_least_likely"), +1, 1,
                    paper_gap=0.10, inputs_task="pgd", summary=TABLE4)))
