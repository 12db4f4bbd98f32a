"""Task ``poison``: label-flipping model poisoning, CAD against the poisoning fraction (§3.2, Eqn 11, Figure 6;
PROTOCOL §e.3).

For every model and every fraction p of ``config.poison.fractions`` (p = 0 is always added: it is the
reference), a fraction p of the training labels is flipped (:mod:`nas_jax.attacks.poisoning`) and a fresh
model is trained from scratch with ``config.train`` (50 epochs in the paper preset, not the victims' 600), then
CAD(p) = acc(p = 0) − acc(p) on the full test set. Runs are resumable and cached under
``{workdir}/runs/poison/{dataset}/{model}/p{p}/`` (a directory trained with another spec is refused). Prints a
table, appends one ``task: "poison"`` record per (model, p) and saves ``{workdir}/figures/poison_cad.png``
(CAD against p: NAS and manual family means, individual models faint).

:func:`cached_training` (train once into a run directory, or restore it) is shared by the ``backdoor`` and
``adv_train`` tasks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.attacks.poisoning import clean_accuracy_drop, poison_dataset
from nas_jax.data import Dataset, load_dataset
from nas_jax.models.registry import build_from_config, model_family
from nas_jax.report import plots, results
from nas_jax.report.tables import format_table
from nas_jax.train import trainer, zoo

# ----------------------------------------------------------------------------
# Cached training runs (shared with the backdoor and adv_train tasks)
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class TrainedRun:
    name: str
    model: nn.Module
    variables: dict | None  # None when restored with need_variables=False
    test_accuracy: float
    run_dir: Path


def task_run_dir(workdir: str | Path, task: str, config, model_name: str, *parts: str) -> Path:
    """``{workdir}/runs/{task}/{dataset}/{model}/{parts...}``: where a task's own trainings live."""
    return Path(workdir, "runs", task, zoo.slug(config.dataset), zoo.slug(model_name), *parts)


def cached_training(config, model_name: str, dataset: Dataset, run_dir: Path, spec_extra: dict, *,
                    need_variables: bool = True, batch_transform=None, initial_variables: dict | None = None,
                    progress: bool = True, label: str | None = None) -> TrainedRun:
    """Train ``model_name`` on ``dataset`` with ``config.train`` into ``run_dir`` (resumable), or restore the
    finished run. ``spec_extra`` (the attack's settings) joins the zoo's training spec in ``spec.json``: a
    directory trained with a different spec is refused with the differing keys."""
    config = zoo.model_config(config, model_name)
    model = build_from_config(model_name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
    run_dir = Path(run_dir)
    zoo.check_spec(run_dir, {**zoo.training_spec(config, model_name), **spec_extra})
    final = run_dir / "final.json"
    if final.exists():
        info = json.loads(final.read_text())
        variables = zoo.restore_variables(model, config, dataset, run_dir) if need_variables else None
        return TrainedRun(model_name, model, variables, info["test_accuracy"], run_dir)
    if initial_variables is not None:  # the train step donates its state: never hand it the caller's buffers
        initial_variables = jax.tree_util.tree_map(jnp.array, initial_variables)
    out = trainer.train(model, dataset, config, run_dir, progress=progress, name=label or model_name,
                        batch_transform=batch_transform, initial_variables=initial_variables)
    if jax.process_index() == 0:
        final.write_text(json.dumps({"test_accuracy": out["test_accuracy"], "step": out["step"]}))
    return TrainedRun(model_name, model, out["state"].variables, out["test_accuracy"], run_dir)


# ----------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------


def fractions_of(pc) -> list[float]:
    fractions = sorted({0.0, *(float(p) for p in pc.fractions)})
    bad = [p for p in fractions if not 0.0 <= p < 1.0]
    if bad:
        raise ValueError(f"poison.fractions {bad} must lie in [0, 1), e.g. (0.05, 0.1, 0.2, 0.4).")
    return fractions


def run(config, workdir: str | Path) -> list[dict]:
    fractions = fractions_of(config.poison)
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
            spec = {"poison": {"fraction": p, "n_flipped": int(len(flipped)), "seed": int(config.seed)}}
            res = cached_training(config, name, polluted, run_dir, spec, need_variables=False,
                                  label=f"{name} p={p:g}")
            if p == 0.0:
                clean_acc = res.test_accuracy
            cad = clean_accuracy_drop(clean_acc, res.test_accuracy)
            metrics = {"cad": cad, "test_accuracy": res.test_accuracy, "clean_accuracy": clean_acc,
                       "n_flipped": int(len(flipped))}
            epochs = zoo.model_config(config, name).train.epochs
            setting = {"family": family, "fraction": p, "epochs": epochs, "run_dir": str(run_dir)}
            record = results.make_record(config, task="poison", model=name, metrics=metrics,
                                         n=len(dataset.y_test), setting=setting, start_time=start)
            if main:
                results.append_record(workdir, record)
            records.append(record)
            row[f"cad_{p:g}"] = cad
            print(f"  {name} p={p:g}: test accuracy {res.test_accuracy:.3f}, CAD {cad:+.3f} "
                  f"({len(flipped)} labels flipped)", flush=True)
        row["clean_accuracy"] = clean_acc
        rows.append(row)
    if main:
        columns = [("model", "model", None), ("family", "family", None), ("clean_accuracy", "acc p=0", ".3f")]
        columns += [(f"cad_{p:g}", f"CAD p={p:g}", "+.3f") for p in fractions if p > 0]
        print(format_table(rows, columns))
        fig = plot_cad(rows, fractions, Path(workdir) / "figures" / "poison_cad.png",
                       title=f"label-flip poisoning on {config.dataset}, {config.train.epochs} epochs")
        print(f"figure: {fig}")
    return records


def plot_cad(rows: list[dict], fractions: list[float], path: Path, title: str = "") -> Path:
    """Figure 6: CAD (%) against p, one thick line per family mean and a faint line per model."""
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
    ax.set_ylabel("clean accuracy drop (%)")
    plots.legend_outside(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return plots._save(fig, path)
