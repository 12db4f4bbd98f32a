"""The study report: every cell's records merged into ``{workdir}/report.md`` with error bars and verdicts.

  python -m nas_jax.report.study WORKDIR [--models darts,resnet]

Reads ``{workdir}/results.jsonl`` and every ``{workdir}/cells/**/results.jsonl`` (the grid of
``configs/study.py``; any number of shards). Per model and metric (:data:`METRICS`): the value of each
seed (the newest record wins), then mean ± 95% Student-t CI over seeds. Per metric: the NAS − manual gap
of family means with a hierarchical bootstrap CI and a permutation p-value, and the gap at matched clean
accuracy (:mod:`nas_jax.report.statistics`). Then the paper's Tables 1, 3 and 4 beside ours, one line per
paper remark (holds / does not hold / inconclusive at this scale, with the CI and n), the figures of the
a panel per metric (``{workdir}/figures/study_metrics.png``) and a forest plot of the gaps
(``{workdir}/figures/study_gaps.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nas_jax import files
from nas_jax.report.results import RESULTS_FILE, marked_records, newest, read_records
from nas_jax.report.statistics import Interval, accuracy_adjusted_gap, family_gap, mean_ci
from nas_jax.report.summary import PAPER_TABLE4, summarize
from nas_jax.report.tables import format_table

# Table 1 (CIFAR-10 column) of the paper.
PAPER_TABLE1 = {"bit": 0.966, "densenet": 0.967, "dla": 0.965, "resnet": 0.966, "resnext": 0.967, "vgg": 0.951,
                "wideresnet": 0.968, "amoebanet": 0.969, "darts": 0.970, "drnas": 0.969, "enas": 0.968,
                "nasnet": 0.970, "pc_darts": 0.969, "pdarts": 0.971, "sgas": 0.972, "snas": 0.969, "random": 0.967}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One per-model number of one seed's records; ``claim``: +1 the paper says NAS is higher, −1 lower, 0 none."""

    key: str
    label: str
    read: Callable[[list[dict], dict], float | None]  # (records of one model and seed, its summary row)
    claim: int
    remark: int
    fmt: str = ".3f"


def _newest(records: list[dict], task: str, **setting) -> dict | None:
    chosen = [r for r in records if r["task"] == task and all(r["setting"].get(k) == v for k, v in setting.items())]
    return chosen[-1]["metrics"] if chosen else None


def _get(task: str, key: str, transform=None, **setting):
    def read(records, _row):
        m = _newest(records, task, **setting)
        v = None if m is None else m.get(key)
        return None if v is None else (transform(v) if transform else float(v))

    return read


def _row(key: str):
    return lambda _records, row: row.get(key)


def _log10(v: float) -> float | None:
    return math.log10(v) if v and v > 0 else None


def _landscape(space: str):
    """The loss increase at the smallest radius measured in ``space`` (the paper's Figure 11 scale)."""
    def read(records, _row):
        own = [r for r in records if r["task"] == "landscape" and r.get("setting", {}).get("space") == space]
        if not own:
            return None
        radius = min(r["setting"]["radius"] for r in own)
        return float([r for r in own if r["setting"]["radius"] == radius][-1]["metrics"]["increase_at_radius"])

    return read


def _clean_accuracy(records, row):
    train = _newest(records, "train")
    return train["test_accuracy"] if train else row.get("clean_accuracy")


METRICS = [
    Metric("clean_accuracy", "clean accuracy (Table 1)", _clean_accuracy, 0, 0),
    Metric("pgd_m", "PGD ASR most likely (Fig. 2)", _row("pgd_m"), +1, 1),
    Metric("pgd_l", "PGD ASR least likely (Fig. 2)", _row("pgd_l"), +1, 1),
    Metric("nes_m", "NES ASR most likely (Fig. 5)", _get("nes", "asr_most_likely"), +1, 1),
    Metric("nes_l", "NES ASR least likely (Fig. 5)", _get("nes", "asr_least_likely"), +1, 1),
    Metric("poison_cad", "poisoning CAD, largest p (Fig. 6)", _row("poison_cad"), +1, 1),
    Metric("backdoor_asr", "TrojanNN ASR (Fig. 7)", _row("backdoor_asr"), +1, 1),
    Metric("ace", "Knockoff ACE, aware (Fig. 9)", _row("ace"), -1, 1),
    Metric("mi_auc", "membership AUC (Fig. 10)", _row("mi_auc"), +1, 1),
    Metric("autoattack_robust", "AutoAttack robust accuracy", _get("autoattack", "robust_accuracy"), -1, 1),
    Metric("grad_var_init", "log10 gradient variance at init (Fig. 12)",
           _get("grad_variance", "trace_cov", _log10, phase="init", bn="raw"), -1, 2, ".2f"),
    Metric("grad_var_trained", "log10 gradient variance trained (Fig. 12)",
           _get("grad_variance", "trace_cov", _log10, phase="trained", bn="raw"), -1, 2, ".2f"),
    Metric("landscape_input", "input-space loss increase (Fig. 11b)",
           _landscape("input"), -1, 2, ".4f"),
    Metric("landscape_param", "parameter-space loss increase (Fig. 11a)",
           _landscape("param"), -1, 2, ".4f"),
]
REMARKS = {1: "Remark 1: NAS-generated models are more vulnerable to various attacks",
           2: "Remark 2: NAS models have higher loss smoothness and lower gradient variance",
           4: "Remark 4: NAS cells are wide and shallow and overuse skip connects",
           5: "Remark 5: deeper cells / fewer skips only partially mitigate (DARTS-i/ii/iii)"}


def collect_records(workdir: str | Path) -> list[dict]:
    """The newest record of each identity (:func:`~nas_jax.report.results.newest`) among
    ``{workdir}/results.jsonl`` and the records of every finished cell below ``{workdir}/cells`` (those its
    marker lists; an unfinished or damaged cell contributes nothing until it is run again)."""
    workdir = Path(workdir)
    cells = sorted(p.parent for p in (workdir / "cells").glob(f"**/{RESULTS_FILE}"))
    records = read_records(workdir) if (workdir / RESULTS_FILE).exists() else []
    incomplete = []
    for d in cells:
        marked = marked_records(d)
        records += marked or []
        if marked is None:
            incomplete.append(str(d.relative_to(workdir / "cells")))
    if incomplete:
        warnings.warn(f"{len(incomplete)} study cell(s) without a complete result (unfinished, or their results "
                      f"damaged) are left out: {incomplete[:5]}{' ...' if len(incomplete) > 5 else ''}. Run the "
                      "study again to (re)compute them.", stacklevel=2)
    return newest(sorted(records, key=lambda r: str(r.get("end_time", ""))))


def per_seed_values(records: list[dict], models: list[str]) -> dict[str, dict[str, dict[int, float]]]:
    """{metric: {model: {seed: value}}} (cells records use dataset '-' and are handled by the cells table)."""
    out = {m.key: {} for m in METRICS}
    seeds = sorted({int(r.get("seed", 0)) for r in records})
    for seed in seeds:
        own = [r for r in records if int(r.get("seed", 0)) == seed]
        for row in summarize(own, models):
            mine = [r for r in own if r["model"] == row["model"]]
            for metric in METRICS:
                v = metric.read(mine, row)
                if v is not None and np.isfinite(v):
                    out[metric.key].setdefault(row["model"], {})[seed] = float(v)
    return out


def _is_zoo_model(name: str) -> bool:
    from nas_jax.models.registry import model_family

    try:
        model_family(name)
    except ValueError:
        return False
    return True


def families_of(records: list[dict]) -> dict[str, str]:
    from nas_jax.models.registry import model_family

    fams = {}
    for r in records:
        fam = r.get("setting", {}).get("family")
        if fam in ("nas", "manual"):
            fams.setdefault(r["model"], fam)
    for name in {r["model"] for r in records} - set(fams):
        try:
            fams[name] = model_family(name)
        except ValueError:
            pass
    return fams


def verdict(gap: Interval, claim: int) -> str:
    """'holds' when the whole CI lies on the paper's side of 0 (``claim`` +1: NAS higher, −1: lower), 'does not
    hold' when it lies wholly on the other side, else inconclusive."""
    if math.isnan(gap.low):
        return "inconclusive (no interval)"
    low, high = sorted((claim * gap.low, claim * gap.high))
    if low > 0:
        return "holds"
    if high < 0:
        return "does not hold"
    return "inconclusive (CI includes 0)"


def analyse(records: list[dict], models: list[str] | None = None) -> dict:
    """Per-model intervals, family gaps and verdicts of every metric with data."""
    fams = families_of(records)
    # default: every zoo model with a record (not the pseudo-models of cross-model records, e.g. 'nas_family')
    models = models or [m for m in dict.fromkeys(r["model"] for r in records if r.get("dataset") != "-")
                        if _is_zoo_model(m)]
    values = per_seed_values(records, models)
    accuracy = values["clean_accuracy"]
    out = {"models": models, "families": fams, "metrics": []}
    for metric in METRICS:
        per_model = values[metric.key]
        if not per_model:
            continue
        entry = {"metric": metric, "per_model": {m: mean_ci(list(v.values())) for m, v in per_model.items()}}
        fam_values = {m: list(v.values()) for m, v in per_model.items() if fams.get(m) in ("nas", "manual")}
        present = {fams[m] for m in fam_values}
        if present == {"nas", "manual"}:
            entry["gap"] = family_gap(fam_values, {m: fams[m] for m in fam_values})
            paired = {m: [accuracy.get(m, {}).get(s) for s in per_model[m]] for m in fam_values}
            if metric.key != "clean_accuracy" and all(None not in a for a in paired.values()):
                try:
                    entry["adjusted"] = accuracy_adjusted_gap(
                        {m: list(per_model[m].values()) for m in fam_values}, paired, {m: fams[m] for m in fam_values})
                except ValueError:
                    pass
            if metric.claim:
                entry["verdict"] = verdict(entry["gap"], metric.claim)
        out["metrics"].append(entry)
    return out


def _cells(records: list[dict]) -> tuple[str, str | None]:
    """Table 3 (our cells beside the paper's) and the Remark 4 line, from the ``cells`` task's records."""
    rows = [r for r in records if r["task"] == "cells" and r["model"] != "table3_mean"]
    if not rows:
        return "(cells task not run)", None
    latest = {r["model"]: r["metrics"] for r in rows}
    table = format_table([{"model": m, **v} for m, v in latest.items()], [
        ("model", "cell", None), ("depth", "depth", None), ("paper_depth", "paper", None),
        ("width_w3", "width (W3)", None), ("paper_width", "paper", None), ("skip_connects", "#skip", None),
        ("paper_skip", "paper", None)])
    mean = [r["metrics"] for r in records if r["task"] == "cells" and r["model"] == "table3_mean"]
    if not mean:
        return table, None
    m = mean[-1]
    holds = m["depth"] <= 3.0 and m["skip_connects"] >= 1.0
    return table, (f"- {REMARKS[4]}: **{'holds' if holds else 'does not hold'}** (criterion: mean depth ≤ 3 and mean "
                   f"#skip ≥ 1): mean depth {m['depth']:.2f} (paper {m['paper_depth_text']}), mean #skip "
                   f"{m['skip_connects']:.2f}, n = {m['n_models']} cells.")


def _remark5_line(pgd_l: dict[str, float]) -> str:
    variants = [v for v in ("darts_i", "darts_ii", "darts_iii") if v in pgd_l]
    if "darts" not in pgd_l or not variants:
        return f"- {REMARKS[5]}: not measured (put darts and darts_i/ii/iii in study.models)."
    lower = [v for v in variants if pgd_l[v] < pgd_l["darts"]]
    return (f"- {REMARKS[5]}: PGD ASR (L) darts {pgd_l['darts']:.3f} vs "
            + ", ".join(f"{v} {pgd_l[v]:.3f}" for v in variants)
            + f": {len(lower)} of {len(variants)} variants lower (paper Table 4: all lower).")


def _block(table: str) -> str:
    """A fixed-width table as a Markdown code block (it renders aligned)."""
    return f"```\n{table}\n```"


def render(analysis: dict, records: list[dict], figures: list[Path]) -> str:
    fams = analysis["families"]
    lines = ["# Study report", "", f"{len(records)} records; models: "
             + ", ".join(f"{m} ({fams.get(m, '?')})" for m in analysis["models"]), ""]
    lines += ["## Per model: mean [95% CI] over seeds (n seeds)", ""]
    for entry in analysis["metrics"]:
        metric, per_model = entry["metric"], entry["per_model"]
        rows = [{"model": m, "family": fams.get(m, "?"), "value": ci.format(metric.fmt),
                 **({"paper": f"{PAPER_TABLE1[m]:.3f}"} if metric.key == "clean_accuracy" and m in PAPER_TABLE1
                    else {})} for m, ci in per_model.items()]
        cols = [("model", "model", None), ("family", "family", None), ("value", metric.label, None)]
        if metric.key == "clean_accuracy":
            cols.append(("paper", "paper Table 1 (CIFAR-10)", None))
        lines += [_block(format_table(rows, cols)), ""]
    lines += ["## NAS − manual gaps", ""]
    gap_rows = [{"metric": e["metric"].label, "gap": e["gap"].format(e["metric"].fmt),
                 "p": f"{e['gap'].p_value:.3g}", "adjusted": e["adjusted"].format(e["metric"].fmt)
                 if "adjusted" in e else "-", "verdict": e.get("verdict", "-")}
                for e in analysis["metrics"] if "gap" in e]
    lines += [_block(format_table(gap_rows, [
        ("metric", "metric", None), ("gap", "gap [95% bootstrap CI] (n)", None), ("p", "permutation p", None),
        ("adjusted", "gap at matched accuracy", None), ("verdict", "paper's direction", None)]))
        if gap_rows else "(no metric has both families)", ""]
    lines += ["## Paper remarks at this scale", ""]
    for remark in (1, 2):
        entries = [e for e in analysis["metrics"] if e["metric"].remark == remark and "verdict" in e]
        for e in entries:
            lines.append(f"- {REMARKS[remark]} — {e['metric'].label}: **{e['verdict']}** "
                         f"(gap {e['gap'].format(e['metric'].fmt)}, p = {e['gap'].p_value:.3g})")
        if not entries:
            lines.append(f"- {REMARKS[remark]}: not measured (no metric with both families).")
    cells_table, remark4 = _cells(records)
    lines += [remark4] if remark4 else [f"- {REMARKS[4]}: not measured (add the cells task)."]
    pgd_l = next((e["per_model"] for e in analysis["metrics"] if e["metric"].key == "pgd_l"), {})
    lines += [_remark5_line({m: ci.value for m, ci in pgd_l.items()}), ""]
    lines += ["## Table 3: cells", "", _block(cells_table), "",
              "## Table 4 (paper, CIFAR-10): PGD ASR M/L, backdoor ASR/CAD, MI AUC", ""]
    lines += [f"- {m}: {a:.1%}/{b:.1%}, {c:.1%}/{d:.1%}, {e:.3f}" for m, (a, b, c, d, e) in PAPER_TABLE4.items()]
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p})" for p in figures]
    return "\n".join(lines) + "\n"


def gap_figure(analysis: dict, path: Path) -> Path | None:
    """Each metric's NAS − manual gap with its bootstrap CI on its own axis (the metrics have different units),
    sign flipped where the paper claims NAS lower, so right of 0 is always the paper's direction."""
    entries = [e for e in analysis["metrics"] if "gap" in e and e["metric"].claim]
    if not entries:
        return None
    from nas_jax.report.plots import plt, save_figure

    fig, axes = plt.subplots(len(entries), 1, figsize=(6.5, 0.75 * len(entries) + 1.0), squeeze=False)
    for ax, e in zip(axes[:, 0], entries, strict=True):
        s_, g = e["metric"].claim, e["gap"]
        lo, hi = sorted((s_ * g.low, s_ * g.high)) if not math.isnan(g.low) else (s_ * g.value, s_ * g.value)
        ax.plot([lo, hi], [0, 0], color="tab:gray", lw=2)
        ax.plot([s_ * g.value], [0], "o", color="tab:red" if e.get("verdict") == "holds" else "tab:blue")
        ax.axvline(0, color="k", lw=0.8)
        span = max(abs(lo), abs(hi), 1e-12) * 1.15
        ax.set_xlim(-span, span)
        ax.set_yticks([])
        ax.set_ylabel(e["metric"].label, rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("gap in the paper's direction (> 0: as the paper says; red: CI excludes 0)", fontsize=8)
    fig.suptitle("NAS − manual family gaps, 95% bootstrap CIs", fontsize=10)
    return save_figure(fig, path)


def metric_figure(analysis: dict, path: Path) -> Path | None:
    """One panel per metric: each model's mean over seeds with its 95% CI, coloured by family."""
    entries = analysis["metrics"]
    if not entries:
        return None
    from matplotlib.patches import Patch

    from nas_jax.report.plots import FAMILY_COLORS, legend_outside, plt, save_figure

    cols = min(4, len(entries))
    rows = math.ceil(len(entries) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    fams = analysis["families"]
    for ax, e in zip(axes.flat, entries, strict=False):
        names = list(e["per_model"])
        means = [e["per_model"][m].value for m in names]
        errs = [0.0 if math.isnan(e["per_model"][m].low) else e["per_model"][m].high - e["per_model"][m].value
                for m in names]
        ax.bar(range(len(names)), means, yerr=errs, capsize=3,
               color=[FAMILY_COLORS.get(fams.get(m), "tab:gray") for m in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(e["metric"].label, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(entries):]:
        ax.axis("off")
    legend_outside(axes[0][cols - 1], handles=[Patch(color=c, label=f) for f, c in FAMILY_COLORS.items()])
    fig.suptitle("Per-model metrics: mean and 95% CI over seeds", fontsize=10)
    return save_figure(fig, path)


def write_report(workdir: str | Path, models: tuple[str, ...] | None = None) -> Path:
    """Analyse every record under ``workdir`` and write ``report.md`` (and the gap figure) there."""
    workdir = Path(workdir)
    records = collect_records(workdir)
    analysis = analyse(records, list(models) if models else None)
    figures = [f for f in (metric_figure(analysis, workdir / "figures" / "study_metrics.png"),
                           gap_figure(analysis, workdir / "figures" / "study_gaps.png")) if f]
    cell_figures = len(list((workdir / "cells").glob("**/figures/**/*.png")))
    path = workdir / "report.md"
    files.write_text(path, render(analysis, records, [p.relative_to(workdir) for p in figures])
                     + f"\nEach cell's own figures ({cell_figures} files): `cells/<task>/<model>/seed<s>/figures/`.\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir")
    p.add_argument("--models", default="", help="comma-separated models (default: all with records)")
    a = p.parse_args(argv)
    if not collect_records(a.workdir):
        p.error(f"no records under {a.workdir} (results.jsonl or cells/**/results.jsonl); run the study first.")
    print(write_report(a.workdir, tuple(m for m in a.models.split(",") if m) or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
