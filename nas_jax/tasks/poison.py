"""Task ``poison``: label-flipping model poisoning, CAD against the poisoning fraction (§3.2, Eqn 11, Figure 6;
docs/protocol.md §e.3).

For every model and fraction p of ``config.poison.fractions`` (plus the reference p = 0) the labels are flipped
(:mod:`nas_jax.attacks.poisoning`) and a fresh model trained with ``config.train`` (50 epochs in the paper preset);
CAD(p) = acc(p = 0) − acc(p) on the full test set. Runs are :func:`nas_jax.study.runs.cached_training` runs under
``{workdir}/runs/poison/{dataset}/{model}/p{p}/``. One ``task: "poison"`` record per (model, p) and
``{workdir}/figures/poison_cad.png`` (family means, individual models faint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax

from nas_jax.attacks.poisoning import clean_accuracy_drop, poison_dataset
from nas_jax.data import load_dataset
from nas_jax.models.registry import model_family
from nas_jax.report import plots, results
from nas_jax.report.study import DIFFERENCE, Metric, row_reader
from nas_jax.report.summary import Summary, at_largest
from nas_jax.report.tables import format_table
from nas_jax.study.runs import cached_training, task_run_dir
from nas_jax.study.seam import Settings, Task
from nas_jax.train import zoo


@dataclasses.dataclass(frozen=True)
class PoisonSettings(Settings):
    """The poisoning fractions p of Figure 6 (docs/protocol.md §e.3): paper, five within its 0–40% range (the
    artifact's final grid {0, .1, .2, .4} plus 0.05); quick, the artifact's four (time). p = 0, the reference that
    CAD is measured against, is always added; the fractions are kept sorted and unique."""

    PRESETS: ClassVar[dict] = {"quick": {"fractions": (0.0, 0.1, 0.2, 0.4)}}
    fractions: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4)

    def __post_init__(self):
        fractions = tuple(sorted({0.0, *(float(p) for p in self.fractions)}))
        bad = [p for p in fractions if not 0.0 <= p < 1.0]
        if bad:
            raise ValueError(f"fractions {bad} must lie in [0, 1), e.g. (0.05, 0.1, 0.2, 0.4).")
        object.__setattr__(self, "fractions", fractions)


def run(config, workdir: str | Path) -> list[dict]:
    fractions = PoisonSettings.read("poison", config.poison).fractions
    dataset = load_dataset(config.dataset, config.data_dir or None)
    main = jax.process_index() == 0
    records, rows = [], []
    for i, name in enumerate(config.models):
        family = model_family(name)
        print(f"[{i + 1}/{len(config.models)}] {name}: training at p = {fractions}", flush=True)
        clean_acc, row = None, {"model": name, "family": family}
        for p in fractions:
            start = results.now()
            polluted, flipped = poison_dataset(dataset, p, config.seed)
            run_dir = task_run_dir(workdir, "poison", config, name, f"p{p:g}")
            spec = {"poison": {"fraction": p, "n_flipped": len(flipped), "seed": int(config.seed)}}
            res = cached_training(config, name, polluted, run_dir, spec, need_variables=False,
                                  label=f"{name} p={p:g}")
            if p == 0.0:
                clean_acc = res.test_accuracy
            cad = clean_accuracy_drop(clean_acc, res.test_accuracy)
            metrics = {"cad": cad, "test_accuracy": res.test_accuracy, "clean_accuracy": clean_acc,
                       "n_flipped": len(flipped)}
            epochs = zoo.model_config(config, name).train.epochs
            setting = {"family": family, "fraction": p, "epochs": epochs, "run_dir": str(run_dir)}
            records.append(results.store(workdir, config, task="poison", model=name, metrics=metrics,
                                         n=len(dataset.y_test), setting=setting, start_time=start))
            row[f"cad_{p:g}"] = cad
            print(f"  {name} p={p:g}: test accuracy {res.test_accuracy:.3f}, CAD {cad:+.3f} "
                  f"({len(flipped)} labels flipped)", flush=True)
        row["clean_accuracy"] = clean_acc
        rows.append(row)
    if main:
        columns = [("model", "model", None), ("family", "family", None), ("clean_accuracy", "acc p=0", ".3f")]
        columns += [(f"cad_{p:g}", f"CAD p={p:g}", "+.3f") for p in fractions if p > 0]
        print(format_table(rows, columns))
        fig = poison_cad_figure(rows, fractions, Path(workdir) / "figures" / "poison_cad.png",
                       title=f"label-flip poisoning on {config.dataset}, {config.train.epochs} epochs, CAD over n = "
                             f"{len(dataset.y_test)} test inputs, seed {config.seed}")
        print(f"figure: {fig}")
    return records


def poison_cad_figure(rows: list[dict], fractions: list[float], path: Path, title: str = "") -> Path:
    """Figure 6: CAD (percentage points) against p, one thick line per family mean and a faint line per model."""
    fig, ax = plots.plt.subplots(figsize=(6.2, 3.4))
    plots.family_means(ax, [100 * p for p in fractions], {
        f: [[100 * r[f"cad_{p:g}"] for p in fractions] for r in rows if r["family"] == f] for f in plots.FAMILY_COLORS})
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("poisoning fraction p (%)")
    ax.set_ylabel("clean accuracy drop (percentage points)")
    plots.legend_outside(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return plots.save_figure(fig, path)


TABLE4 = Summary((("poison_cad", "poison CAD", "+.1%"),), at_largest("poison", "fraction", "poison_cad", "cad",
                                                                  "poison_fraction", keep=lambda s: s["fraction"] > 0),
                 place=5, note=lambda rows: (p := sorted({r["poison_fraction"] for r in rows if "poison_fraction" in r}))
                 and f"poison CAD: at p = {', '.join(f'{f:g}' for f in p)}.")


TASK = Task("poison", run, settings=PoisonSettings, cost_minutes=9.5, metrics=(
    Metric("poison_cad", "poisoning CAD, largest p (Fig. 6)", row_reader("poison_cad"), +1, 1, bounds=DIFFERENCE,
           paper_gap=0.05, summary=TABLE4),))
