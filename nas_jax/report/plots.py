"""Figures of the study (PNG, matplotlib Agg): NAS vs manual comparisons.

:func:`save_figure` wraps titles wider than their figure or panel before layout, so none is clipped; titles name
a ``kind:PATH`` dataset or genotype by its short name (:func:`~nas_jax.report.tables.short_name`); legends sit
outside the data (:func:`legend_outside`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.text
import matplotlib.ticker
import numpy as np
from matplotlib.patches import Patch

from nas_jax.report.tables import short_name

FAMILY_COLORS = {"nas": "tab:red", "manual": "tab:blue"}


def legend_outside(ax, **kwargs):
    """A legend to the right of ``ax``, outside its data area (``save_figure``'s layout makes room for it)."""
    kwargs.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def _wrap(text_artist, max_width: float, renderer) -> None:
    """Re-wrap ``text_artist`` onto more lines until its rendered width is at most ``max_width`` pixels."""
    paragraphs = text_artist.get_text().split("\n")
    chars = max(len(line) for line in paragraphs)
    width = text_artist.get_window_extent(renderer).width
    while width > max_width and chars > 8:
        chars = max(8, min(chars - 1, int(chars * max_width / width)))
        text_artist.set_text("\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in paragraphs))
        width = text_artist.get_window_extent(renderer).width


def shorten_names(fig) -> None:
    """Apply :func:`short_name` to every text of ``fig``: titles, labels, legends, annotations and the fixed
    tick labels that name models."""
    for text in fig.findobj(matplotlib.text.Text):
        short = short_name(text.get_text())
        if short != text.get_text():
            text.set_text(short)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if isinstance(fmt, matplotlib.ticker.FixedFormatter):
                fmt.seq = [short_name(str(label)) for label in fmt.seq]


def fit_titles(fig) -> None:
    """Wrap the figure's suptitle to the figure's width and each panel title to its panel's width."""
    renderer = fig.canvas.get_renderer()
    if fig._suptitle is not None:
        _wrap(fig._suptitle, 0.96 * fig.bbox.width, renderer)
    for ax in fig.axes:
        width = ax.get_position().width * fig.bbox.width
        for title in (ax.title, ax._left_title, ax._right_title):
            _wrap(title, max(width, 0.3 * fig.bbox.width), renderer)


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Shorten ``kind:PATH`` names, lay out with wrapped titles, write the PNG and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shorten_names(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout()  # panel widths first, then the titles wrapped to them, then the final layout
        fit_titles(fig)
        fig.tight_layout()
    else:  # figures built with layout="constrained" keep it
        fig.draw_without_rendering()
        fit_titles(fig)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def nas_first(rows: list[dict]) -> list[dict]:
    """``rows`` with the NAS models first, each family by model name (the figures' order)."""
    return sorted(rows, key=lambda r: (r["family"] != "nas", r["model"]))


def family_patches(suffix: str = "") -> list[Patch]:
    """Legend handles: one patch per family in its colour."""
    return [Patch(color=color, label=f"{family}{suffix}") for family, color in FAMILY_COLORS.items()]


def model_bars(ax, rows: list[dict], values: list[float], ylabel: str):
    """One bar per row's model, coloured by its family, the models named below the axis; returns the bars."""
    bars = ax.bar(range(len(rows)), values, color=[FAMILY_COLORS[r["family"]] for r in rows])
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    return bars


def family_means(ax, xs: list[float], curves: dict[str, list[list[float]]]) -> None:
    """Per family (``curves``: family -> the ys of each of its models): each model faint, the mean thick."""
    for family, color in FAMILY_COLORS.items():
        for ys in curves.get(family, []):
            ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
        if n := len(curves.get(family, [])):
            ax.plot(xs, np.mean(curves[family], axis=0), color=color, marker="o", lw=2,
                    label=f"{family} mean ({n} model{'s' * (n != 1)})")


def bar_panels(rows: list[dict], panels: list[tuple[str, str]], path: str | Path, ylabel: str,
               title: str = "") -> Path:
    """One bar chart per (metric key, panel title); bars per model, coloured by family,
    NAS models first (Figure 2 style)."""
    rows = nas_first(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 + 0.45 * len(rows) * len(panels), 3.4), squeeze=False)
    for ax, (key, panel_title) in zip(axes[0], panels):
        bars = model_bars(ax, rows, [100 * r[key] for r in rows], ylabel)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)  # a 0% bar stays visible as its label
        ax.set_ylim(0, 105)
        ax.set_title(panel_title)
    legend_outside(axes[0][-1], handles=family_patches())
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def family_curves(xs: list[float], curves: dict[str, tuple[str, list[float]]], path: str | Path, xlabel: str,
                  ylabel: str, title: str = "") -> Path:
    """One line per model, coloured by family (Figure 3 style). ``curves``: model -> (family, ys)."""
    fig, ax = plt.subplots(figsize=(6.4 + 1.2 * (len(curves) // 12), 3.6))  # room for the legend on the right
    for model, (family, ys) in sorted(curves.items()):
        ax.plot(xs, [100 * y for y in ys], marker="o", ms=3, color=FAMILY_COLORS[family], alpha=0.8, label=model)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    legend_outside(ax, fontsize=6, ncol=1 + len(curves) // 12)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


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
    return save_figure(fig, path)
