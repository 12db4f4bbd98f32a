"""Task ``ntk``: condition number of the empirical NTK at initialisation, per model, and its correlation
with the PGD attack success rate (§5.3 "Other trainability metrics"; beyond the paper).

For every model, phase and BN state (:mod:`nas_jax.study.phases`): κ = λ_max/λ_min of the n × n empirical NTK on
``n`` common test images (``nas_jax.analysis.ntk``), one ``task: "ntk"`` record each and
``{workdir}/figures/ntk_condition.png``. With ``task: "pgd"`` records of the dataset in the workdir, also one
``task: "ntk_correlation"`` record per (phase, bn) (Pearson/Spearman of log10 κ with the most- and least-likely
ASR) and ``{workdir}/figures/ntk_vs_pgd.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from nas_jax.analysis.ntk import ASR_TASK, KERNELS, asr_correlation, condition_number, ntk_matrix
from nas_jax.data import load_dataset, to_float
from nas_jax.report import plots, results
from nas_jax.report.tables import format_table
from nas_jax.study.phases import BN_MODES, PHASES, check_choices, measure_variants, sample_indices
from nas_jax.study.seam import Settings, Task, run_only


@dataclasses.dataclass(frozen=True)
class NTKSettings(Settings):
    """The empirical NTK of ``n`` common test images (an n x n kernel; TE-NAS uses batch 64): ``logit_sum``
    (TE-NAS) or ``trace`` (summed over classes); per ``phases`` (add 'trained' for the trained zoo victims) and
    BN state; ``chunk`` per-example gradients per vmapped batch."""

    PRESETS: ClassVar[dict] = {"quick": {"n": 32, "chunk": 16}}
    n: int = 64
    kernel: str = "logit_sum"
    chunk: int = run_only(32)
    phases: tuple = ("init",)
    bn: tuple = ("raw", "calibrated")
    calibration_batches: int = 4

    def __post_init__(self):
        check_choices(self.phases, PHASES, "phases")
        check_choices(self.bn, BN_MODES, "bn")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; valid: {KERNELS}.")


def run(config, workdir: str | Path) -> list[dict]:
    nc = NTKSettings.read("ntk", config.ntk)
    dataset = load_dataset(config.dataset, config.data_dir or None)
    idx = sample_indices(len(dataset.y_test), nc.n, config.seed, 15)
    x = to_float(dataset.x_test[idx])

    def measure(model, v):
        metrics = condition_number(ntk_matrix(model.apply, v, x, num_classes=dataset.num_classes, kernel=nc.kernel,
                                              chunk=nc.chunk))
        return {**metrics, "log10_cond": float(np.log10(metrics["cond"])) if np.isfinite(metrics["cond"]) else None}

    records, rows = measure_variants(
        config, nc, dataset, workdir, "ntk", len(idx), measure, lambda bn: {"kernel": nc.kernel},
        lambda m: f"κ = {m['cond']:.4g} (λ_max {m['lambda_max']:.4g}, λ_min {m['lambda_min']:.4g})")
    for r in rows:
        r["log10_cond"] = np.nan if r["log10_cond"] is None else r["log10_cond"]
    if jax.process_index() != 0:
        return records
    print(format_table(rows, [("model", "model", None), ("family", "family", None), ("phase", "phase", None),
                              ("bn", "bn", None), ("cond", "κ", ".4g"), ("log10_cond", "log10 κ", ".2f"),
                              ("lambda_max", "λ_max", ".4g"), ("lambda_min", "λ_min", ".4g")]))
    fig_dir = Path(workdir) / "figures"
    fig = ntk_condition_figure(rows, fig_dir / "ntk_condition.png",
                                       f"NTK condition number on {config.dataset}, n = {nc.n} inputs, "
                                       f"seed {config.seed}")
    print(f"figure: {fig}")
    pgd = results.newest(results.read_records(workdir, task=ASR_TASK))
    if not pgd:
        print(f"no task {ASR_TASK!r} records in {workdir}: run configs/{ASR_TASK}.py with --workdir={workdir} for "
              "the ASR correlation.")
        return records
    asr = {r["model"]: r["metrics"] for r in pgd if r.get("dataset") == config.dataset}
    corr_rows = []
    start = results.now()
    for phase in nc.phases:
        for bn in nc.bn:
            conds = {r["model"]: r["cond"] for r in rows if (r["phase"], r["bn"]) == (phase, bn)}
            corr = asr_correlation(conds, pgd, config.dataset)
            records.append(results.store(workdir, config, task="ntk_correlation", model=",".join(corr["models"]),
                                         n=corr["n_models"], start_time=start,
                                         setting={"phase": phase, "bn": bn, "kernel": nc.kernel},
                                         metrics={k: v for k, v in corr.items() if k != "models"}))
            corr_rows.append({"phase": phase, "bn": bn, **corr})
    print("\ncorrelation of log10 κ with PGD ASR across models:")
    print(format_table(corr_rows, [("phase", "phase", None), ("bn", "bn", None), ("n_models", "models", None),
                                   ("pearson_most_likely", "Pearson (most)", ".3f"),
                                   ("spearman_most_likely", "Spearman (most)", ".3f"),
                                   ("pearson_least_likely", "Pearson (least)", ".3f"),
                                   ("spearman_least_likely", "Spearman (least)", ".3f")]))
    fig = ntk_correlation_figure(rows, asr, fig_dir / "ntk_vs_pgd.png",
                             f"NTK condition number vs PGD ASR, {config.dataset}, kernel over n = {nc.n} inputs, "
                             f"seed {config.seed}")
    print(f"figure: {fig}")
    return records


def ntk_condition_figure(rows: list[dict], path: Path, title: str) -> Path:
    """log10 κ per model (bars coloured by family), one panel per (phase, bn)."""
    groups = sorted({(r["phase"], r["bn"]) for r in rows})
    per_panel = max(len(rows) // max(len(groups), 1), 1)
    fig, axes = plots.plt.subplots(1, len(groups), figsize=(1.2 + 0.5 * per_panel * len(groups), 3.4), squeeze=False)
    for ax, (phase, bn) in zip(axes[0], groups):
        sel = plots.nas_first([r for r in rows if (r["phase"], r["bn"]) == (phase, bn)])
        plots.model_bars(ax, sel, [r["log10_cond"] for r in sel], "log10 κ(NTK)")
        ax.set_title(f"{phase}, BN {bn}", fontsize=9)
    fig.suptitle(title)
    return plots.save_figure(fig, path)


def ntk_correlation_figure(rows: list[dict], asr: dict[str, dict], path: Path, title: str) -> Path:
    """Scatter of log10 κ against the most-/least-likely PGD ASR, one row per (phase, bn)."""
    groups = sorted({(r["phase"], r["bn"]) for r in rows})
    modes = ("most_likely", "least_likely")
    fig, axes = plots.plt.subplots(len(groups), 2, figsize=(7.5, 3.0 * len(groups)), squeeze=False)
    for gi, (phase, bn) in enumerate(groups):
        sel = [r for r in rows if (r["phase"], r["bn"]) == (phase, bn) and r["model"] in asr
               and np.isfinite(r["log10_cond"])]
        for ax, mode in zip(axes[gi], modes):
            for r in sel:
                y = asr[r["model"]].get(f"asr_{mode}")
                if y is None:
                    continue
                ax.scatter(r["log10_cond"], 100 * y, color=plots.FAMILY_COLORS[r["family"]])
                ax.annotate(r["model"], (r["log10_cond"], 100 * y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            ax.set_xlabel("log10 κ(NTK)")
            ax.set_ylabel(f"PGD ASR {mode.replace('_', ' ')} (%)")
            ax.set_title(f"{phase}, BN {bn}", fontsize=9)
    fig.suptitle(title)
    return plots.save_figure(fig, path)


TASK = Task("ntk", run, settings=NTKSettings, cost_minutes=0.5)
