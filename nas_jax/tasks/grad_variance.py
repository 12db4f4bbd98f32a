"""Task ``grad_variance``: per-example gradient variance before and after training (§4, Eqn 14,
Figure 12; docs/protocol.md §f.3).

For every model, phase and BN state (:mod:`nas_jax.study.phases`), the metrics of
``nas_jax.analysis.grad_variance`` on ``n`` common test images: one ``task: "grad_variance"`` record per
(model, phase, bn) with ``trace_cov`` (Eqn 14), ``sum_std`` (the artifact's, clipped at 5) and the other
readings; one ``task: "grad_variance_ratio"`` record per (phase, bn, metric), the manual/NAS ratio of geometric
means (the paper's "two orders of magnitude": log10 ratio ≥ 2); Figure 12-style bar charts
``{workdir}/figures/grad_variance_{trace_cov,sum_std}.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from matplotlib.patches import Patch

from nas_jax.analysis.grad_variance import gradient_variance
from nas_jax.data import load_dataset, to_float
from nas_jax.report import plots, results
from nas_jax.report.study import Metric, log10, reader
from nas_jax.report.tables import format_table
from nas_jax.study.phases import BN_MODES, PHASES, accuracy, check_choices, measure_variants, sample_indices
from nas_jax.study.seam import Settings, Task, run_only

METRICS = ("trace_cov", "sum_std")


@dataclasses.dataclass(frozen=True)
class GradVarianceSettings(Settings):
    """Eqn 14 on ``n`` common test images (artifact: 512), per phase and BN state (``calibrated`` on
    ``calibration_batches`` batches); ``clip_norm``: sum_std's per-example clipping (artifact: 5); ``chunk``:
    per-example gradients at once (0: 1 on CPU, 32 on GPU/TPU); ``input_grads``: also input gradients (``input_*``)."""

    PRESETS: ClassVar[dict] = {"quick": {"n": 128}}
    n: int = 512
    chunk: int = run_only(0)
    clip_norm: float = 5.0
    phases: tuple = ("init", "trained")
    bn: tuple = ("raw", "calibrated")
    calibration_batches: int = 4
    input_grads: bool = False

    def __post_init__(self):
        check_choices(self.phases, PHASES, "phases")
        check_choices(self.bn, BN_MODES, "bn")


def family_ratios(rows: list[dict]) -> list[dict]:
    """Per (phase, bn, metric): geometric mean over manual models / over NAS models, and its log10."""
    out = []
    for phase in PHASES:
        for bn in BN_MODES:
            for metric in METRICS:
                vals = {f: [r[metric] for r in rows if r["phase"] == phase and r["bn"] == bn and r["family"] == f
                            and r[metric] > 0] for f in ("nas", "manual")}
                if vals["nas"] and vals["manual"]:
                    log_ratio = float(np.mean(np.log10(vals["manual"])) - np.mean(np.log10(vals["nas"])))
                    out.append({"phase": phase, "bn": bn, "metric": metric, "log10_ratio": log_ratio,
                                "ratio": 10**log_ratio, "n_nas": len(vals["nas"]), "n_manual": len(vals["manual"])})
    return out


def run(config, workdir: str | Path) -> list[dict]:
    gc = GradVarianceSettings.read("grad_variance", config.grad_variance)
    dataset = load_dataset(config.dataset, config.data_dir or None)
    idx = sample_indices(len(dataset.y_test), gc.n, config.seed, 14)
    x, y = to_float(dataset.x_test[idx]), dataset.y_test[idx]

    def measure(model, v):
        metrics = gradient_variance(model.apply, v, x, y, chunk=gc.chunk, clip_norm=gc.clip_norm)
        if gc.input_grads:
            inp = gradient_variance(model.apply, v, x, y, wrt="input", chunk=gc.chunk, clip_norm=gc.clip_norm)
            metrics.update({f"input_{k}": val for k, val in inp.items()})
        return {**metrics, "accuracy": accuracy(model, v, x, y)}

    def setting(bn):
        return {"clip_norm": gc.clip_norm, "calibration_batches": gc.calibration_batches if bn == "calibrated" else 0}

    records, rows = measure_variants(
        config, gc, dataset, workdir, "grad_variance", len(idx), measure, setting,
        lambda m: f"trace_cov {m['trace_cov']:.4g}, sum_std {m['sum_std']:.4g}, accuracy {m['accuracy']:.3f}")
    ratios = family_ratios(rows)
    if jax.process_index() == 0:
        print(format_table(rows, [("model", "model", None), ("family", "family", None), ("phase", "phase", None),
                                  ("bn", "bn", None), ("trace_cov", "trace_cov", ".4g"),
                                  ("sum_std", "sum_std (clip 5)", ".4g"),
                                  ("trace_cov_per_param", "trace_cov/P", ".3g"),
                                  ("sum_std_per_param", "sum_std/P", ".3g"), ("accuracy", "acc", ".3f")]))
        if ratios:
            print("\nmanual / NAS (geometric means); 'two orders of magnitude' = log10 ratio >= 2:")
            print(format_table(ratios, [("phase", "phase", None), ("bn", "bn", None), ("metric", "metric", None),
                                        ("ratio", "ratio", ".3g"), ("log10_ratio", "log10", ".2f")]))
        start = results.now()
        for r in ratios:
            results.store(workdir, config, task="grad_variance_ratio", model="manual/nas",
                          n=r["n_nas"] + r["n_manual"], start_time=start,
                          metrics={"ratio": r["ratio"], "log10_ratio": r["log10_ratio"]},
                          setting={"phase": r["phase"], "bn": r["bn"], "metric": r["metric"]})
        for metric in METRICS:
            fig = grad_variance_figure(rows, metric, Path(workdir) / "figures" / f"grad_variance_{metric}.png",
                                               f"gradient variance ({metric}) on {config.dataset}, n = {len(idx)} "
                                               f"inputs, seed {config.seed}",
                                               bn_modes=BN_MODES, phases=PHASES)
            print(f"figure: {fig}")
    return records


def grad_variance_figure(rows: list[dict], metric: str, path: Path, title: str, bn_modes: tuple[str, ...],
                         phases: tuple[str, ...]) -> Path:
    """Figure 12: one log-scale panel per BN state (in ``bn_modes`` order); per model a bar per phase (the
    first, init, light)."""
    bns = [b for b in bn_modes if any(r["bn"] == b for r in rows)]
    models = sorted({(r["family"] != "nas", r["model"]) for r in rows})
    fig, axes = plots.plt.subplots(1, len(bns), figsize=(2.2 + 0.6 * len(models) * len(bns), 3.6), squeeze=False)
    for ax, bn in zip(axes[0], bns):
        for i, (_, model) in enumerate(models):
            for j, phase in enumerate(phases):
                hit = [r for r in rows if r["model"] == model and r["bn"] == bn and r["phase"] == phase]
                if hit:
                    ax.bar(i + (j - 0.5) * 0.4, hit[0][metric], width=0.4, color=plots.FAMILY_COLORS[hit[0]["family"]],
                           alpha=0.45 if phase == "init" else 1.0, edgecolor="k", lw=0.4)
        ax.set_yscale("log")
        ax.set_xticks(range(len(models)), [m for _, m in models], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"BN {bn}")
        ax.set_ylabel(metric)
    handles = plots.family_patches() + [Patch(facecolor="0.5", alpha=0.45, label="init"), Patch(facecolor="0.5", label="trained")]
    plots.legend_outside(axes[0][-1], handles=handles, fontsize=7)
    fig.suptitle(title)
    return plots.save_figure(fig, path)


TASK = Task("grad_variance", run, settings=GradVarianceSettings, cost_minutes=1.0, in_study=("quick", "paper"),
            study_overrides={"quick": ("grad_variance.bn=('raw',)",)},  # the report reads the raw BN statistics
            metrics=(
    Metric("grad_var_init", "log10 gradient variance at init (Fig. 12)",
           reader("grad_variance", "trace_cov", log10, phase="init", bn="raw"), -1, 2, ".2f", None),
    Metric("grad_var_trained", "log10 gradient variance trained (Fig. 12)",
           reader("grad_variance", "trace_cov", log10, phase="trained", bn="raw"), -1, 2, ".2f", None)))
