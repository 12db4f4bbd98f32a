"""Task ``stealing``: Knockoff Nets functionality stealing (§3.2, Figure 9 and Table 2; docs/protocol.md §e.5).

Architecture-aware (Figure 9): every victim of ``config.models`` into a fresh replica of its own architecture at
each budget of ``stealing.budgets``. Architecture-agnostic (Table 2): every victim of ``stealing.matrix_models``
into every replica of that list at ``stealing.matrix_budget`` (pairs the aware setting ran are reused). The victim
answers with probabilities only (eval mode); the pool is its training set, augmented once, unlabelled (``adaptive``
uses the classes as arms). One ``task: "stealing"`` record per (victim, replica, budget): ``ace``, its floor
``victim_entropy``, ``kl`` = ace − floor, ``replica_accuracy``, ``agreement``. Figures
``{workdir}/figures/stealing_ace_budget.png`` and ``{workdir}/figures/stealing_matrix.png``; thieves train
resumably under ``{workdir}/runs/stealing/{dataset}/{victim}/{replica}/{sampling}_{reward}_{labels}_{budget}/``
(:func:`nas_jax.study.runs.task_run_dir`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import ml_collections
import numpy as np
from matplotlib.lines import Line2D

from nas_jax.attacks.nes import BlackBox
from nas_jax.attacks.stealing import KnockoffConfig, knockoff, make_pool, stealing_metrics
from nas_jax.attacks.stealing import victim_probabilities as probabilities
from nas_jax.data import load_dataset
from nas_jax.models.registry import build_from_config, model_family
from nas_jax.report import plots, results
from nas_jax.report.study import POSITIVE, Metric, row_reader
from nas_jax.report.summary import Summary, at_largest
from nas_jax.report.tables import format_table
from nas_jax.study.runs import task_run_dir
from nas_jax.study.seam import Settings, Task, model_names, run_only
from nas_jax.train import trainer, zoo


@dataclasses.dataclass(frozen=True)
class ThiefSettings(Settings):
    """The replica's ``train`` section (docs/protocol.md §d "Knockoff thief"; Table 5): SGD at lr 0.025
    constant, momentum 0.9, weight decay 5e-4, batch 96, no clipping or augmentation [artifact]; 50 epochs
    (quick 10)."""

    epochs: int = 50
    lr: float = 0.025
    lr_schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 0.0
    batch_size: int = 96
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0


@dataclasses.dataclass(frozen=True)
class StealingSettings(Settings):
    """Knockoff Nets (§3.2, Table 5; docs/protocol.md §e.5), defaults the paper preset's (the module docstring
    and configs/stealing.py say what each does): ``sampling`` 'adaptive' [paper] | 'random' [artifact],
    ``reward`` 'all' [paper] | 'cert' | 'div' | 'loss', ``labels`` 'soft' [paper] | 'hard'; ``pool_dataset``
    '': the victim's training images. quick: budgets within its pool of 1,437 digits, 10 thief epochs."""

    PRESETS: ClassVar[dict] = {"quick": {"budgets": (250, 500, 1000), "matrix_models": ("darts", "resnet"),
                                         "matrix_budget": 1000, "thief": ThiefSettings(epochs=10)}}
    budgets: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000)
    matrix_models: tuple[str, ...] = model_names(("resnet", "densenet", "darts", "enas"))
    matrix_budget: int = 8000
    sampling: str = "adaptive"
    reward: str = "all"
    labels: str = "soft"
    pool_dataset: str = ""
    pool_augment: bool = True
    query_batch_size: int = run_only(96)
    scan_chunk: int = run_only(250)
    thief_seed_offset: int = 1
    thief: ThiefSettings = ThiefSettings()

    def __post_init__(self):
        object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
        if self.matrix_budget < 0:
            raise ValueError(f"matrix_budget={self.matrix_budget} must be >= 0 (0: no matrix).")
        for budget in (*self.budgets, self.matrix_budget or 1):
            self.knockoff(budget)  # its own checks

    def knockoff(self, budget: int) -> KnockoffConfig:
        """One Knockoff run at ``budget`` queries."""
        return KnockoffConfig(int(budget), self.sampling, self.reward, self.labels, self.query_batch_size,
                              self.scan_chunk)


def thief_config(config, sc: StealingSettings, replica: str) -> ml_collections.ConfigDict:
    """The replica's training config: the victim config with ``sc.thief`` as its ``train`` section and its own
    seed (a replica of the victim's architecture must not start from the victim's initialisation)."""
    tc = ml_collections.ConfigDict(config.to_dict())
    for key, value in dataclasses.asdict(sc.thief).items():
        tc.train[key] = value
    tc.model = replica
    tc.seed = config.seed + sc.thief_seed_offset
    return tc


def query_pool(config, sc: StealingSettings, dataset) -> tuple[np.ndarray, np.ndarray]:
    """The transfer set: the victim's training images (default) or ``sc.pool_dataset``'s, passed once through
    crop/flip augmentation [artifact] when ``sc.pool_augment``; and their classes (arms only)."""
    source = load_dataset(sc.pool_dataset, config.data_dir or None) if sc.pool_dataset else dataset
    if source.image_shape != dataset.image_shape:
        raise ValueError(f"pool_dataset {sc.pool_dataset!r} has images of shape {source.image_shape}, the victim's "
                         f"are {dataset.image_shape}; choose a transfer set of the same shape.")
    images = source.x_train
    if sc.pool_augment:
        images = make_pool(images, config.train.crop_padding, config.train.flip, config.seed)
    return images, source.y_train


def steal(config, sc: StealingSettings, victim, replica: str, budget: int, pool, pool_labels, dataset,
          victim_test_probs, workdir: Path, progress: bool = True) -> dict:
    """One Knockoff run and its metrics; the victim is reachable only as a probability oracle."""
    kcfg = sc.knockoff(budget)
    model = build_from_config(replica, config.arch, dataset.num_classes, dataset.mean, dataset.std)
    key = jax.random.fold_in(jax.random.key(config.seed), budget)  # the same draws for every victim (G5)
    setting = f"{sc.sampling}_{sc.reward}_{sc.labels}_{budget}"
    run_dir = task_run_dir(workdir, "stealing", config, victim.name, zoo.slug(replica), setting)
    out = knockoff(BlackBox(victim.model.apply, victim.variables), pool, pool_labels, dataset, model,
                   thief_config(config, sc, replica), key, kcfg, run_dir, progress=progress,
                   name=f"{replica} <- {victim.name} ({budget} queries)")
    metrics = stealing_metrics(victim_test_probs, trainer.model_logits(model, out["variables"], dataset.x_test),
                               dataset.y_test)
    return {**metrics, "queries": out["queries"]}


def _print_tables(sc: StealingSettings, aware: list[dict], ace: dict, matrix_models: list[str]) -> None:
    by_victim: dict[str, dict] = {}
    for r in aware:
        row = by_victim.setdefault(r["model"], {"model": r["model"], "family": r["family"],
                                                "victim_accuracy": r["victim_accuracy"], "floor": r["victim_entropy"]})
        row[f"ace_{r['budget']}"] = r["ace"]
        row[f"agree_{r['budget']}"] = r["agreement"]
    budgets = sorted({r["budget"] for r in aware})
    if by_victim:
        print("Architecture-aware (Figure 9): ACE by query budget; floor = victim's mean prediction entropy")
        print(format_table(list(by_victim.values()), [("model", "victim", None), ("family", "family", None),
                                                      ("victim_accuracy", "victim acc", ".3f"),
                                                      ("floor", "floor", ".3f")]
                           + [(f"ace_{b}", f"ACE@{b}", ".3f") for b in budgets]
                           + [(f"agree_{budgets[-1]}", f"agree@{budgets[-1]}", ".3f")]))
        for family in ("nas", "manual"):
            for b in budgets:
                vals = [r["ace"] for r in aware if r["family"] == family and r["budget"] == b]
                if vals:
                    n = f"{len(vals)} model" + "s" * (len(vals) != 1)
                    print(f"  {family} ACE@{b}: mean {np.mean(vals):.3f}, std {np.std(vals):.3f} ({n})")
    if matrix_models:
        print(f"Architecture-agnostic (Table 2): ACE at {sc.matrix_budget} queries, victim (rows) x replica")
        table = [{"victim": v, **{r: ace.get((v, r)) for r in matrix_models}} for v in matrix_models]
        print(format_table(table, [("victim", "victim \\ replica", None)] + [(r, r, ".3f") for r in matrix_models]))


def run(config, workdir: str | Path) -> list[dict]:
    sc, workdir = StealingSettings.read("stealing", config.stealing), Path(workdir)
    dataset = load_dataset(config.dataset, config.data_dir or None)
    matrix_models = list(sc.matrix_models) if sc.matrix_budget > 0 else []
    names = list(dict.fromkeys(list(config.models) + matrix_models))
    for name in names:
        model_family(name)
    entries = {}
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] victim {name}", flush=True)
        entries[name] = zoo.get_or_train(config, name, dataset)
    pool, pool_labels = query_pool(config, sc, dataset)
    jobs = [(v, v, b) for v in config.models for b in sc.budgets]
    jobs += [(v, r, sc.matrix_budget) for v in matrix_models for r in matrix_models if (v, r, sc.matrix_budget)
             not in jobs]
    records, rows, test_probs = [], [], {}
    for victim_name, replica, budget in jobs:
        victim = entries[victim_name]
        if victim_name not in test_probs:  # evaluation only: not charged to the attack's budget
            test_probs[victim_name] = probabilities(BlackBox(victim.model.apply, victim.variables), dataset.x_test,
                                                    config.train.eval_batch_size)
        start = results.now()
        metrics = steal(config, sc, victim, replica, budget, pool, pool_labels, dataset, test_probs[victim_name], workdir)
        setting = {"family": victim.family, "replica": replica, "replica_family": model_family(replica),
                   "aware": replica == victim_name, "budget": int(budget), "sampling": sc.sampling,
                   "reward": sc.reward, "labels": sc.labels, "pool": sc.pool_dataset or "victim_train",
                   "pool_augment": sc.pool_augment, "thief_epochs": sc.thief.epochs}
        records.append(results.store(workdir, config, task="stealing", model=victim_name, metrics=metrics,
                                     n=len(dataset.y_test), setting=setting, start_time=start))
        rows.append({"model": victim_name, "family": victim.family, "replica": replica, "budget": int(budget),
                     **metrics})
        print(f"  {replica} <- {victim_name} @ {budget}: ACE {metrics['ace']:.3f} (floor "
              f"{metrics['victim_entropy']:.3f}), agreement {metrics['agreement']:.3f}, replica acc "
              f"{metrics['replica_accuracy']:.3f}", flush=True)
    if jax.process_index() == 0:
        aware = [r for r in rows if r["replica"] == r["model"]]
        ace = {(r["model"], r["replica"]): r["ace"] for r in rows if r["budget"] == sc.matrix_budget}
        _print_tables(sc, aware, ace, matrix_models)
        fig_dir = workdir / "figures"
        if aware:
            title = (f"Knockoff ({sc.sampling}, {sc.labels} labels), architecture-aware, {config.dataset}, ACE over "
                     f"n = {len(dataset.y_test)} test inputs, seed {config.seed}")
            print(f"figure: {stealing_ace_budget_figure(aware, fig_dir / 'stealing_ace_budget.png', title)}")
        if matrix_models:
            title = (f"Knockoff ACE at {sc.matrix_budget} queries, {config.dataset}, n = {len(dataset.y_test)} test "
                     f"inputs, seed {config.seed}")
            fig = stealing_matrix_figure(matrix_models, ace, fig_dir / "stealing_matrix.png", title)
            print(f"figure: {fig}")
    return records


def stealing_ace_budget_figure(rows: list[dict], path: Path, title: str) -> Path:
    """Figure 9 style: ACE against the query budget, one line per victim coloured by family (floors dotted)."""
    fig, ax = plots.plt.subplots(figsize=(7.0, 3.8))
    for victim in sorted({r["model"] for r in rows}):
        pts = sorted((r["budget"], r["ace"], r["victim_entropy"], r["family"]) for r in rows if r["model"] == victim)
        color = plots.FAMILY_COLORS[pts[0][3]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, alpha=0.85)
        ax.annotate(victim, (pts[-1][0], pts[-1][1]), fontsize=6, xytext=(3, 0), textcoords="offset points")
        ax.axhline(pts[0][2], color=color, lw=0.6, ls=":", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("query budget")
    ax.set_ylabel("ACE (victim vs replica)")
    plots.legend_outside(ax, handles=[Line2D([], [], color=c, label=f) for f, c in plots.FAMILY_COLORS.items()]
                   + [Line2D([], [], color="gray", ls=":", label="floor (victim entropy)")], fontsize=7)
    ax.set_title(title, fontsize=9)
    return plots.save_figure(fig, path)


def stealing_matrix_figure(models: list[str], ace: dict, path: Path, title: str) -> Path:
    """Table 2 as a heatmap: victims (rows) x replicas (columns), ACE in each cell."""
    grid = np.array([[ace.get((v, r), np.nan) for r in models] for v in models])
    fig, ax = plots.plt.subplots(figsize=(1.6 + 0.9 * len(models), 1.2 + 0.8 * len(models)))
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
    return plots.save_figure(fig, path)


TABLE4 = Summary((("ace", "Knockoff ACE", ".3f"),), at_largest("stealing", "budget", "ace", "ace", "ace_budget",
                                                          keep=lambda s: s.get("aware")), place=4,
                 note=lambda rows: (b := sorted({r["ace_budget"] for r in rows if "ace_budget" in r})) and
                 f"Knockoff ACE: architecture-aware, at {', '.join(map(str, b))} queries.")


TASK = Task("stealing", run, settings=StealingSettings, cost_minutes=9.0, metrics=(
    Metric("ace", "Knockoff ACE, aware (Fig. 9)", row_reader("ace"), -1, 1, bounds=POSITIVE, paper_gap=0.3,
           summary=TABLE4),))
