"""Task ``landscape``: loss contours in parameter and input space (§4, Eqns 12–13, Figure 11; docs/protocol.md §f.1–f.2).

For every victim and space: contours of ``n_images`` common test images (same images and input-space directions
for every model, G5), smoothness summaries as ``task: "landscape"`` records, grids in
``{workdir}/landscape/{dataset}/{model}_{space}_{radius}.npz``, Figure 11-style panels
``{workdir}/figures/landscape_{space}_{radius}.png`` (a row per dataset, a column per model, shared levels) and
``landscape_{space}_{radius}_{dataset}_images.png`` (every model's first contours, one per image as the artifact).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from nas_jax.analysis import landscape
from nas_jax.data import to_float
from nas_jax.report import plots, results
from nas_jax.report.study import Metric
from nas_jax.report.tables import format_table
from nas_jax.study import victims
from nas_jax.study.seam import Settings, Task, run_only
from nas_jax.train.zoo import slug


@dataclasses.dataclass(frozen=True)
class LandscapeSettings(Settings):
    """Figure 11's grids (:mod:`nas_jax.analysis.landscape`): ``first_conv`` (the authors') or ``filter_normalized``
    directions (``param_radius`` 0: the scheme's default), input space on ``input_radii`` (artifact code 0.02,
    README 0.2); ``resolution`` odd (0: the default); ``n_images`` (artifact: 20) contoured one by one or in groups
    of ``images_per_contour``; ``chunk`` grid points per batch; ``plot_contour``: the contour the panel shows."""

    PRESETS: ClassVar[dict] = {"quick": {"resolution": 21, "n_images": 4, "chunk": 16}}
    spaces: tuple = ("param", "input")
    directions: str = "first_conv"
    param_radius: float = 0.0
    input_radii: tuple = (0.02, 0.2)
    resolution: int = 0
    n_images: int = 20
    images_per_contour: int = 1
    chunk: int = run_only(64)
    plot_contour: int = run_only(0)

    def __post_init__(self):
        unknown = [s for s in self.spaces if s not in landscape.SPACES]
        if unknown or not self.spaces:
            raise ValueError(f"unknown spaces {list(self.spaces)}; valid: {landscape.SPACES}.")
        if self.directions not in landscape.DIRECTIONS:
            raise ValueError(f"unknown directions {self.directions!r}; valid: {landscape.DIRECTIONS}.")
        if self.resolution and self.resolution % 2 == 0:
            raise ValueError(f"resolution={self.resolution} must be odd (the grid's centre is the model itself).")


def contour_images(n_test: int, n: int, seed: int) -> np.ndarray:
    """The seeded test indices contoured for every model (G5; the artifact used seed 40)."""
    return np.random.default_rng([seed, 40]).permutation(n_test)[:n]


def _tag(space: str, radius: float) -> str:
    return f"{space}_{radius:g}"


def _save_grid(workdir: Path, dataset: str, model: str, family: str, contour: landscape.Contour, radius: float):
    path = workdir / "landscape" / slug(dataset) / f"{slug(model)}_{_tag(contour.space, radius)}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, alphas=contour.alphas, betas=contour.betas, losses=contour.losses, family=family,
             directions=contour.directions)
    return path


def run(config, workdir: str | Path) -> list[dict]:
    lc = LandscapeSettings.read("landscape", config.landscape)
    workdir = Path(workdir)
    dataset, entries = victims.load_victims(config)
    idx = contour_images(len(dataset.y_test), lc.n_images, config.seed)
    x, y = to_float(dataset.x_test[idx]), dataset.y_test[idx]
    key = jax.random.key(config.seed)
    p_radius, p_res = landscape.DEFAULT_GRID[lc.directions]  # the parameter grid's defaults
    jobs = [("param", lc.param_radius or p_radius, lc.resolution or p_res)] if "param" in lc.spaces else []
    if "input" in lc.spaces:
        jobs += [("input", float(r), lc.resolution or landscape.DEFAULT_GRID["input"][1]) for r in lc.input_radii]
    records, rows = [], []
    for entry in entries:
        for space, radius, resolution in jobs:
            start = results.now()
            axis = landscape.grid(radius, resolution)
            if space == "param":
                d1, d2 = landscape.parameter_directions(lc.directions, jax.random.fold_in(key, 1), entry.model,
                                                        entry.variables, x.shape[1:])
                contour = landscape.parameter_contour(entry.model.apply, entry.variables, d1, d2, x, y, axis, axis,
                                                      chunk=lc.chunk, images_per_contour=lc.images_per_contour,
                                                      directions=lc.directions)
            else:
                contour = landscape.input_contour(entry.model.apply, entry.variables, x, y, jax.random.fold_in(key, 2),
                                                  axis, axis, chunk=lc.chunk, images_per_contour=lc.images_per_contour)
            metrics = landscape.smoothness(contour)
            setting = {"family": entry.family, "space": space, "directions": contour.directions, "radius": radius,
                       "resolution": resolution, "images_per_contour": lc.images_per_contour,
                       "n_contours": int(contour.losses.shape[-1])}
            records.append(results.store(workdir, config, task="landscape", model=entry.name, metrics=metrics,
                                         n=len(idx), setting=setting, start_time=start))
            if jax.process_index() == 0:
                _save_grid(workdir, config.dataset, entry.name, entry.family, contour, radius)
            rows.append({"model": entry.name, "family": entry.family, "grid": f"{space} ±{radius:g}", **metrics})
            print(f"  {entry.name} {space} ±{radius:g}: loss {metrics['loss_center']:.3f}, increase at r="
                  f"{metrics['radius']:g}: {metrics['increase_at_radius']:.4f}", flush=True)
    if jax.process_index() == 0:
        print(format_table(rows, [("model", "model", None), ("family", "family", None), ("grid", "grid", None),
                                  ("loss_center", "loss(0,0)", ".4f"), ("increase_at_radius", "Δloss @ r/2", ".4g"),
                                  ("increase_max", "Δloss max", ".4g"), ("curvature_d1", "curv d1", ".4g"),
                                  ("curvature_d2", "curv d2", ".4g")]))
        for space, radius, _ in jobs:
            for fig in contour_figures(workdir, _tag(space, radius), config.dataset, list(config.models),
                                       lc.plot_contour):
                print(f"figure: {fig}")
    return records


def _increase_at_smallest_radius(space: str):
    """The loss increase at the smallest radius measured in ``space`` (the paper's Figure 11 scale)."""
    def read(records, _row):
        own = [r for r in records if r["task"] == "landscape" and r.get("setting", {}).get("space") == space]
        if not own:
            return None
        radius = min(r["setting"]["radius"] for r in own)
        return float([r for r in own if r["setting"]["radius"] == radius][-1]["metrics"]["increase_at_radius"])

    return read


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
    fig, axes = plots.plt.subplots(len(datasets), len(cols), figsize=(1.2 + 3.0 * len(cols), 0.6 + 2.6 * len(datasets)),
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
    fig, axes = plots.plt.subplots(len(mine), k, figsize=(2.6 * k, 2.2 * len(mine)), squeeze=False, layout="constrained")
    for i, (m, g) in enumerate(mine):
        for c in range(k):
            _panel(axes[i][c], g["alphas"], g["betas"], g["losses"][..., c], f"{m} #{c}", str(g["family"]), space)
    fig.suptitle(f"loss contours per input image, {tag.replace('_', ' ±')}: {k} images per model (levels per "
                 "panel)", fontsize=9)
    out.append(plots.save_figure(fig, workdir / "figures" / f"landscape_{tag}_{ds}_images.png", dpi=130))
    return out


TASK = Task("landscape", run, settings=LandscapeSettings, cost_minutes=0.5, in_study=("quick", "paper"),
            study_overrides={"quick": ("landscape.input_radii=(0.02,)",)},  # the report reads the smallest radius
            metrics=(
    Metric("landscape_input", "input-space loss increase (Fig. 11b)", _increase_at_smallest_radius("input"), -1, 2,
           ".4f", None),
    Metric("landscape_param", "parameter-space loss increase (Fig. 11a)", _increase_at_smallest_radius("param"), -1,
           2, ".4f", None)))
