"""Every task's figure at quick size: titles inside the figure (a long ``npz:`` dataset name shortened to its
file name, long titles wrapped), legends outside the data."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Text

from nas_jax.report import plots

DATASET = "npz:/very/long/path/to/some/experiments/directory/with/a/deep/tree/cifar10-sample.npz"
QUICK4 = [("darts", "nas"), ("snas", "nas"), ("resnet", "manual"), ("vgg", "manual")]  # the main job's victims
QUICK2 = [("darts", "nas"), ("resnet", "manual")]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting code saves, kept open for inspection."""
    kept, close = [], plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def _numeric(text: str) -> bool:
    try:
        float(text.replace("−", "-").replace("%", "").replace("$", "").replace("\\mathdefault{", "").rstrip("}"))
    except ValueError:
        return False
    return True


def layout_problems(fig) -> list[str]:
    """Texts drawn outside the figure, legends overlapping a panel's data area, ``npz:`` paths left in, empty
    panels, panels without axis labels (an x label may be left out where the ticks name models), overlapping
    tick labels."""
    fig.canvas.draw()  # at the figure's own dpi, in which fig.bbox is measured
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    problems = []
    titles = [t for t in [fig._suptitle] + [ax.title for ax in fig.axes] if t is not None and t.get_text()]
    for text in fig.findobj(Text):
        if "npz:" in text.get_text():
            problems.append(f"path in text {text.get_text()!r}")
    for text in titles:
        e = text.get_window_extent(renderer)
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
            problems.append(f"title {text.get_text()!r} at {e.bounds} outside the figure {box.bounds}")
    for ax in fig.axes:  # a panel title never runs into another panel
        if ax.title.get_text():
            e = ax.title.get_window_extent(renderer)
            for other in fig.axes:
                if other is not ax and other.get_visible() and other.axison and \
                        e.overlaps(other.get_tightbbox(renderer)):
                    problems.append(f"title {ax.title.get_text()!r} on another panel")
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # everything drawn, ticks in view only
    if drawn.x0 < box.x0 - 1 or drawn.x1 > box.x1 + 1 or drawn.y0 < box.y0 - 1 or drawn.y1 > box.y1 + 1:
        problems.append(f"drawn artists span {drawn.bounds}, outside the figure {box.bounds}")
    for ax in fig.axes:
        if not (ax.get_visible() and ax.axison):
            continue
        name = ax.get_title() or fig._suptitle and fig._suptitle.get_text()
        if not (ax.lines or ax.patches or ax.collections or ax.images or ax.containers):
            problems.append(f"panel {name!r} is empty")
        if not ax.get_ylabel() and ax.yaxis.get_visible() and any(t.get_text() for t in ax.get_yticklabels()):
            problems.append(f"panel {name!r} has no y-axis label")
        categorical = any(t.get_text() and not _numeric(t.get_text()) for t in ax.get_xticklabels())
        if not ax.get_xlabel() and not categorical and any(t.get_text() for t in ax.get_xticklabels()):
            problems.append(f"panel {name!r} has no x-axis label")
        for axis in (ax.get_xticklabels(), ax.get_yticklabels()):
            boxes = [t.get_window_extent(renderer) for t in axis if t.get_text() and t.get_visible()]
            if any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
                problems.append(f"panel {name!r}: tick labels overlap")
                break
    legends = [lg for ax in fig.axes if (lg := ax.get_legend()) is not None] + list(fig.legends)
    for legend in legends:
        e = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible() and ax.axison and e.overlaps(ax.get_window_extent(renderer)):
                problems.append(f"legend {[t.get_text() for t in legend.get_texts()]} on a panel")
    return problems


def check(figures, path):
    assert path.exists()
    (fig,) = figures[-1:]
    assert layout_problems(fig) == [], path.name


def test_long_title_is_wrapped_inside_the_figure(figures, tmp_path):
    title = f"PGD L∞ ε=8/255 on {DATASET}, a title longer than any figure of two bars could hold in one line"
    rows = [{"model": m, "family": f, "a": 0.9, "b": 0.4} for m, f in QUICK2]
    check(figures, plots.bar_panels(rows, [("a", "most likely"), ("b", "least likely")], tmp_path / "a.png",
                                    ylabel="ASR (%)", title=title))
    suptitle = figures[-1]._suptitle.get_text()
    assert "cifar10-sample.npz" in suptitle and "\n" in suptitle  # shortened to the file name, then wrapped
    assert plots.short_name("npz:/a/b/c.npz and genotype:runs/x/genotype.json") == "c.npz and x"
    assert plots.short_name("genotype:/cells/mycell.json, resnet") == "mycell, resnet"
    assert plots.short_name("cifar10 resnet") == "cifar10 resnet"


def test_every_task_figure_fits(figures, tmp_path):
    from nas_jax.analysis.cells import draw_genotype
    from nas_jax.study.phases import BN_MODES, PHASES
    from nas_jax.tasks.adv_train import adv_train_figure
    from nas_jax.tasks.backdoor import backdoor_asr_cad_figure, backdoor_neurons_figure
    from nas_jax.tasks.grad_variance import grad_variance_figure
    from nas_jax.tasks.landscape import contour_figures
    from nas_jax.tasks.membership import membership_roc_figure
    from nas_jax.tasks.ntk import ntk_condition_figure, ntk_correlation_figure
    from nas_jax.tasks.poison import poison_cad_figure
    from nas_jax.tasks.stealing import stealing_ace_budget_figure, stealing_matrix_figure
    from nas_jax.train.zoo import slug

    rng = np.random.default_rng(0)
    rows = [{"model": m, "family": f, "asr_most_likely": 0.9, "asr_least_likely": 1.0} for m, f in QUICK4]
    check(figures, plots.bar_panels(rows, [("asr_most_likely", "most likely"), ("asr_least_likely", "least likely")],
                                    tmp_path / "pgd_asr.png", ylabel="ASR (%)", title=f"PGD ε=8/255 on {DATASET}"))
    curves = {m: (f, list(np.linspace(0.1, 1.0, 5))) for m, f in QUICK4}
    check(figures, plots.family_curves([1, 2, 4, 8, 16], curves, tmp_path / "sweep.png", xlabel="ε", ylabel="ASR",
                                       title=f"untargeted PGD, step ε/3, {DATASET}"))
    check(figures, plots.family_histograms({"nas": [0, 1, 2, 2], "manual": [0, 0, 1, 2]}, {"nas": 2, "manual": 2},
                                           tmp_path / "common.png", title="least-likely PGD ε=8/255, 4 common inputs"))
    bd_rows = [{"model": m, "family": f, "asr": 0.95, "cad": 0.02, "n_neuron": n} for m, f in QUICK2 for n in (1, 2)]
    check(figures, backdoor_asr_cad_figure(bd_rows[::2], tmp_path / "bd.png", title=f"trojannn_n2 on {DATASET}"))
    check(figures, backdoor_neurons_figure(bd_rows, tmp_path / "bdn.png", title=f"TrojanNN vs n_neuron on {DATASET}"))
    at_rows = [{"model": m, "family": f, "accuracy_drop": 0.02, "accuracy_drop_zoo": 0.03, "asr": 0.2,
                "asr_standard": 1.0} for m, f in QUICK2]
    check(figures, adv_train_figure(at_rows, tmp_path / "at.png", title=f"adversarial training on {DATASET}"))
    fr = [0.0, 0.1, 0.2, 0.4]
    p_rows = [{"model": m, "family": f, **{f"cad_{p:g}": p / 5 for p in fr}} for m, f in QUICK2]
    check(figures, poison_cad_figure(p_rows, fr, tmp_path / "poison.png",
                                   title=f"label-flip poisoning on {DATASET}, 8 epochs"))
    gv = [{"model": m, "family": f, "bn": bn, "phase": ph, "trace_cov": 1e-3 + rng.random()}
          for m, f in QUICK2 for bn in BN_MODES for ph in PHASES]
    check(figures, grad_variance_figure(gv, "trace_cov", tmp_path / "gv.png",
                                                 f"gradient variance (trace_cov) on {DATASET}, n=64",
                                                      bn_modes=BN_MODES, phases=PHASES))
    nt = [{"model": m, "family": f, "bn": "calibrated", "phase": ph, "log10_cond": 3 + rng.random()}
          for m, f in QUICK2 for ph in ("init", "trained")]
    check(figures, ntk_condition_figure(nt, tmp_path / "ntk.png", f"NTK condition number on {DATASET}"))
    asr = {m: {"asr_most_likely": 0.5, "asr_least_likely": 0.2} for m, _ in QUICK2}
    check(figures, ntk_correlation_figure(nt, asr, tmp_path / "ntkc.png", f"NTK κ vs PGD ASR, {DATASET}"))
    st = [{"model": m, "family": f, "budget": b, "ace": 1.0 / b ** 0.2, "victim_entropy": 0.1}
          for m, f in QUICK2 for b in (250, 500, 1000)]
    check(figures, stealing_ace_budget_figure(st, tmp_path / "st.png", f"Knockoff (random, soft labels), "
                                              f"architecture-aware, {DATASET}"))
    models = [m for m, _ in QUICK2]
    check(figures, stealing_matrix_figure(models, {(v, r): 0.5 for v in models for r in models}, tmp_path / "stm.png",
                                          f"Knockoff ACE at 1000 queries, {DATASET}"))
    roc = [{"model": m, "family": f, "fpr": np.linspace(0, 1, 9), "tpr": np.linspace(0, 1, 9) ** 0.8, "auc": 0.55,
            "baseline_auc": 0.52} for m, f in QUICK2]
    check(figures, membership_roc_figure(roc, tmp_path / "mi.png", f"label-only MI (HSJ l2) on {DATASET}"))
    check(figures, draw_genotype("darts", tmp_path / "cells.png"))
    grid_dir = tmp_path / "landscape" / slug(DATASET)
    grid_dir.mkdir(parents=True)
    for m, f in QUICK2:
        a = np.linspace(-1, 1, 5)
        np.savez(grid_dir / f"{m}_weights_1.npz", alphas=a, betas=a, family=f,
                 losses=(a[:, None, None] ** 2 + a[None, :, None] ** 2) * np.arange(1, 4))
    paths = contour_figures(tmp_path, "weights_1", DATASET, models)
    assert len(paths) == 2 and all(p.exists() for p in paths)
    for fig in figures[-2:]:
        assert layout_problems(fig) == []
