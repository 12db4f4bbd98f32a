"""The study report: every finished cell's records merged into ``{workdir}/report.md`` and ``report.json``.

  python -m nas_jax.tasks.study WORKDIR [--models darts,resnet]    # the report again

Reads the newest record of each identity in ``{workdir}/results.jsonl`` and in the finished cells under
``{workdir}/cells`` (the grid of ``configs/study.py``). Per model and metric (the tasks' :class:`Metric` lists):
each seed's value and the mean with a 95% interval. Per metric: the NAS − manual gap with Welch's interval, the
permutation, Holm and smallest achievable p, the gap at matched accuracy and a verdict (docs/statistics.md,
:mod:`nas_jax.report.statistics`). Then the paper's Tables 1, 3 and 4, the remarks, and the figures
``{workdir}/figures/study_metrics.png`` and ``{workdir}/figures/study_gaps.png``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nas_jax import files
from nas_jax.report.results import RESULTS_FILE, marked_records, newest, now, read_records
from nas_jax.report.statistics import (
    ALPHA,
    FAMILIES,
    accuracy_adjusted_gap,
    architectures_needed,
    family_gap,
    gap_bounds,
    holm,
    mean_ci,
    min_achievable_p,
    proportion_difference,
    variance_components,
    verdict,
)
from nas_jax.report.summary import PAPER_TABLE4, Summary, newest_of, summaries, summarize
from nas_jax.report.tables import format_table

# Table 1 (CIFAR-10 column) of the paper.
PAPER_TABLE1 = {"bit": 0.966, "densenet": 0.967, "dla": 0.965, "resnet": 0.966, "resnext": 0.967, "vgg": 0.951,
                "wideresnet": 0.968, "amoebanet": 0.969, "darts": 0.970, "drnas": 0.969, "enas": 0.968,
                "nasnet": 0.970, "pc_darts": 0.969, "pdarts": 0.971, "sgas": 0.972, "snas": 0.969, "random": 0.967}


PROPORTION = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)  # a difference of two proportions (CAD)
POSITIVE = (0.0, None)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One per-model number of one seed's records; ``claim``: +1 the paper says NAS is higher, −1 lower, 0 none;
    ``bounds``: the metric's range (None: unbounded, e.g. a log10 value); ``paper_gap``: the size of the family
    gap the authors' artifact reports (its README, CIFAR-10), in the paper's direction, where it gives one."""

    key: str
    label: str
    read: Callable[[list[dict], dict], float | None]  # (records of one model and seed, its summary row)
    claim: int
    remark: int
    fmt: str = ".3f"
    bounds: tuple[float, float | None] | None = PROPORTION
    paper_gap: float | None = None
    inputs_task: str | None = None  # a proportion over inputs: the task whose records' ``n`` counts them
    summary: Summary | None = None  # the task's Table 4 cells, in the row ``read`` is given (row_reader)


@dataclasses.dataclass(frozen=True)
class Section:
    """A task's own part of the study report: ``remarks(records)``, lines under "Paper remarks at this scale"
    (the task's remark or "not measured"); ``body(records)``, a fixed-width table under ``title``."""

    title: str
    body: Callable[[list[dict]], str]
    remarks: Callable[[list[dict]], list[str]] = lambda records: []


def reader(task: str, key: str, transform=None, **setting):
    """A :attr:`Metric.read` that takes ``metrics[key]`` of the newest ``task`` record (of one model and seed)
    whose setting has the given values, through ``transform`` if given."""
    def read(records, _row):
        chosen = newest_of(records, lambda r: r["task"] == task
                           and all(r["setting"].get(k) == v for k, v in setting.items()))
        v = None if chosen is None else chosen["metrics"].get(key)
        return None if v is None else (transform(v) if transform else float(v))

    return read


def row_reader(key: str):
    """A :attr:`Metric.read` that takes column ``key`` of the model's Table 4 row (the metrics' summaries,
    :mod:`nas_jax.report.summary`)."""
    return lambda _records, row: row.get(key)


def log10(v: float) -> float | None:
    return math.log10(v) if v and v > 0 else None


REMARKS = {1: "Remark 1: NAS-generated models are more vulnerable to various attacks",
           2: "Remark 2: NAS models have higher loss smoothness and lower gradient variance",
           5: "Remark 5: deeper cells / fewer skips only partially mitigate (DARTS-i/ii/iii)"}


def collect_records(workdir: str | Path) -> list[dict]:
    """The newest record of each identity (:func:`~nas_jax.report.results.newest`) among
    ``{workdir}/results.jsonl`` and the records of every finished cell below ``{workdir}/cells`` (those its
    marker lists; an unfinished or damaged cell contributes nothing until it is run again)."""
    workdir = Path(workdir)
    cells = {d: marked_records(d) for d in sorted(p.parent for p in (workdir / "cells").glob(f"**/{RESULTS_FILE}"))}
    records = read_records(workdir) + [r for marked in cells.values() for r in marked or []]
    incomplete = [str(d.relative_to(workdir / "cells")) for d, marked in cells.items() if marked is None]
    if incomplete:
        warnings.warn(f"{len(incomplete)} study cell(s) without a complete result (unfinished, or their results "
                      f"damaged) are left out: {incomplete[:5]}{' ...' if len(incomplete) > 5 else ''}. Run the "
                      "study again to (re)compute them.", stacklevel=2)
    return newest(sorted(records, key=lambda r: str(r.get("end_time", ""))))


def per_seed_values(records: list[dict], models: list[str],
                    metrics: list[Metric]) -> dict[str, dict[str, dict[int, float]]]:
    """{metric: {model: {seed: value}}} (records of no dataset, '-', are tables of cells or shapes, read by no
    metric)."""
    out = {m.key: {} for m in metrics}
    for seed in sorted({int(r.get("seed", 0)) for r in records}):
        own = [r for r in records if int(r.get("seed", 0)) == seed]
        for row in summarize(own, summaries(metrics), models):
            mine = [r for r in own if r["model"] == row["model"]]
            for metric in metrics:
                v = metric.read(mine, row)
                if v is not None and np.isfinite(v):
                    out[metric.key].setdefault(row["model"], {})[seed] = float(v)
    return out


def per_seed_inputs(records: list[dict], metrics: list[Metric]) -> dict[str, dict[str, dict[int, int]]]:
    """{metric: {model: {seed: inputs}}} for the metrics measured over inputs (``Metric.inputs_task``)."""
    out = {}
    for metric in (m for m in metrics if m.inputs_task):
        for r in records:  # newest last: a later record of the same model and seed wins
            if r["task"] == metric.inputs_task and isinstance(r.get("n"), int):
                out.setdefault(metric.key, {}).setdefault(r["model"], {})[int(r.get("seed", 0))] = r["n"]
    return out


def model_pairs(values: dict, inputs: dict, families: dict, metrics: list[Metric], alpha: float = ALPHA) -> list[dict]:
    """Each NAS model against each manual model over inputs, for every metric measured over inputs, at the
    first seed both have (docs/statistics.md): the difference of the two proportions with Newcombe's interval
    and Fisher's p (:func:`~nas_jax.report.statistics.proportion_difference`). One seed of two trained networks
    supports a statement about those two networks only, never about their families."""
    rows = []
    for metric in (m for m in metrics if m.inputs_task and m.key in inputs):
        per_model, n_of = values.get(metric.key, {}), inputs[metric.key]
        nas, manual = ([m for m in per_model if families.get(m) == f] for f in FAMILIES)
        for a in nas:
            for b in manual:
                common = sorted(set(per_model[a]) & set(per_model[b]) & set(n_of.get(a, {})) & set(n_of.get(b, {})))
                if not common:
                    continue
                s = common[0]
                na, nb = n_of[a][s], n_of[b][s]
                diff = proportion_difference(round(per_model[a][s] * na), na, round(per_model[b][s] * nb), nb)
                side, other = (diff.low > 0, diff.high < 0) if metric.claim > 0 else (diff.high < 0, diff.low > 0)
                rows.append({"metric": metric, "nas": a, "manual": b, "seed": s, "n_inputs": {"nas": na, "manual": nb},
                             "diff": diff, "finding": ("in the paper's direction" if side and diff.p_value < alpha
                                                       else "against the paper's direction" if other and
                                                       diff.p_value < alpha else "no difference shown")})
    return rows


def _zoo_family(name: str) -> str | None:
    """The registry's family of a zoo model; None for any other name (e.g. the pseudo-model 'nas_family')."""
    from nas_jax.models.registry import model_family

    try:
        return model_family(name)
    except ValueError:
        return None


def families_of(records: list[dict]) -> dict[str, str]:
    """Each model's family: its records' ``setting.family``, else the registry's (none for other names)."""
    fams = {}
    for r in records:
        if r.get("setting", {}).get("family") in FAMILIES:
            fams.setdefault(r["model"], r["setting"]["family"])
    zoo = {name: _zoo_family(name) for name in {r["model"] for r in records} - set(fams)}
    return fams | {name: fam for name, fam in zoo.items() if fam}


def analyse(records: list[dict], metrics: list[Metric], models: list[str] | None = None, alpha: float = ALPHA) -> dict:
    """Per-model intervals, family gaps and verdicts of every metric with data (docs/statistics.md): the
    per-model interval over seeds inside the metric's range; the family gap over architecture means with its
    Welch interval and permutation p; Holm's adjustment over the metrics with a claim whose test can reach
    ``alpha``; a verdict per metric and per remark."""
    fams = families_of(records)
    # default: every zoo model with a record (not the pseudo-models of cross-model records, e.g. 'nas_family')
    models = models or [m for m in dict.fromkeys(r["model"] for r in records if r.get("dataset") != "-")
                        if _zoo_family(m)]
    values = per_seed_values(records, models, metrics)
    inputs = per_seed_inputs(records, metrics)
    accuracy = values["clean_accuracy"]
    out = {"models": models, "families": fams, "metrics": [], "alpha": alpha,
           "pairs": model_pairs(values, inputs, fams, metrics, alpha)}
    for metric in metrics:
        per_model = values[metric.key]
        if not per_model:
            continue
        n_in = inputs.get(metric.key, {})  # one seed of a proportion: the Wilson interval over its inputs
        fam_values = {m: list(v.values()) for m, v in per_model.items() if fams.get(m) in FAMILIES}
        fam_of = {m: fams[m] for m in fam_values}
        counts = {f: sum(fam == f for fam in fam_of.values()) for f in FAMILIES}
        entry = {"metric": metric, "per_model": {m: mean_ci(list(v.values()), bounds=metric.bounds,
                                                            n_inputs=n_in.get(m, {}).get(next(iter(v)))
                                                            if len(v) == 1 else None)
                                                 for m, v in per_model.items()},
                 "n_seeds": max(len(v) for v in per_model.values()), "n_models": counts,
                 "min_achievable_p": min_achievable_p(counts["nas"], counts["manual"])}
        if all(counts.values()):
            entry["gap"] = family_gap(fam_values, fam_of, bounds=metric.bounds)
            if metric.claim:
                entry["power"] = power_plan(metric, entry["gap"], fam_values, fam_of)
            paired = {m: [accuracy.get(m, {}).get(s) for s in per_model[m]] for m in fam_values}
            if metric.key != "clean_accuracy" and all(None not in a for a in paired.values()):
                try:
                    entry["adjusted"] = accuracy_adjusted_gap(fam_values, paired, fam_of, bounds=metric.bounds)
                except ValueError:  # too few architectures, or accuracy collinear with the family
                    pass
        out["metrics"].append(entry)
    adjusted = holm({e["metric"].key: e["gap"].p_value for e in out["metrics"]  # the tests that can reach alpha
                     if e["metric"].claim and "gap" in e and e["min_achievable_p"] < alpha})
    for e in out["metrics"]:
        if e["metric"].claim and "gap" in e:
            e["p_adjusted"] = adjusted.get(e["metric"].key, math.nan)
            e["verdict"] = verdict(e["gap"], e["metric"].claim, n_nas=e["n_models"]["nas"],
                                   n_manual=e["n_models"]["manual"], p_adjusted=e["p_adjusted"], alpha=alpha,
                                   paper_gap=e["metric"].paper_gap)
    out["remarks"] = {r: remark_verdict([e for e in out["metrics"] if e["metric"].remark == r and "verdict" in e])
                      for r in (1, 2)}
    return out


POWER_SEEDS = (1, 3, 5)  # the seed counts the power table plans for


def power_plan(metric: Metric, gap, values: dict, families: dict, power: float = 0.8) -> dict:
    """How many architectures per family a gap of the paper's size (the artifact's, else the observed one)
    needs for ``power`` at α, with the variance observed, at :data:`POWER_SEEDS` seeds each."""
    between, seed_sd = variance_components(values, families)
    size, source = (metric.paper_gap, "artifact") if metric.paper_gap else (abs(gap.value), "observed")
    return {"gap": size, "gap_source": source, "between_sd": between, "seed_sd": seed_sd, "power": power,
            "architectures_per_family": {s: architectures_needed(size, between, seed_sd, s, power=power)
                                         for s in POWER_SEEDS}}


def remark_verdict(entries: list[dict]) -> str:
    """A remark's verdict from its metrics': 'holds' only when every metric tested holds, 'does not hold' when
    none holds and at least one does not, else the counts."""
    if not entries:
        return "not measured (no metric with both families)"
    verdicts = [e["verdict"] for e in entries]
    if all(v == "holds" for v in verdicts):
        return "holds"
    if all(v.startswith("insufficient") for v in verdicts):
        return verdicts[0]
    counts = {"hold": sum(v == "holds" for v in verdicts),
              "go against it": sum(v.startswith("does not hold (") for v in verdicts),
              "are smaller than the paper's gap": sum(v.startswith("does not hold at") for v in verdicts)}
    if counts["go against it"] == len(verdicts):
        return "does not hold (every metric goes against it)"
    if not any(counts.values()):
        return f"inconclusive (none of its {len(verdicts)} metrics is conclusive at this scale)"
    counts["are inconclusive or insufficient"] = len(verdicts) - sum(counts.values())
    return "mixed: of " + f"{len(verdicts)} metrics, " + ", ".join(f"{n} {what}" for what, n in counts.items() if n)


def _remark5_line(pgd_l: dict[str, float]) -> str:
    variants = [v for v in ("darts_i", "darts_ii", "darts_iii") if v in pgd_l]
    if "darts" not in pgd_l or not variants:
        return f"- {REMARKS[5]}: not measured (put darts and darts_i/ii/iii in study.models)."
    lower = [v for v in variants if pgd_l[v] < pgd_l["darts"]]
    return (f"- {REMARKS[5]}: PGD ASR (L) darts {pgd_l['darts']:.3f} vs "
            + ", ".join(f"{v} {pgd_l[v]:.3f}" for v in variants)
            + f": {len(lower)} of {len(variants)} variants lower (paper Table 4: all lower; one comparison of "
            "architectures, not a family test).")


def _block(table: str) -> str:
    """A fixed-width table as a Markdown code block (it renders aligned)."""
    return f"```\n{table}\n```"


def _table(rows: list[dict]) -> str:
    """``rows`` ({column header: cell}, every row with the first row's columns) as a :func:`_block`."""
    return _block(format_table(rows, [(header, header, None) for header in rows[0]]))


def _p(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3g}"


def context(records: list[dict], analysis: dict, command: str | None) -> dict:
    """What the numbers are of: dataset, preset, models per family, seeds, inputs per attack, code versions,
    the date and the command that wrote the report."""
    fams = analysis["families"]
    inputs = {}
    for r in records:
        if r["task"] != "train" and r.get("dataset") != "-" and isinstance(r.get("n"), int):  # "-": a table
            inputs.setdefault(r["task"], set()).add(r["n"])
    return {
        "datasets": sorted({r.get("dataset") for r in records if r.get("dataset") not in (None, "-")}),
        "presets": sorted({r.get("preset") for r in records if r.get("preset")}),
        "models": {f: [m for m in analysis["models"] if fams.get(m) == f] for f in FAMILIES},
        "seeds": sorted({int(r.get("seed", 0)) for r in records}),
        "inputs_per_attack": {t: sorted(n) for t, n in sorted(inputs.items())},
        "code_versions": sorted({r.get("code_version") for r in records if r.get("code_version")}),
        "date": now(),
        "command": command or "python " + " ".join(sys.argv),
    }


def render(analysis: dict, records: list[dict], figures: list[Path], header: dict,
           sections: tuple[Section, ...] = ()) -> str:
    fams = analysis["families"]
    alpha = analysis["alpha"]
    models = header["models"]
    lines = ["# Study report", "",
             f"- data: {', '.join(header['datasets']) or '-'}; preset: {', '.join(header['presets']) or '-'}",
             (f"- models: {len(models['nas'])} NAS ({', '.join(models['nas']) or '-'}), {len(models['manual'])} "
              f"manual ({', '.join(models['manual']) or '-'})"),
             f"- seeds: {header['seeds']}; inputs per attack: "
             + (", ".join(f"{t} {'/'.join(map(str, n))}" for t, n in header["inputs_per_attack"].items()) or "-"),
             f"- code: {', '.join(header['code_versions']) or '-'}; written {header['date']} by `{header['command']}`",
             (f"- {len(records)} records; statistics and verdict rules: docs/statistics.md (α = {alpha:g}). The "
              "paper's columns are CIFAR-10 at full scale."), ""]
    lines += ["## Per model: mean [95% CI] over seeds (n seeds)", ""]
    for e in analysis["metrics"]:
        table1 = e["metric"].key == "clean_accuracy"  # beside the paper's Table 1
        lines += [_table([{"model": m, "family": fams.get(m, "?"), e["metric"].label: ci.format(e["metric"].fmt),
                           **({"paper Table 1 (CIFAR-10)": f"{PAPER_TABLE1[m]:.3f}" if m in PAPER_TABLE1 else None}
                              if table1 else {})} for m, ci in e["per_model"].items()]), ""]
    lines += ["## NAS − manual gaps (family means of architecture means)", ""]
    gap_rows = [{"metric": e["metric"].label, "NAS − manual [95% Welch CI] (n architectures)":
                 e["gap"].format(e["metric"].fmt), "NAS+manual": f"{e['n_models']['nas']}+{e['n_models']['manual']}",
                 "permutation p": _p(e["gap"].p_value), "Holm p": _p(e.get("p_adjusted")),
                 "smallest achievable p": f"{e['min_achievable_p']:.3g}",
                 "gap at matched accuracy": e["adjusted"].format(e["metric"].fmt) if "adjusted" in e else "-",
                 "paper's claim": e.get("verdict", "-")} for e in analysis["metrics"] if "gap" in e]
    lines += [_table(gap_rows) if gap_rows else "(no metric has both families)", ""]
    if pairs := analysis.get("pairs"):  # within-architecture comparisons over inputs
        lines += ["## Model pairs over inputs (one seed; these trained networks, not their families)", "",
                  ("Each NAS model against each manual model at the first seed both have: the difference of the "
                   "two proportions over their own inputs, Newcombe's 95% interval and Fisher's exact p (not corrected "
                   "for the number of pairs)."), "",
                  _table([{"metric": p["metric"].label, "NAS − manual model": f"{p['nas']} − {p['manual']}",
                           "seed": p["seed"], "inputs": f"{p['n_inputs']['nas']}/{p['n_inputs']['manual']}",
                           "difference [95% CI]": p["diff"].format(".3f"), "Fisher p": _p(p["diff"].p_value),
                           "finding": p["finding"]} for p in pairs]), ""]
    lines += ["## Paper remarks at this scale", ""]
    for remark in (1, 2):
        lines.append(f"- {REMARKS[remark]}: **{analysis['remarks'][remark]}**")
        for e in [e for e in analysis["metrics"] if e["metric"].remark == remark and "verdict" in e]:
            lines.append(f"  - {e['metric'].label}: {e['verdict']} (gap {e['gap'].format(e['metric'].fmt)}, "
                         f"p = {_p(e['gap'].p_value)}, Holm p = {_p(e['p_adjusted'])})")
    # what to run next: architectures per family for 80% power at each seed count, per metric with a claim
    power = [{"metric": e["metric"].label, "gap to detect": f"{plan['gap']:.3g} ({plan['gap_source']})",
              "SD between architectures / between seeds": f"{plan['between_sd']:.3g} / {plan['seed_sd']:.3g}",
              **{f"{s} seed{'s' * (s > 1)}": k for s, k in plan["architectures_per_family"].items()},
              "have": f"{e['n_models']['nas']}+{e['n_models']['manual']}"}
             for e in analysis["metrics"] if (plan := e.get("power"))]
    if power:
        lines += ["", (f"Power: architectures per family for 80% power at α = {alpha:g} (two-sided; '-': more "
                       "than 500, or the variance is unknown), with the variance observed here and the gap the "
                       "authors' artifact reports where it gives one:"), "", _table(power)]
    lines += [line for s in sections for line in s.remarks(records)]
    pgd_l = next((e["per_model"] for e in analysis["metrics"] if e["metric"].key == "pgd_l"), {})
    lines += [_remark5_line({m: ci.value for m, ci in pgd_l.items()}), ""]
    for s in sections:
        lines += [f"## {s.title}", "", _block(s.body(records)), ""]
    lines += ["## Table 4 (paper, CIFAR-10): PGD ASR M/L, backdoor ASR/CAD, MI AUC", ""]
    lines += [f"- {m}: {a:.1%}/{b:.1%}, {c:.1%}/{d:.1%}, {e:.3f}" for m, (a, b, c, d, e) in PAPER_TABLE4.items()]
    lines += ["", "## Figures", ""] + [f"![{p.stem}]({p})" for p in figures]
    return "\n".join(lines) + "\n"


def report_json(analysis: dict, header: dict) -> dict:
    """The report's numbers for scripts: one entry per metric (the family gap), per model and metric, and per
    remark, each with its range, estimate, interval, p-values, models, seeds and verdict."""
    metrics, per_model = [], []
    for e in analysis["metrics"]:
        m = e["metric"]
        metrics.append({
            "metric": m.key, "label": m.label, "claim": m.claim, "remark": m.remark,
            "range": list(bounds) if (bounds := gap_bounds(m.bounds)) else None,
            **(_estimate(e["gap"]) if "gap" in e else {"estimate": None, "ci": [None, None]}),
            "p": _json_float(e["gap"].p_value) if "gap" in e else None, "p_holm": _json_float(e.get("p_adjusted")),
            "min_achievable_p": e["min_achievable_p"], "n_models": e["n_models"], "n_seeds": e["n_seeds"],
            "verdict": e.get("verdict"), "adjusted": _estimate(e["adjusted"]) if "adjusted" in e else None,
            "power": {**e["power"], "between_sd": _json_float(e["power"]["between_sd"]),
                      "seed_sd": _json_float(e["power"]["seed_sd"])} if "power" in e else None,
        })
        for model, ci in e["per_model"].items():
            per_model.append({"metric": m.key, "model": model, "family": analysis["families"].get(model),
                              "range": list(m.bounds) if m.bounds else None, **_estimate(ci), "n_seeds": ci.n})
    remarks = [{"remark": r, "text": REMARKS[r], "verdict": v,
                "metrics": [e["metric"].key for e in analysis["metrics"] if e["metric"].remark == r and "verdict" in e]}
               for r, v in analysis["remarks"].items()]
    pairs = [{"metric": p["metric"].key, "nas": p["nas"], "manual": p["manual"], "seed": p["seed"],
              "n_inputs": p["n_inputs"], "range": [-1.0, 1.0], **_estimate(p["diff"]),
              "p": _json_float(p["diff"].p_value), "finding": p["finding"]}
             for p in analysis.get("pairs", [])]
    return {"header": header, "alpha": analysis["alpha"], "metrics": metrics, "per_model": per_model,
            "remarks": remarks, "pairs": pairs}


def _json_float(v) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _estimate(ci) -> dict:
    """An interval in report.json: its estimate and bounds (None for NaN)."""
    return {"estimate": float(ci.value), "ci": [_json_float(ci.low), _json_float(ci.high)]}


VERDICT_COLORS = {"holds": "tab:red", "does not hold": "black", "no verdict": "tab:gray"}


def gap_figure(analysis: dict, path: Path) -> Path | None:
    """Each metric's NAS − manual gap (the table's sign) with its interval, on its own axis (the metrics have
    different units); an arrow marks the side the paper claims, the colour is the table's verdict."""
    entries = [e for e in analysis["metrics"] if "gap" in e and e["metric"].claim]
    if not entries:
        return None
    from matplotlib.lines import Line2D

    from nas_jax.report.plots import legend_outside, plt, save_figure

    fig, axes = plt.subplots(len(entries), 1, figsize=(6.5, 0.8 * len(entries) + 1.2), squeeze=False)
    for ax, e in zip(axes[:, 0], entries, strict=True):
        g, claim = e["gap"], e["metric"].claim
        lo, hi = (g.value, g.value) if math.isnan(g.low) else (g.low, g.high)
        color = VERDICT_COLORS[next((k for k in ("holds", "does not hold") if (e.get("verdict") or "").startswith(k)),
                                    "no verdict")]
        ax.plot([lo, hi], [0, 0], color=color, lw=2)
        ax.plot([g.value], [0], "o", color=color)
        ax.axvline(0, color="k", lw=0.8)
        span = max(abs(lo), abs(hi), 1e-12) * 1.3
        ax.set_xlim(-span, span)
        ax.annotate("paper", xy=(claim * 0.95 * span, 0.5), xytext=(claim * 0.55 * span, 0.5), fontsize=6,
                    va="center", ha="center", arrowprops={"arrowstyle": "->", "lw": 0.8})
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        ax.set_ylabel(e["metric"].label, rotation=0, ha="right", va="center", fontsize=7)
        ax.set_xlabel("NAS − manual", fontsize=6)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("NAS − manual (as in the table; arrow: the side the paper claims)", fontsize=8)
    legend_outside(axes[0, 0], handles=[Line2D([], [], color=c, marker="o", label=k)
                                        for k, c in VERDICT_COLORS.items()], fontsize=7)
    fig.suptitle("NAS − manual family gaps, 95% Welch intervals over architectures", fontsize=10)
    return save_figure(fig, path)


def metric_figure(analysis: dict, path: Path) -> Path | None:
    """One panel per metric: each model's mean over seeds with its 95% interval (inside the metric's range;
    none with one seed), coloured by family."""
    entries = analysis["metrics"]
    if not entries:
        return None
    from nas_jax.report.plots import FAMILY_COLORS, family_patches, legend_outside, plt, save_figure

    cols = min(4, len(entries))
    rows = math.ceil(len(entries) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    fams = analysis["families"]
    for ax, e in zip(axes.flat, entries, strict=False):
        names, cis = list(e["per_model"]), list(e["per_model"].values())
        errs = np.array([[0.0, 0.0] if math.isnan(ci.low) else [ci.value - ci.low, ci.high - ci.value] for ci in cis]).T
        ax.bar(range(len(names)), [ci.value for ci in cis], yerr=errs, capsize=3,
               color=[FAMILY_COLORS.get(fams.get(m), "tab:gray") for m in names])
        bounds = e["metric"].bounds
        if bounds and bounds[1] is not None:
            ax.set_ylim(min(bounds[0], 0.0), bounds[1])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{e['metric'].label} (n = {e['n_seeds']} seed{'s' * (e['n_seeds'] > 1)})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(entries):]:
        ax.remove()
    legend_outside(axes[0][cols - 1], handles=family_patches())
    fig.suptitle("Per-model metrics: mean and 95% interval over seeds", fontsize=10)
    return save_figure(fig, path)


def write_report(workdir: str | Path, metrics: list[Metric], models: tuple[str, ...] | None = None,
                 command: str | None = None, sections: tuple[Section, ...] = ()) -> Path:
    """Analyse every record under ``workdir`` on ``metrics``; write ``report.md`` (with the tasks' own
    ``sections``), ``report.json`` and the figures there."""
    workdir = Path(workdir)
    records = collect_records(workdir)
    analysis = analyse(records, metrics, list(models) if models else None)
    header = context(records, analysis, command)
    figures = [f for f in (metric_figure(analysis, workdir / "figures" / "study_metrics.png"),
                           gap_figure(analysis, workdir / "figures" / "study_gaps.png")) if f]
    cell_figures = len(list((workdir / "cells").glob("**/figures/**/*.png")))
    files.write_json(workdir / "report.json", report_json(analysis, header), indent=2)
    path = workdir / "report.md"
    files.write_text(path, render(analysis, records, [p.relative_to(workdir) for p in figures], header, sections)
                     + f"\nEach cell's own figures ({cell_figures} files): `cells/<task>/<model>/seed<s>/figures/`.\n")
    return path
