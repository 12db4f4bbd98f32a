"""Task ``backdoor``: TrojanNN and BadNet against NAS and manual victims (§3.2, Figures 7–8, Table 5;
docs/protocol.md §e.4).

For every victim (from the zoo, trained first if missing) and attack of ``config.backdoor.attacks``:
``trojannn``, once per ``n_neuron`` of ``config.backdoor.n_neurons`` (``(1, 2, 3, 4)`` is Figure 8), selects
penultimate-layer neurons, optimises the 3×3 mark (transparency 0.7) to drive them to the target value and
fine-tunes on stamped, relabelled copies; ``badnet`` fine-tunes with a fixed opaque white 3×3 patch at its own
poison rate. Fine-tuning is :func:`nas_jax.train.trainer.train` with the ``backdoor`` recipe (20 epochs, lr 0.01
constant, no cutout, no clipping [artifact]), poisoning in the compiled step
(:func:`nas_jax.attacks.backdoor.poison_transform`); runs and ``trigger.npz`` are cached and resumable under
``{workdir}/runs/backdoor/{dataset}/{model}/{setting}/``. ASR (``asr``, docs/protocol.md §e.4's default;
``asr_excluding_target``) and CAD on ``n_inputs`` test inputs of the shared seeded order (G5) and on the full test
set [artifact]. Appends one ``task: "backdoor"`` record per (model, setting); figures
``figures/backdoor_{attack}.png`` (Figure 7 style) and, with several ``n_neuron``, ``figures/backdoor_neurons.png``
(Figure 8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nas_jax.attacks import backdoor as bd
from nas_jax.data import to_float
from nas_jax.report import plots, results
from nas_jax.report.study import Metric, row_reader
from nas_jax.report.summary import Summary, newest_of
from nas_jax.report.tables import format_table
from nas_jax.study import victims
from nas_jax.study.runs import cached_training, task_run_dir
from nas_jax.study.seam import Settings, Task, run_only
from nas_jax.train import trainer, zoo


@dataclasses.dataclass(frozen=True)
class BackdoorSettings(Settings):
    """The backdoor attacks' settings (Table 5; docs/protocol.md §e.4), defaults the paper preset's: the ``attacks``,
    TrojanNN's ``n_neurons`` (one fine-tuning each; Figure 8 sweeps 1–4) and ``neuron_selection``, the ``target``,
    the trigger patch and its blending, the trigger optimisation (``eps_quirk``: the artifact's 1/255 cap per step),
    the poison rates, the fine-tuning recipe [artifact] and the ``n_inputs`` the ASR is measured on.

    quick: a 6x6 trigger (on digits upsampled 4x a 3x3 or 4x4 mark lies within one source pixel: TrojanNN on darts
    reached ASR 9.3% (3x3), 9.7% (4x4), 95% (6x6) on 300 inputs, measured) and a cosine schedule (at a constant 0.01
    the quick DARTS victim's eval-mode accuracy fell to 10%, 98% with recalibrated BN statistics: a "CAD" of 89
    points, measured); poison rates 0.1 and 3 epochs make it minutes."""

    PRESETS: ClassVar[dict] = {"quick": {"trigger_size": 6, "poison_rate": 0.1, "badnet_poison_rate": 0.1,
                                         "epochs": 3, "lr_schedule": "cosine", "n_inputs": 300}}
    attacks: tuple[str, ...] = bd.ATTACKS
    n_neurons: tuple[int, ...] = (2,)
    neuron_selection: str = "strongest_connected"
    target: int = 0
    trigger_size: int = 3
    trigger_row: int = 0
    trigger_col: int = 0
    transparency: float = 0.7
    trigger_lr: float = 0.015
    trigger_iterations: int = 20
    target_value: float = 10.0
    threshold: float = 5.0
    eps_quirk: bool = False
    poison_rate: float = 0.01
    badnet_transparency: float = 0.0
    badnet_poison_rate: float = 0.02
    epochs: int = 20
    lr: float = 0.01
    lr_schedule: str = "constant"
    cutout: int = 0
    grad_clip: float = 0.0
    n_inputs: int = run_only(1000)

    def __post_init__(self):
        object.__setattr__(self, "attacks", tuple(self.attacks))
        object.__setattr__(self, "n_neurons", tuple(int(n) for n in self.n_neurons))
        unknown = [a for a in self.attacks if a not in bd.ATTACKS]
        if unknown or not self.attacks:
            raise ValueError(f"attacks={self.attacks} must be a non-empty subset of {bd.ATTACKS}.")
        if self.neuron_selection not in bd.NEURON_STRATEGIES:
            raise ValueError(f"unknown neuron_selection {self.neuron_selection!r}; valid: {bd.NEURON_STRATEGIES}.")
        if "trojannn" in self.attacks and (not self.n_neurons or min(self.n_neurons) < 1):
            raise ValueError(f"n_neurons={self.n_neurons} must hold at least one count >= 1 (e.g. (2,)).")
        for name in ("transparency", "badnet_transparency", "poison_rate", "badnet_poison_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1].")
        if self.target < 0 or self.trigger_size < 1:
            raise ValueError(f"target={self.target} must be >= 0 and trigger_size={self.trigger_size} >= 1.")

    @property
    def trigger_step(self) -> float:
        """The sign-step size of the trigger optimisation (capped at 1/255 with ``eps_quirk``)."""
        return min(self.trigger_lr, 1 / 255) if self.eps_quirk else self.trigger_lr

    def settings(self) -> list[dict]:
        """One dict per fine-tuning: attack, n_neuron, transparency, poison rate and a run name."""
        out = []
        for attack in self.attacks:
            if attack == "trojannn":
                out += [{"attack": attack, "n_neuron": n, "transparency": self.transparency,
                         "poison_rate": self.poison_rate, "name": f"trojannn_n{n}"} for n in self.n_neurons]
            else:
                out.append({"attack": attack, "n_neuron": None, "transparency": self.badnet_transparency,
                            "poison_rate": self.badnet_poison_rate, "name": "badnet"})
        return out


def finetune_config(config, bc: BackdoorSettings) -> ml_collections.ConfigDict:
    """``config`` with ``train`` replaced by the backdoor fine-tuning recipe of ``bc``."""
    ft = ml_collections.ConfigDict(config.to_dict())
    ft.train.epochs, ft.train.lr, ft.train.lr_schedule = bc.epochs, bc.lr, bc.lr_schedule
    ft.train.cutout, ft.train.grad_clip = bc.cutout, bc.grad_clip
    ft.train_overrides = {}  # the victims' per-model recipes do not apply to fine-tuning
    return ft


def make_trigger(entry, setting: dict, bc: BackdoorSettings, run_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The (mark, mask, info) of one setting; TrojanNN's optimised mark is cached in ``run_dir/trigger.npz``."""
    shape = entry.dataset.image_shape
    mask = bd.trigger_mask(shape, bc.trigger_size, bc.trigger_row, bc.trigger_col)
    if setting["attack"] == "badnet":
        return bd.white_mark(shape), mask, {}
    path = run_dir / "trigger.npz"
    if path.exists():
        opt = dict(np.load(path))
        mark, neurons = opt["mark"], opt["neurons"]
    else:
        if bc.neuron_selection == "least_activated":
            acts = bd.mean_activation(entry.model.apply, entry.variables, entry.dataset.x_train)
            neurons = bd.select_neurons("least_activated", setting["n_neuron"], mean_activation=acts)
        else:
            neurons = bd.select_neurons(bc.neuron_selection, setting["n_neuron"],
                                        kernel=bd.classifier_kernel(entry.variables))
        mark, opt = bd.optimize_trigger(entry.model.apply, entry.variables, bd.white_mark(shape), mask, neurons,
                                        step_size=bc.trigger_step, iterations=bc.trigger_iterations,
                                        target_value=bc.target_value, threshold=bc.threshold)
        if jax.process_index() == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp = run_dir / "trigger.tmp.npz"
            np.savez(tmp, mark=mark, neurons=neurons, **opt)
            tmp.replace(path)
    info = {"neurons": neurons.tolist(), "objective_initial": float(opt["objective_initial"]),
            "objective_final": float(opt["objective_final"]), "trigger_steps": int(opt["steps"])}
    return mark, mask, info


_stamp = jax.jit(bd.stamp)


def predict(model, variables, x_u8: np.ndarray, mark, mask, transparency: float = 1.0,
            batch_size: int = 500) -> np.ndarray:
    """Eval-mode predictions on stamped inputs (transparency 1 leaves them clean, so the uint8 images are
    predicted as they are)."""
    images = x_u8
    if transparency != 1.0:
        images = np.concatenate([np.asarray(_stamp(to_float(x_u8[i : i + batch_size]), mark, mask,
                                                   jnp.float32(transparency)))
                                 for i in range(0, len(x_u8), batch_size)])
    return trainer.model_logits(model, variables, images, batch_size).argmax(-1)


def evaluate(entry, trojan_variables, mark, mask, transparency: float, target: int, idx: np.ndarray) -> dict:
    """Backdoor metrics on the test inputs ``idx`` (suffix-free) and on the full test set (``_full_test``)."""
    x, y, model = entry.dataset.x_test, entry.dataset.y_test, entry.model
    victim = predict(model, entry.variables, x, mark, mask)
    trojan = predict(model, trojan_variables, x, mark, mask)
    triggered = predict(model, trojan_variables, x, mark, mask, transparency)
    metrics = bd.backdoor_metrics(y[idx], victim[idx], trojan[idx], triggered[idx], target)
    full = bd.backdoor_metrics(y, victim, trojan, triggered, target)
    metrics.update({f"{k}_full_test": v for k, v in full.items()})
    return metrics


def run(config, workdir: str | Path) -> list[dict]:
    bc = BackdoorSettings.read("backdoor", config.backdoor)
    settings = bc.settings()
    dataset, entries = victims.load_victims(config)
    idx = victims.attack_order(len(dataset.y_test), config.seed)[: bc.n_inputs]
    ft_config = finetune_config(config, bc)
    main = jax.process_index() == 0
    records, rows = [], []
    for entry in entries:
        for s in settings:
            start = results.now()
            run_dir = task_run_dir(workdir, "backdoor", config, entry.name, s["name"])
            mark, mask, info = make_trigger(entry, s, bc, run_dir)
            transform = bd.poison_transform(mark, mask, s["transparency"], bc.target, s["poison_rate"])
            spec = {"backdoor": {**{k: v for k, v in s.items() if k != "name"}, "target": bc.target,
                                 "neuron_selection": bc.neuron_selection, "neurons": info.get("neurons"),
                                 "victim": zoo.training_spec(config, entry.name), "trigger_size": bc.trigger_size,
                                 "trigger_at": [bc.trigger_row, bc.trigger_col]}}
            trojan = cached_training(ft_config, entry.name, dataset, run_dir, spec, batch_transform=transform,
                                     initial_variables=entry.variables, label=f"{entry.name} {s['name']}")
            metrics = evaluate(entry, trojan.variables, mark, mask, s["transparency"], bc.target, idx)
            metrics.update(info)  # the trigger optimisation's outcome (TrojanNN), the neurons found included
            setting = {"family": entry.family, "target": bc.target, "epochs": bc.epochs, "lr": bc.lr,
                       "neuron_selection": bc.neuron_selection if s["attack"] == "trojannn" else None,
                       **{k: v for k, v in s.items() if k != "name"}}
            records.append(results.store(workdir, config, task="backdoor", model=entry.name, metrics=metrics,
                                         n=len(idx), setting=setting, start_time=start))
            rows.append({"model": entry.name, "family": entry.family, "setting": s["name"], **s, **metrics})
            print(f"  {entry.name} {s['name']}: ASR {metrics['asr']:.1%}, CAD {metrics['cad']:+.1%} "
                  f"on {len(idx)} inputs", flush=True)
    if main:
        print(format_table(rows, [("model", "model", None), ("family", "family", None), ("setting", "attack", None),
                                  ("clean_accuracy_victim", "victim acc", ".3f"), ("asr", "ASR", ".3f"),
                                  ("asr_excluding_target", "ASR excl. t", ".3f"), ("cad", "CAD", "+.3f")]))
        fig_dir = Path(workdir) / "figures"
        for name in dict.fromkeys(r["setting"] for r in rows):
            if name.startswith("trojannn") and name != f"trojannn_n{bc.n_neurons[0]}":
                continue  # Figure 7 shows the first n_neuron; the others go to Figure 8
            attack = "trojannn" if name.startswith("trojannn") else name
            shown = [r for r in rows if r["setting"] == name]
            label = f"TrojanNN, {bc.n_neurons[0]} target neuron(s)" if attack == "trojannn" else "BadNet"
            fig = backdoor_asr_cad_figure(shown, fig_dir / f"backdoor_{attack}.png",
                                                  title=f"{label} on {config.dataset}, n = {len(idx)} inputs, "
                                                        f"seed {config.seed}")
            print(f"figure: {fig}")
        if len(bc.n_neurons) > 1 and "trojannn" in bc.attacks:
            fig = backdoor_neurons_figure([r for r in rows if r["attack"] == "trojannn"],
                                                  fig_dir / "backdoor_neurons.png",
                                                  title=f"TrojanNN against n_neuron on {config.dataset}, "
                                                        f"n = {len(idx)} inputs, seed {config.seed}")
            print(f"figure: {fig}")
    return records


def backdoor_asr_cad_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Figure 7: ASR and CAD bars per model, NAS first, coloured by family."""
    rows = plots.nas_first(rows)
    fig, axes = plots.plt.subplots(1, 2, figsize=(2.4 + 0.9 * len(rows), 3.4))
    for ax, key, label in ((axes[0], "asr", "ASR (%)"), (axes[1], "cad", "CAD (percentage points)")):
        plots.model_bars(ax, rows, [100 * r[key] for r in rows], label)
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].set_ylim(0, 105)
    plots.legend_outside(axes[1], handles=plots.family_patches())
    if title:
        fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path)


def backdoor_neurons_figure(rows: list[dict], path: Path, title: str = "") -> Path:
    """Figure 8: ASR and CAD against n_neuron; family means thick, models faint."""
    ns = sorted({r["n_neuron"] for r in rows})
    fig, axes = plots.plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "asr", "ASR (%)"), (axes[1], "cad", "CAD (percentage points)")):
        value = {(r["model"], r["n_neuron"]): 100 * r[key] for r in rows}
        plots.family_means(ax, ns, {f: [[value[m, n] for n in ns] for m in sorted({r["model"] for r in rows
                                                                                  if r["family"] == f})]
                                    for f in plots.FAMILY_COLORS})
        ax.set_xticks(ns)
        ax.set_xlabel("number of target neurons")
        ax.set_ylabel(label)
    plots.legend_outside(axes[1])
    if title:
        fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path)


def table4_asr(metrics: dict) -> float:
    """The ASR over all stamped inputs, target class included (docs/protocol.md §e.4's default, the paper's Table 4).
    Records written before that became the headline ``asr`` hold it as ``asr_including_target``."""
    return metrics.get("asr_including_target", metrics.get("asr"))


def _table4(records: list[dict]) -> tuple[dict, dict] | None:
    """Table 4's TrojanNN ASR and CAD at n_neuron = 2 (another n_neuron when only that one was run)."""
    trojan = [r for r in records if r["task"] == "backdoor" and r["setting"].get("attack") == "trojannn"]
    bd = newest_of(trojan, lambda r: r["setting"].get("n_neuron") == 2) or newest_of(trojan, lambda r: True)
    return bd and (bd, {"backdoor_asr": table4_asr(bd["metrics"]), "backdoor_cad": bd["metrics"].get("cad")})


TABLE4 = Summary((("backdoor_asr", "backdoor ASR", ".1%"), ("backdoor_cad", "backdoor CAD", "+.1%")), _table4,
                 place=2)


TASK = Task("backdoor", run, settings=BackdoorSettings, cost_minutes=2.5,
            metrics=(Metric("backdoor_asr", "TrojanNN ASR (Fig. 7)", row_reader("backdoor_asr"), +1, 1,
                            paper_gap=0.02, summary=TABLE4),))
