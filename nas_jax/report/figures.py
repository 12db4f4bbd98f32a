"""Task figures (figures live in the report layer, tasks call them). Each function draws one of the
paper's figures from rows/records or saved grids and writes it with :func:`nas_jax.report.plots.save_figure`.

Landscape (§4, Figure 11): loss contours in parameter and input space, shared contour levels per panel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nas_jax.report import plots
from nas_jax.report.plots import FAMILY_COLORS, legend_outside, plt, save_figure  # plots selects the Agg backend
from nas_jax.train.zoo import slug

# ----------------------------------------------------------------------------
# Landscape (Figure 11)
# ----------------------------------------------------------------------------


def _levels(losses: np.ndarray, n: int = 14) -> np.ndarray:
    values = losses.ravel()
    lo, hi = np.percentile(values, 0.5), np.percentile(values, 97)
    return np.linspace(lo, hi if hi > lo else lo + 1e-6, n)


def _panel(ax, alphas, betas, losses, title: str, family: str, space: str):
    """One contour panel with its own levels (the models' loss scales differ by orders of magnitude: shared
    levels leave some panels empty) and its own colour bar."""
    cs = ax.contour(alphas, betas, losses.T, levels=_levels(losses), cmap="viridis", linewidths=0.8)
    ax.plot(0, 0, marker="+", color="k", ms=6)
    ax.set_title(title, fontsize=8, color=plots.FAMILY_COLORS.get(family, "k"))
    ax.set_xlabel(f"α ({space} direction 1)", fontsize=6)
    ax.set_ylabel(f"β ({space} direction 2)", fontsize=6)
    ax.tick_params(labelsize=6)
    bar = ax.figure.colorbar(cs, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label("CE loss", fontsize=6)
    bar.ax.tick_params(labelsize=5)
    return cs


def contour_figures(workdir: Path, tag: str, dataset: str, models: list[str], plot_contour: int = 0,
                    n_images_panel: int = 5) -> list[Path]:
    """The Figure 11 panel (datasets × models from every saved grid of ``tag``) and the per-image panel of
    ``dataset``; every panel has its own contour levels and colour bar, and grid cells without data are left
    out rather than drawn empty."""
    root = workdir / "landscape"
    grids = {}
    for f in sorted(root.glob(f"*/*_{tag}.npz")):
        with np.load(f) as z:
            grids[(f.parent.name, f.name.removesuffix(f"_{tag}.npz"))] = {k: z[k] for k in z.files}
    if not grids:
        return []
    space = "weight" if tag.startswith(("param", "weights")) else "input"
    datasets = sorted({d for d, _ in grids})
    cols = [slug(m) for m in models if any((d, slug(m)) in grids for d in datasets)]  # grids are keyed by file name
    cols += sorted({m for _, m in grids} - set(cols))
    fig, axes = plt.subplots(len(datasets), len(cols), figsize=(1.2 + 3.0 * len(cols), 0.6 + 2.6 * len(datasets)),
                             squeeze=False, layout="constrained")
    for i, d in enumerate(datasets):
        for j, m in enumerate(cols):
            ax = axes[i][j]
            if (d, m) not in grids:
                ax.remove()
                continue
            g = grids[(d, m)]
            c = min(plot_contour, g["losses"].shape[-1] - 1)
            _panel(ax, g["alphas"], g["betas"], g["losses"][..., c], f"{m} ({d})", str(g["family"]), space)
    n_images = sorted({g["losses"].shape[-1] for g in grids.values()})
    fig.suptitle(f"loss contours, {tag.replace('_', ' ±')}: image #{plot_contour} of n = "
                 f"{'/'.join(map(str, n_images))} per model (levels per panel)", fontsize=9)
    out = [plots.save_figure(fig, workdir / "figures" / f"landscape_{tag}.png", dpi=130)]

    ds = slug(dataset)
    mine = [(m, grids[(ds, m)]) for m in cols if (ds, m) in grids]
    k = min(n_images_panel, min(g["losses"].shape[-1] for _, g in mine))
    fig, axes = plt.subplots(len(mine), k, figsize=(2.6 * k, 2.2 * len(mine)), squeeze=False, layout="constrained")
    for i, (m, g) in enumerate(mine):
        for c in range(k):
            _panel(axes[i][c], g["alphas"], g["betas"], g["losses"][..., c], f"{m} #{c}", str(g["family"]), space)
    fig.suptitle(f"loss contours per input image, {tag.replace('_', ' ±')}: {k} images per model (levels per "
                 "panel)", fontsize=9)
    out.append(plots.save_figure(fig, workdir / "figures" / f"landscape_{tag}_{ds}_images.png", dpi=130))
    return out


# ----------------------------------------------------------------------------
# adv_train
# ----------------------------------------------------------------------------


def adv_train_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Accuracy drop (bars: against the standard model of the AT recipe; black ticks: against the zoo victim,
    where that differs) and untargeted PGD ASR after AT per model (black ticks: ASR before AT)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = sorted(rows, key=lambda r: (r["family"] != "nas", r["model"]))
    xs = range(len(rows))
    colors = [plots.FAMILY_COLORS[r["family"]] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(2.8 + 0.9 * len(rows), 3.4))
    axes[0].bar(xs, [100 * r["accuracy_drop"] for r in rows], color=colors)
    axes[0].set_ylabel("clean accuracy drop (points)")
    axes[0].axhline(0, color="grey", lw=0.5)
    extra = []
    if any(r.get("accuracy_drop_zoo", r["accuracy_drop"]) != r["accuracy_drop"] for r in rows):
        axes[0].scatter(xs, [100 * r["accuracy_drop_zoo"] for r in rows], marker="_", s=300, color="0.4")
        extra = [Line2D([], [], color="0.4", marker="_", ls="", ms=12, label="drop vs zoo victim")]
    axes[1].bar(xs, [100 * r["asr"] for r in rows], color=colors)
    axes[1].scatter(xs, [100 * r["asr_standard"] for r in rows], marker="_", s=300, color="black",
                    label="standard training")
    axes[1].set_ylabel("untargeted PGD ASR (%)")
    axes[1].set_ylim(0, 105)
    for ax in axes:
        ax.set_xticks(xs, [r["model"] for r in rows], rotation=60, ha="right", fontsize=8)
    handles = [Patch(color=c, label=f"{f} (AT)") for f, c in plots.FAMILY_COLORS.items()]
    plots.legend_outside(axes[1], handles=handles + axes[1].get_legend_handles_labels()[0] + extra, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------
# backdoor
# ----------------------------------------------------------------------------


def backdoor_asr_cad_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Figure 7: ASR and CAD bars per model, NAS first, coloured by family."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = sorted(rows, key=lambda r: (r["family"] != "nas", r["model"]))
    fig, axes = plt.subplots(1, 2, figsize=(2.4 + 0.9 * len(rows), 3.4))
    colors = [plots.FAMILY_COLORS[r["family"]] for r in rows]
    for ax, key, label in ((axes[0], "asr", "ASR (%)"), (axes[1], "cad", "CAD (percentage points)")):
        ax.bar(range(len(rows)), [100 * r[key] for r in rows], color=colors)
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].set_ylim(0, 105)
    plots.legend_outside(axes[1], handles=[Patch(color=c, label=f) for f, c in plots.FAMILY_COLORS.items()])
    if title:
        fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path)


def backdoor_neurons_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Figure 8: ASR and CAD against n_neuron; family means thick, models faint."""
    import matplotlib.pyplot as plt

    ns = sorted({r["n_neuron"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "asr", "ASR (%)"), (axes[1], "cad", "CAD (percentage points)")):
        for family, color in plots.FAMILY_COLORS.items():
            models = sorted({r["model"] for r in rows if r["family"] == family})
            curves = [[100 * next(r[key] for r in rows if r["model"] == m and r["n_neuron"] == n) for n in ns]
                      for m in models]
            for ys in curves:
                ax.plot(ns, ys, color=color, alpha=0.25, lw=0.8)
            if curves:
                ax.plot(ns, np.mean(curves, axis=0), color=color, marker="o", lw=2, label=f"{family} mean")
        ax.set_xticks(ns)
        ax.set_xlabel("number of target neurons")
        ax.set_ylabel(label)
    plots.legend_outside(axes[1])
    if title:
        fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------
# grad_variance
# ----------------------------------------------------------------------------


def grad_variance_figure(rows: list[dict], metric: str, path: Path, title: str, bn_modes: tuple[str, ...],
                         phases: tuple[str, ...]) -> Path:
    """Figure 12: one log-scale panel per BN state (in ``bn_modes`` order); per model a bar per phase (the
    first, init, light)."""
    plt = plots.plt
    bns = [b for b in bn_modes if any(r["bn"] == b for r in rows)]
    models = sorted({(r["family"] != "nas", r["model"]) for r in rows})
    fig, axes = plt.subplots(1, len(bns), figsize=(2.2 + 0.6 * len(models) * len(bns), 3.6), squeeze=False)
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
    handles = [Patch(color=c, label=f) for f, c in plots.FAMILY_COLORS.items()]
    handles += [Patch(facecolor="0.5", alpha=0.45, label="init"), Patch(facecolor="0.5", label="trained")]
    plots.legend_outside(axes[0][-1], handles=handles, fontsize=7)
    fig.suptitle(title)
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------
# membership
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# ntk
# ----------------------------------------------------------------------------


def ntk_condition_figure(rows: list[dict], path: Path, title: str) -> Path:
    """log10 κ per model (bars coloured by family), one panel per (phase, bn)."""
    plt = plots.plt
    groups = sorted({(r["phase"], r["bn"]) for r in rows})
    per_panel = max(len(rows) // max(len(groups), 1), 1)
    fig, axes = plt.subplots(1, len(groups), figsize=(1.2 + 0.5 * per_panel * len(groups), 3.4), squeeze=False)
    for ax, (phase, bn) in zip(axes[0], groups):
        sel = sorted((r for r in rows if (r["phase"], r["bn"]) == (phase, bn)),
                     key=lambda r: (r["family"] != "nas", r["model"]))
        ax.bar(range(len(sel)), [r["log10_cond"] for r in sel],
               color=[plots.FAMILY_COLORS[r["family"]] for r in sel])
        ax.set_xticks(range(len(sel)), [r["model"] for r in sel], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("log10 κ(NTK)")
        ax.set_title(f"{phase}, BN {bn}", fontsize=9)
    fig.suptitle(title)
    return plots.save_figure(fig, path)


def ntk_correlation_figure(rows: list[dict], asr: dict[str, dict], path: Path, title: str) -> Path:
    """Scatter of log10 κ against the most-/least-likely PGD ASR, one row per (phase, bn)."""
    plt = plots.plt
    groups = sorted({(r["phase"], r["bn"]) for r in rows})
    modes = ("most_likely", "least_likely")
    fig, axes = plt.subplots(len(groups), 2, figsize=(7.5, 3.0 * len(groups)), squeeze=False)
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


# ----------------------------------------------------------------------------
# poison
# ----------------------------------------------------------------------------


def poison_cad_figure(rows: list[dict], fractions: list[float], path: Path, title: str = "") -> Path:
    """Figure 6: CAD (percentage points) against p, one thick line per family mean and a faint line per model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    xs = [100 * p for p in fractions]
    for family, color in plots.FAMILY_COLORS.items():
        curves = [[100 * r[f"cad_{p:g}"] for p in fractions] for r in rows if r["family"] == family]
        for ys in curves:
            ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
        if curves:
            ax.plot(xs, np.mean(curves, axis=0), color=color, marker="o", lw=2,
                    label=f"{family} mean ({len(curves)} model{'s' * (len(curves) != 1)})")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("poisoning fraction p (%)")
    ax.set_ylabel("clean accuracy drop (percentage points)")
    plots.legend_outside(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return plots.save_figure(fig, path)


# ----------------------------------------------------------------------------
# stealing
# ----------------------------------------------------------------------------


def stealing_ace_budget_figure(rows: list[dict], path: Path, title: str) -> Path:
    """Figure 9 style: ACE against the query budget, one line per victim coloured by family (floors dotted)."""
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for victim in sorted({r["model"] for r in rows}):
        pts = sorted((r["budget"], r["ace"], r["victim_entropy"], r["family"]) for r in rows if r["model"] == victim)
        color = FAMILY_COLORS[pts[0][3]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, alpha=0.85)
        ax.annotate(victim, (pts[-1][0], pts[-1][1]), fontsize=6, xytext=(3, 0), textcoords="offset points")
        ax.axhline(pts[0][2], color=color, lw=0.6, ls=":", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("query budget")
    ax.set_ylabel("ACE (victim vs replica)")
    legend_outside(ax, handles=[Line2D([], [], color=c, label=f) for f, c in FAMILY_COLORS.items()]
                   + [Line2D([], [], color="gray", ls=":", label="floor (victim entropy)")], fontsize=7)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def stealing_matrix_figure(models: list[str], ace: dict, path: Path, title: str) -> Path:
    """Table 2 as a heatmap: victims (rows) x replicas (columns), ACE in each cell."""
    grid = np.array([[ace.get((v, r), np.nan) for r in models] for v in models])
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(models), 1.2 + 0.8 * len(models)))
    im = ax.imshow(grid, cmap="viridis")
    for i in range(len(models)):
        for j in range(len(models)):
            ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=8, color="w")
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right")
    ax.set_yticks(range(len(models)), models)
    ax.set_xlabel("replica")
    ax.set_ylabel("victim")
    fig.colorbar(im, ax=ax, label="ACE")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
