"""Figures of the study (PNG, matplotlib Agg): NAS vs manual comparisons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

FAMILY_COLORS = {"nas": "tab:red", "manual": "tab:blue"}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # figures built with layout="constrained" keep it
        fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def bar_panels(rows: list[dict], panels: list[tuple[str, str]], path: str | Path, ylabel: str,
               title: str = "") -> Path:
    """One bar chart per (metric key, panel title); bars per model, coloured by family,
    NAS models first (Figure 2 style)."""
    rows = sorted(rows, key=lambda r: (r["family"] != "nas", r["model"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 0.45 * len(rows) * len(panels), 3.4), squeeze=False)
    for ax, (key, panel_title) in zip(axes[0], panels):
        values = [100 * r[key] for r in rows]
        ax.bar(range(len(rows)), values, color=[FAMILY_COLORS[r["family"]] for r in rows])
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 115)
        ax.set_title(panel_title)
        ax.set_ylabel(ylabel)
        ax.legend(handles=[Patch(color=color, label=fam) for fam, color in FAMILY_COLORS.items()], fontsize=8,
                  loc="upper right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def family_curves(xs: list[float], curves: dict[str, tuple[str, list[float]]], path: str | Path, xlabel: str,
                  ylabel: str, title: str = "") -> Path:
    """One line per model, coloured by family (Figure 3 style). ``curves``: model -> (family, ys)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for model, (family, ys) in sorted(curves.items()):
        ax.plot(xs, [100 * y for y in ys], marker="o", ms=3, color=FAMILY_COLORS[family], alpha=0.8, label=model)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.legend(fontsize=6, ncol=2)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def family_histograms(counts: dict[str, list[int]], sizes: dict[str, int], path: str | Path, title: str = "") -> Path:
    """Per family, how many inputs fool exactly j of its models (Figure 4 style)."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.2), squeeze=False)
    for ax, (family, per_input) in zip(axes[0], sorted(counts.items(), key=lambda kv: kv[0] != "nas")):
        n = sizes[family]
        hist = [sum(1 for c in per_input if c == j) for j in range(n + 1)]
        ax.bar(range(n + 1), hist, color=FAMILY_COLORS[family])
        ax.set_xticks(range(n + 1))
        ax.set_xlabel(f"number of {family} models fooled (of {n})")
        ax.set_ylabel("number of inputs")
        ax.set_title(family)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
