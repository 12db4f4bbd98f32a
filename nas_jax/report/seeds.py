"""A task repeated over seeds: one table and one figure of each model's mean and 95% interval over seeds.

A training run is one draw, not an expected result (docs/statistics.md). Over several seeds (``--config.seeds``)
every per-seed record is kept; per model, setting and metric this gives the mean with the interval of
:func:`nas_jax.report.statistics.mean_ci` inside the metric's range (:func:`metric_bounds`), and a figure of the
means with error bars and every seed as a point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nas_jax.report.statistics import Interval, mean_ci
from nas_jax.report.tables import format_table, short_name

PROPORTION_WORDS = ("asr", "accuracy", "auc", "agree", "robust", "success", "rate", "fraction")
MAX_PANELS = 8


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range of a metric, by its name: proportions (ASR, accuracy, AUC, agreement, rates) in [0, 1],
    clean-accuracy drops (CAD) in [−1, 1], anything else unbounded."""
    low = name.lower()
    if "cad" in low:
        return (-1.0, 1.0)
    if any(w in low for w in PROPORTION_WORDS):
        return (0.0, 1.0)
    return None


def _setting_labels(models: list[str], settings: list[dict]) -> list[str]:
    """Each row's setting by the fewest keys that tell apart the rows of one model (keys with the most distinct
    values first: a backdoor's rows read 'attack=trojannn' and 'attack=badnet')."""
    def distinct(key):
        return len({json.dumps(s.get(key), sort_keys=True) for s in settings})

    keys = sorted((k for k in {k for s in settings for k in s} - {"family"} if distinct(k) > 1),
                  key=lambda k: (-distinct(k), k))
    chosen = []
    pairs = list(zip(models, settings, strict=True))
    for key in keys:
        if len({(m, json.dumps([s.get(k) for k in chosen], sort_keys=True)) for m, s in pairs}) == len(pairs):
            break
        chosen.append(key)
    return [", ".join(f"{k}={s.get(k)}" for k in chosen) for s in settings]


def aggregate(records: list[dict]) -> list[dict]:
    """Rows per (task, model, setting): ``{"task", "model", "family", "setting", "seeds", "metrics": {name:
    Interval}, "values": {name: [per-seed values]}}`` over every numeric scalar metric, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        key = json.dumps([r["task"], r["model"], r.get("setting", {})], sort_keys=True)
        groups.setdefault(key, []).append(r)
    rows = []
    for group in groups.values():
        first = group[0]
        names = [k for k, v in first["metrics"].items() if isinstance(v, int | float) and not isinstance(v, bool)]
        values = {k: [float(r["metrics"][k]) for r in group if isinstance(r["metrics"].get(k), int | float)
                      and math.isfinite(r["metrics"][k])] for k in names}
        setting = first.get("setting", {})
        rows.append({"task": first["task"], "model": first["model"], "family": setting.get("family"),
                     "setting": setting, "seeds": sorted({r.get("seed") for r in group}), "values": values,
                     "metrics": {k: mean_ci(v, bounds=metric_bounds(k)) for k, v in values.items() if v}})
    for row, label in zip(rows, _setting_labels([r["model"] for r in rows], [r["setting"] for r in rows]), strict=True):
        row["setting"] = label
    return rows


def _cell(ci: Interval) -> str:
    return f"{ci.value:.3f}" if math.isnan(ci.low) else f"{ci.value:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def table(rows: list[dict]) -> str:
    """One line per model and setting: every metric's mean [95% interval] over its seeds."""
    names = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    out = [{"model": r["model"], "setting": r["setting"] or "-", "n": len(r["seeds"]),
            **{k: _cell(r["metrics"][k]) for k in r["metrics"]}} for r in rows]
    return format_table(out, [("model", "model", None), ("setting", "setting", None), ("n", "seeds", None),
                              *[(k, k, None) for k in names]])


def figure(rows: list[dict], path: str | Path, title: str) -> Path | None:
    """A panel per metric (the first :data:`MAX_PANELS`): each model's mean over seeds with its interval as an
    error bar and every seed as a point, coloured by family."""
    from nas_jax.report.plots import FAMILY_COLORS, family_patches, legend_outside, plt, save_figure

    names = list(dict.fromkeys(k for r in rows for k in r["metrics"]))[:MAX_PANELS]
    if not names:
        return None
    cols = min(4, len(names))
    n_rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.4 * cols, 3.0 * n_rows), squeeze=False)
    n_seeds = sorted({len(r["seeds"]) for r in rows})
    for ax, name in zip(axes.flat, names, strict=False):
        mine = [r for r in rows if name in r["metrics"]]
        labels = [short_name(r["model"]) + (f"\n{r['setting']}" if r["setting"] else "") for r in mine]
        for i, r in enumerate(mine):
            ci = r["metrics"][name]
            err = None if math.isnan(ci.low) else [[ci.value - ci.low], [ci.high - ci.value]]
            ax.bar(i, ci.value, yerr=err, capsize=3, color=FAMILY_COLORS.get(r["family"], "tab:gray"), alpha=0.7)
            seeds = r["values"][name]
            ax.plot(np.full(len(seeds), i) + np.linspace(-0.15, 0.15, len(seeds)), seeds, "k.", ms=4)
        bounds = metric_bounds(name)
        if bounds == (0.0, 1.0):
            ax.set_ylim(0, 1.05)
        ax.set_xticks(range(len(mine)), labels, rotation=45, ha="right", fontsize=7)
        unit = {(0.0, 1.0): " (fraction)", (-1.0, 1.0): " (difference of fractions)"}.get(bounds, "")
        ax.set_ylabel(name + unit, fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.remove()
    handles = [*family_patches(), plt.Line2D([], [], color="k", marker=".", ls="", label="one seed")]
    legend_outside(axes[0][cols - 1], handles=handles)
    fig.suptitle(f"{title}: mean and 95% interval over {'/'.join(map(str, n_seeds))} seeds", fontsize=10)
    return save_figure(fig, path)
