"""Task ``adv_train``: PGD adversarial training of NAS and manual models (§5.2, Figure 14; docs/protocol.md §e.7).

For every model: adversarial training (:mod:`nas_jax.attacks.adversarial_training`: L∞ PGD-7, ε = 8/255,
α = 2/255, from the clean input [artifact] or ``random_start``, ``craft_mode``) with the ``config.train`` recipe
for ``adv_train.epochs``, from scratch (``init = 'scratch'``, 100 epochs in the paper preset [project]) or
fine-tuning the zoo victim (``'finetune'``). Metrics (Figure 14): ``accuracy_drop`` = clean accuracy of the
standard model of the AT recipe (the zoo victim where AT fine-tunes it or shares its recipe, else a standard
training run for the comparison) minus the AT model's; ``accuracy_drop_zoo`` against the Table 1 zoo victim;
``asr`` / ``asr_standard``: untargeted eval-mode PGD (ε = 8/255, α = 2/255, 7 iterations, 5 restarts) on
``n_inputs`` correctly classified test inputs against the AT / standard model.

Runs are cached and resumable under ``{workdir}/runs/adv_train/{dataset}/{model}/``. Prints a table, appends
one ``task: "adv_train"`` record per model and saves ``{workdir}/figures/adv_train.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import ml_collections
import numpy as np
from matplotlib.lines import Line2D

from nas_jax.attacks.adversarial_training import TrainingPGDConfig, adversarial_transform
from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.data import load_dataset
from nas_jax.models.registry import build_from_config, model_family
from nas_jax.report import plots, results
from nas_jax.report.tables import format_table
from nas_jax.study import victims
from nas_jax.study.evasion import run_pgd
from nas_jax.study.runs import cached_training, task_run_dir
from nas_jax.study.seam import Settings, Task, run_only
from nas_jax.train import zoo
from nas_jax.train.zoo import ZooEntry

INITS = ("scratch", "finetune")


@dataclasses.dataclass(frozen=True)
class AdvTrainSettings(Settings, TrainingPGDConfig):
    """Adversarial training (§5.2, Table 5; docs/protocol.md §e.7), defaults the paper preset's: the inner PGD (the
    fields of :class:`TrainingPGDConfig`, see the module docstring), ``init``, ``epochs``, ``lr`` (0:
    ``config.train.lr``), the robustness PGD (``eval_*``) on ``n_inputs`` inputs. quick: 2 epochs of fine-tuning
    at lr 0.01, 200 inputs."""

    PRESETS: ClassVar[dict] = {"quick": {"init": "finetune", "epochs": 2, "lr": 0.01, "n_inputs": 200,
                                         "batch_size": 200}}
    init: str = "scratch"
    epochs: int = 100
    lr: float = 0.0
    eval_eps: float = 8 / 255
    eval_step_size: float = 2 / 255
    eval_iterations: int = 7
    eval_restarts: int = 5
    n_inputs: int = run_only(1000)
    batch_size: int = run_only(250)

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {INITS}.")
        self.training(), self.evaluation()  # their own checks

    def training(self) -> TrainingPGDConfig:
        """The inner attack of the training steps (only its own fields)."""
        return TrainingPGDConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainingPGDConfig)})

    def evaluation(self) -> EvasionConfig:
        """The robustness PGD after training (eval mode)."""
        return EvasionConfig(eps=self.eval_eps, step_size=self.eval_step_size, iterations=self.eval_iterations,
                             restarts=self.eval_restarts)


def at_config(config, ac: AdvTrainSettings) -> ml_collections.ConfigDict:
    """``config`` with the adversarial-training epochs (and lr, when ``ac.lr > 0``)."""
    out = ml_collections.ConfigDict(config.to_dict())
    out.train.epochs = ac.epochs
    out.train_overrides = {}  # adv_train.epochs holds for every model
    if ac.lr > 0:
        out.train.lr = ac.lr
    return out


def _entry(run, family: str, dataset) -> ZooEntry:
    return ZooEntry(run.name, family, run.model, run.variables, dataset, run.test_accuracy, run.run_dir, [])


def standard_model(config, ac: AdvTrainSettings, atc, name: str, dataset, workdir) -> tuple[ZooEntry, str]:
    """The standardly trained reference and where it comes from ('zoo' or 'same_recipe')."""
    if ac.init == "finetune" or zoo.training_spec(atc, name) == zoo.training_spec(config, name):
        return zoo.get_or_train(config, name, dataset), "zoo"
    run = cached_training(atc, name, dataset, task_run_dir(workdir, "adv_train", config, name, "standard"),
                          {"adv_train": {"standard": True}}, label=f"{name} standard")
    return _entry(run, model_family(name), dataset), "same_recipe"


def zoo_accuracy(config, name: str, dataset) -> float:
    """Clean test accuracy (eval mode) of the Table 1 zoo victim ``name`` (trained first if missing)."""
    entry = zoo.get_or_train(config, name, dataset)
    return float(np.mean(victims.predictions(entry, dataset.x_test) == dataset.y_test))


def robustness(entry: ZooEntry, cfg: EvasionConfig, order: np.ndarray, n: int, key, batch_size: int):
    """(clean accuracy, untargeted PGD ASR, inputs attacked) on the first ``n`` correct inputs of ``order``."""
    x, y = entry.dataset.x_test, entry.dataset.y_test
    correct = victims.predictions(entry, x) == y
    idx = victims.correct_inputs(correct, order, n)
    out = run_pgd(entry, x[idx], y[idx], cfg, "untargeted", key, batch_size)
    return float(correct.mean()), float(out.success.mean()), len(idx)


def run(config, workdir: str | Path) -> list[dict]:
    ac = AdvTrainSettings.read("adv_train", config.adv_train)
    dataset = load_dataset(config.dataset, config.data_dir or None)
    atc = at_config(config, ac)
    train_attack = ac.training()
    train_pgd = train_attack.evasion_config()
    eval_pgd = ac.evaluation()
    order = victims.attack_order(len(dataset.y_test), config.seed)
    key = jax.random.key(config.seed)
    main = jax.process_index() == 0
    records, rows = [], []
    for i, name in enumerate(config.models):
        start = results.now()
        family = model_family(name)
        print(f"[{i + 1}/{len(config.models)}] {name}", flush=True)
        standard, reference = standard_model(config, ac, atc, name, dataset, workdir)
        model = build_from_config(name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
        spec = {"adv_train": {**dataclasses.asdict(train_attack), "init": ac.init,
                              "init_from": zoo.training_spec(config, name) if ac.init == "finetune" else None}}
        at = cached_training(atc, name, dataset, task_run_dir(workdir, "adv_train", config, name, "adversarial"),
                             spec, batch_transform=adversarial_transform(model, train_pgd, train_attack.craft_mode),
                             initial_variables=standard.variables if ac.init == "finetune" else None,
                             label=f"{name} adversarial")
        at_entry = _entry(at, family, dataset)
        acc_std, asr_std, _ = robustness(standard, eval_pgd, order, ac.n_inputs, key, ac.batch_size)
        acc_at, asr_at, n = robustness(at_entry, eval_pgd, order, ac.n_inputs, key, ac.batch_size)
        acc_zoo = acc_std if reference == "zoo" else zoo_accuracy(config, name, dataset)
        metrics = {"accuracy_drop": acc_std - acc_at, "accuracy_drop_zoo": acc_zoo - acc_at, "asr": asr_at,
                   "asr_standard": asr_std, "clean_accuracy": acc_at, "clean_accuracy_standard": acc_std,
                   "clean_accuracy_zoo": acc_zoo}
        setting = {"family": family, "reference": reference, "epochs": ac.epochs, **spec["adv_train"],
                   "eval": {"eps": ac.eval_eps, "step_size": ac.eval_step_size, "iterations": ac.eval_iterations,
                            "restarts": ac.eval_restarts}}
        setting.pop("init_from")
        records.append(results.store(workdir, config, task="adv_train", model=name, metrics=metrics, n=n,
                                     setting=setting, start_time=start))
        rows.append({"model": name, "family": family, **metrics})
        zoo_note = "" if reference == "zoo" else f" (zoo victim {acc_zoo:.3f})"
        print(f"  {name}: clean accuracy {acc_std:.3f}{zoo_note} -> {acc_at:.3f}, untargeted PGD ASR {asr_std:.1%} -> "
              f"{asr_at:.1%} on {n} inputs", flush=True)
    if main:
        print(format_table(rows, [("model", "model", None), ("family", "family", None),
                                  ("clean_accuracy_standard", "acc std", ".3f"), ("clean_accuracy", "acc AT", ".3f"),
                                  ("accuracy_drop", "acc drop", "+.3f"), ("clean_accuracy_zoo", "acc zoo", ".3f"),
                                  ("accuracy_drop_zoo", "drop vs zoo", "+.3f"), ("asr_standard", "ASR std", ".3f"),
                                  ("asr", "ASR AT", ".3f")]))
        fig = adv_train_figure(rows, Path(workdir) / "figures" / "adv_train.png",
                                       title=f"PGD adversarial training on {config.dataset}, n = {n} inputs per "
                                             f"model, seed {config.seed}")
        print(f"figure: {fig}")
    return records


def adv_train_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Figure 14: accuracy drop (bars: against the standard model of the AT recipe; grey ticks: against the zoo
    victim, where that differs) and untargeted PGD ASR after AT per model (black ticks: ASR before AT)."""
    rows, xs = plots.nas_first(rows), range(len(rows))
    fig, axes = plots.plt.subplots(1, 2, figsize=(2.8 + 0.9 * len(rows), 3.4))
    plots.model_bars(axes[0], rows, [100 * r["accuracy_drop"] for r in rows], "clean accuracy drop (points)")
    axes[0].axhline(0, color="grey", lw=0.5)
    extra = []
    if any(r.get("accuracy_drop_zoo", r["accuracy_drop"]) != r["accuracy_drop"] for r in rows):
        axes[0].scatter(xs, [100 * r["accuracy_drop_zoo"] for r in rows], marker="_", s=300, color="0.4")
        extra = [Line2D([], [], color="0.4", marker="_", ls="", ms=12, label="drop vs zoo victim")]
    plots.model_bars(axes[1], rows, [100 * r["asr"] for r in rows], "untargeted PGD ASR (%)")
    axes[1].scatter(xs, [100 * r["asr_standard"] for r in rows], marker="_", s=300, color="black",
                    label="standard training")
    axes[1].set_ylim(0, 105)
    handles = plots.family_patches(" (AT)") + axes[1].get_legend_handles_labels()[0] + extra
    plots.legend_outside(axes[1], handles=handles, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path)


TASK = Task("adv_train", run, settings=AdvTrainSettings, cost_minutes=6.0)
