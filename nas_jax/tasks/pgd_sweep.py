"""Task ``pgd_sweep``: untargeted PGD ASR against ε, step ε/3 (§3.2, Figure 3).

One ``task: "pgd_sweep"`` record per (model, ε) on each model's first ``n_inputs`` correctly classified inputs
of the shared order; figure ``{workdir}/figures/pgd_eps_sweep.png`` with one curve per model, coloured by
family.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.report import plots
from nas_jax.study.evasion import PGDStudySettings, run_pgd
from nas_jax.study.seam import Measurement, VictimTask, run_only


@dataclasses.dataclass(frozen=True)
class SweepSettings(PGDStudySettings):
    """Figure 3's grid ε ∈ {1, …, 8}/255 [project] with step ε/3, PGD-7 and 5 restarts (docs/protocol.md §e.1).
    Each record carries its own ε, so the grid itself is not part of the records' setting."""

    PRESETS: ClassVar[dict] = {"quick": {"n_inputs": 200, "batch_size": 200}}
    eps_grid_255: tuple = run_only((1, 2, 3, 4, 5, 6, 7, 8), "in units of 1/255")
    iterations: int = 7

    def __post_init__(self):
        if not self.eps_grid_255:
            raise ValueError("eps_grid_255 is empty; give the radii in units of 1/255, e.g. (1, 2, 4, 8).")
        self.budget(self.eps_grid_255[0] / 255)

    def budget(self, eps: float) -> EvasionConfig:
        return self.pgd(eps, eps / 3, self.iterations)


def measure(ctx, entry) -> list[Measurement]:
    s = ctx.settings
    correct = ctx.correct(entry)
    idx = ctx.inputs(correct, s.n_inputs)
    out = []
    for j, eps_255 in enumerate(s.eps_grid_255):
        cfg = s.budget(eps_255 / 255)
        fooled = run_pgd(entry, ctx.dataset.x_test[idx], ctx.dataset.y_test[idx], cfg, "untargeted",
                         jax.random.fold_in(ctx.key, j), s.batch_size).success
        out.append(Measurement({"asr_untargeted": float(fooled.mean()), "clean_accuracy": float(correct.mean())},
                               len(idx), setting={"eps": cfg.eps, "step_size": cfg.step_size},
                               row={"eps_255": eps_255}))
    return out


def sweep_figure(rows: list[dict], path, title: str):
    """Figure 3: ASR against ε, one line per model coloured by family."""
    xs = sorted({r["eps_255"] for r in rows})
    curves = {m: (r0["family"], [next(r["asr_untargeted"] for r in rows if r["model"] == m and r["eps_255"] == x)
                                 for x in xs])
              for m, r0 in {r["model"]: r for r in rows}.items()}
    return plots.family_curves(xs, curves, path, xlabel="ε (×1/255)", ylabel="untargeted ASR (%)", title=title)


TASK = VictimTask(
    name="pgd_sweep", settings=SweepSettings, measure=measure, figure=sweep_figure, figure_file="pgd_eps_sweep.png",
    cost_minutes=1.5, columns=(("eps_255", "ε (/255)", "g"), ("asr_untargeted", "ASR", ".2f")),
    title=lambda s, config: f"untargeted PGD, step ε/3, {config.dataset}",
    describe=lambda m, n: f"ASR {m['asr_untargeted']:.2f} on {n} inputs")
