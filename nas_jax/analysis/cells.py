"""Cell structure of NAS genotypes: Table 3 (depth, width, #skip) and cell drawings (§5.1, Table 3,
Figure 15 style; docs/protocol.md §c.4).

``nas_jax.models.genotypes.cell_metrics`` beside the paper's Table 3 (docs/protocol.md §c.4: only W3 reproduces
its width, and its #skip for DARTS and NASNet is the reduction cell's), and drawings of the normal and reduction
cells: inputs left, intermediate nodes in columns by longest distance, the output right, ops on the edges (skip
connects in red).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nas_jax.models import genotypes, registry
from nas_jax.report.plots import save_figure

# Table 3 of the paper: (depth, width in units of c, #skip), keyed by zoo name (DARTS = DARTS V2).
PAPER_TABLE3 = {
    "amoebanet": (4, 3, 2),
    "darts": (3, 3, 3),
    "drnas": (4, 2, 1),
    "enas": (2, 5, 2),
    "nasnet": (2, 5, 1),
    "pc_darts": (2, 4, 1),
    "pdarts": (4, 2, 2),
    "sgas": (3, 2, 1),
    "snas": (2, 4, 4),
}
PAPER_AVERAGES = {"depth": 2.8, "width": 3.3}  # as stated in §5.1 (the table itself gives 26/9 = 2.89)

ARROW = {"arrowstyle": "-|>", "shrinkA": 13, "shrinkB": 13}  # every edge's arrow, stopping short of the node boxes
OP_COLORS = {"skip_connect": "tab:red", "max_pool_3x3": "tab:green", "avg_pool_3x3": "tab:green"}
OP_SHORT = {"skip_connect": "skip", "max_pool_3x3": "max3", "avg_pool_3x3": "avg3", "sep_conv_3x3": "sep3",
            "sep_conv_5x5": "sep5", "sep_conv_7x7": "sep7", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5",
            "conv_7x1_1x7": "7x1-1x7", "none": "zero"}


def default_genotypes() -> tuple[str, ...]:
    """Every stored genotype (DARTS V2 as 'darts'): the Table 3 models first, then the rest."""
    return tuple(PAPER_TABLE3) + tuple(n for n in registry.nas_names() if n not in PAPER_TABLE3)


def table3_row(name: str) -> dict:
    """The computed metrics of genotype ``name`` (zoo name or genotype:PATH) next to Table 3's values."""
    g = genotypes.get_genotype(name)
    m = genotypes.genotype_metrics(g)
    key = genotypes.canonical_name(name)
    depth, width, skip = PAPER_TABLE3.get("darts" if key == "darts_v2" else key, (None, None, None))
    return {"model": name, "paper_depth": depth, "paper_width": width, "paper_skip": skip, **m,
            "normal_ops": len(g.normal), "reduce_ops": len(g.reduce)}


def averages(rows: list[dict]) -> dict:
    """Mean computed depth / W1 / W2 / W3 / #skip over the Table 3 models among ``rows``, and the paper's."""
    t3 = [r for r in rows if r["paper_depth"] is not None]
    if not t3:
        return {}
    out = {k: float(np.mean([r[k] for r in t3])) for k in ("depth", "width_w1", "width_w2", "width_w3",
                                                             "skip_connects")}
    out.update(n_models=len(t3), paper_depth_table=float(np.mean([r["paper_depth"] for r in t3])),
               paper_width_table=float(np.mean([r["paper_width"] for r in t3])),
               paper_depth_text=PAPER_AVERAGES["depth"], paper_width_text=PAPER_AVERAGES["width"])
    return out


# ----------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------


def cell_layout(cell, concat) -> tuple[dict[int | str, tuple[float, float]], list[tuple], list[int]]:
    """Node positions, op edges (src, dst, op) and output edges of one cell.

    Nodes 0/1 are the inputs, j + 2 the j-th intermediate node, ``"out"`` the output; x is twice the longest
    distance from the inputs; a column is ordered by its predecessors' mean height and odd columns shift half a row.
    """
    level = {0: 0, 1: 0}
    preds: dict[int | str, list] = {}
    edges = []
    for k, (op, src) in enumerate(cell):
        dst = k // 2 + 2
        edges.append((src, dst, op))
        preds.setdefault(dst, []).append(src)
        level[dst] = max(level.get(dst, 0), level[src] + 1)
    level["out"] = 1 + max(level[c] for c in concat)
    preds["out"] = list(concat)
    pos: dict[int | str, tuple[float, float]] = {0: (0.0, 0.75), 1: (0.0, -0.75)}
    for lv in range(1, level["out"] + 1):
        nodes = [n for n, v in level.items() if v == lv]
        nodes.sort(key=lambda n: -np.mean([pos[p][1] for p in preds[n]]))
        shift = 0.0 if (len(nodes) % 2 == 0) == (lv % 2 == 0) else 0.5
        for i, node in enumerate(nodes):
            pos[node] = (2.0 * lv, 1.5 * ((len(nodes) - 1) / 2 - i) + (shift if node != "out" else 0.0))
    return pos, edges, list(concat)


def _bezier(p0, p1, rad: float, t: float) -> tuple[float, float]:
    """Point at t on matplotlib's arc3 curve from p0 to p1 (control point mid + rad·(dy, −dx))."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    return ((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1, (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1)


LABEL_POSITIONS = (0.62, 0.45, 0.75, 0.35, 0.85, 0.25)  # where along its edge a label may sit, in order of preference


def _place_label(ax, spots, text: str, color: str, placed: list) -> None:
    """Put an op label at the first of ``spots`` whose box (measured as drawn) clears every label already placed
    (edges converging on one node put their labels at the same fraction of the edge close together), else at the
    least crowded one."""
    renderer = ax.figure.canvas.get_renderer()
    best = None
    for x, y in spots:
        label = ax.text(x, y, text, fontsize=7, color=color, ha="center", va="center", zorder=3,
                        bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.9})
        box = label.get_window_extent(renderer)
        clashes = sum(box.overlaps(b) for b in placed)
        if best is None or clashes < best[0]:
            if best is not None:
                best[1].remove()
            best = (clashes, label, box)
        else:
            label.remove()
        if clashes == 0:
            break
    placed.append(best[2])


def draw_cell(ax, cell, concat, title: str) -> None:
    """Draw one cell on ``ax`` (equal aspect)."""
    pos, edges, outs = cell_layout(cell, concat)
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.set_aspect("equal")
    ax.apply_aspect()  # the final data-to-pixel scale, so that label boxes are measured as they will be drawn
    seen: dict[tuple, int] = {}
    placed: list = []
    for src, dst, op in edges:
        dup = seen.get((src, dst), 0)
        seen[(src, dst)] = dup + 1
        parallel = sum(e[:2] == (src, dst) for e in edges) > 1  # two ops on the same pair: bend apart
        rad = (0.25 if dup == 0 else -0.25) if parallel else 0.12
        color = OP_COLORS.get(op, "tab:blue")
        ax.annotate("", xy=pos[dst], xytext=pos[src], zorder=1,
                    arrowprops={**ARROW, "color": color, "lw": 1.4, "connectionstyle": f"arc3,rad={rad}"})
        _place_label(ax, [_bezier(pos[src], pos[dst], rad, t) for t in LABEL_POSITIONS], OP_SHORT.get(op, op), color,
                     placed)
    for node in outs:
        ax.annotate("", xy=pos["out"], xytext=pos[node], zorder=0,
                    arrowprops={**ARROW, "color": "0.65", "lw": 1.0, "ls": "--", "connectionstyle": "arc3,rad=0.08"})
    for node, (x, y) in pos.items():
        face = "lightsteelblue" if node in (0, 1) else ("khaki" if node == "out" else "white")
        label = {0: "$c_{k-2}$", 1: "$c_{k-1}$", "out": "$c_{k}$"}.get(node) or str(node - 2)  # node j + 2 is j
        ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=4,
                bbox={"boxstyle": "round,pad=0.35", "fc": face, "ec": "0.3"})
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def draw_genotype(name: str, path: str | Path) -> Path:
    """Normal and reduction cell of ``name`` side by side, as a PNG (Figure 15 style)."""
    g = genotypes.get_genotype(name)
    m = genotypes.genotype_metrics(g)
    label = registry.display_name(name)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    draw_cell(axes[0], g.normal, g.normal_concat,
              f"{label} normal cell: depth {m['depth']}, width {m['width_w3']}c (W3), {m['skip_connects']} skip")
    draw_cell(axes[1], g.reduce, g.reduce_concat,
              f"{label} reduction cell: depth {m['reduce_depth']}, {m['reduce_skip_connects']} skip")
    return save_figure(fig, path, dpi=130)
