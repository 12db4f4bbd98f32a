"""Task ``autoattack``: robust accuracy of NAS and manual victims under AutoAttack (Croce & Hein 2020), with a
gradient-masking check of the paper's PGD results (§3.2).

For every victim, on the first ``n_inputs`` correctly classified test inputs of the shared order (G5): the
AutoAttack ensemble (:mod:`nas_jax.attacks.autoattack`) and untargeted PGD-7 (§e.1) on the *same* inputs; a model
whose AutoAttack success exceeds its PGD success by more than ``masking_gap_threshold`` is flagged (PGD
underestimates it). One ``task: "autoattack"`` record per model, a table and ``{workdir}/figures/autoattack.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from nas_jax.attacks.autoattack import AutoAttackConfig, autoattack_jit
from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.data import to_float
from nas_jax.report import plots
from nas_jax.report.study import Metric, reader
from nas_jax.study import victims
from nas_jax.study.evasion import run_pgd
from nas_jax.study.seam import Measurement, Settings, VictimTask, run_only


@dataclasses.dataclass(frozen=True)
class AutoAttackSettings(Settings):
    """AutoAttack's standard sequence and budget (``attacks`` () = APGD-CE, APGD-T, FAB-T, Square; or a list from
    ``ATTACKS``), and the paper's untargeted PGD-7 for the masking check. quick, reduced to CPU minutes: 25
    APGD/FAB iterations, 3 target classes, 500 Square queries, 50 inputs (configs/autoattack.py)."""

    PRESETS: ClassVar[dict] = {"quick": {"n_inputs": 50, "apgd_iterations": 25, "fab_iterations": 25,
                                         "n_target_classes": 3, "n_queries": 500, "batch_size": 50}}
    n_inputs: int = run_only(1000)
    eps: float = 8 / 255
    norm: str = "linf"
    attacks: tuple = ()
    apgd_iterations: int = 100
    apgd_restarts: int = 1
    fab_iterations: int = 100
    fab_restarts: int = 1
    n_target_classes: int = 9
    n_queries: int = 5000
    p_init: float = 0.8
    pgd_iterations: int = 7
    pgd_step_size: float = 2 / 255
    pgd_restarts: int = 5
    masking_gap_threshold: float = 0.1  # flag: AutoAttack success − PGD success above this
    batch_size: int = run_only(250)

    def __post_init__(self):
        self.attack_config(), self.pgd_config()

    def attack_config(self) -> AutoAttackConfig:
        attacks = tuple(self.attacks) or None
        return AutoAttackConfig(eps=self.eps, norm=self.norm, version="custom" if attacks else "standard",
                                attacks=attacks, apgd_iter=self.apgd_iterations, apgd_restarts=self.apgd_restarts,
                                fab_iter=self.fab_iterations, fab_restarts=self.fab_restarts,
                                n_target_classes=self.n_target_classes, n_queries=self.n_queries, p_init=self.p_init)

    def pgd_config(self) -> EvasionConfig:
        return EvasionConfig(eps=self.eps, step_size=self.pgd_step_size, iterations=self.pgd_iterations,
                             restarts=self.pgd_restarts, norm=self.norm)


def run_autoattack(entry, x_u8: np.ndarray, labels: np.ndarray, cfg: AutoAttackConfig, key, batch_size: int):
    """Per-example AutoAttack results of one victim (``model.apply`` is eval mode by default, G2)."""

    def attack(x, y, key):
        return autoattack_jit(entry.model.apply, entry.variables, to_float(x), y, key, cfg)

    return victims.AttackBatches(batch_size).run(attack, x_u8, labels, key)


def masking_metrics(robust: np.ndarray, first_attack: np.ndarray, names: tuple[str, ...], pgd_success: np.ndarray,
                    threshold: float) -> dict:
    """Robust accuracy, per-attack success (fraction of inputs each attack fooled first) and the PGD comparison."""
    aa_success = ~robust
    metrics = {"robust_accuracy": float(robust.mean()), "aa_success": float(aa_success.mean()),
               "pgd_success": float(pgd_success.mean())}
    for j, name in enumerate(names, start=1):
        metrics[f"success_{name}"] = float((first_attack == j).mean())
    metrics["masking_gap"] = metrics["aa_success"] - metrics["pgd_success"]
    metrics["aa_only"] = float((aa_success & ~pgd_success).mean())  # PGD missed, AutoAttack found
    metrics["pgd_only"] = float((pgd_success & ~aa_success).mean())  # AutoAttack missed, PGD found
    metrics["gradient_masking_flag"] = bool(metrics["masking_gap"] > threshold + 1e-9)  # 0.34 − 0.24 > 0.1 in floats
    return metrics


def measure(ctx, entry):
    s = ctx.settings
    cfg = s.attack_config()
    correct = ctx.correct(entry)
    idx = ctx.inputs(correct, s.n_inputs)
    x, y = ctx.dataset.x_test[idx], ctx.dataset.y_test[idx]
    aa = run_autoattack(entry, x, y, cfg, jax.random.fold_in(ctx.key, 0), s.batch_size)
    pgd = run_pgd(entry, x, y, s.pgd_config(), "untargeted", jax.random.fold_in(ctx.key, 1), s.batch_size)
    metrics = {"clean_accuracy": float(correct.mean()),
               **masking_metrics(aa.robust, aa.first_attack, cfg.attack_names, pgd.success, s.masking_gap_threshold)}
    if "square" in cfg.attack_names:
        ran = aa.queries > 0
        metrics["mean_square_queries"] = float(aa.queries[ran].mean()) if ran.any() else 0.0
    return Measurement(metrics, len(idx))


def autoattack_figure(rows: list[dict], path: Path, title: str) -> Path:
    """Left: PGD-7 vs AutoAttack success per model (NAS first); right: robust accuracy under AutoAttack."""
    plt = plots.plt
    rows = plots.nas_first(rows)
    xs = np.arange(len(rows))
    colors = [plots.FAMILY_COLORS[r["family"]] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(2.5 + 1.1 * len(rows), 3.8), layout="constrained")
    ax1.bar(xs - 0.2, [100 * r["pgd_success"] for r in rows], 0.4, color=colors, alpha=0.4, hatch="//",
            edgecolor="black", linewidth=0.5)
    ax1.bar(xs + 0.2, [100 * r["aa_success"] for r in rows], 0.4, color=colors, edgecolor="black", linewidth=0.5)
    ax1.set_title("success: PGD-7 (hatched) vs AutoAttack", fontsize=9)
    ax1.set_ylabel("success (%)")
    ax2.bar(xs, [100 * r["robust_accuracy"] for r in rows], 0.6, color=colors)
    ax2.set_title("robust accuracy (AutoAttack)", fontsize=9)
    ax2.set_ylabel("robust accuracy (%)")
    for ax in (ax1, ax2):
        ax.set_ylim(0, 100)
        ax.set_xticks(xs, [r["model"] for r in rows], rotation=45, ha="right", fontsize=8)
    fig.legend(handles=plots.family_patches(), loc="outside right upper", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def _title(s: AutoAttackSettings, config) -> str:
    eps = f"{s.eps * 255:.0f}/255" if s.norm == "linf" else f"{s.eps:g}"
    return f"AutoAttack vs PGD-7, {'L∞' if s.norm == 'linf' else 'L2'} ε={eps}, {config.dataset}"


def _describe(m: dict, n: int) -> str:
    return (f"robust accuracy {m['robust_accuracy']:.1%} (AutoAttack) on {n} inputs; PGD-7 success "
            f"{m['pgd_success']:.1%}, AutoAttack {m['aa_success']:.1%}")


TASK = VictimTask(
    name="autoattack", settings=AutoAttackSettings, measure=measure, figure=autoattack_figure, title=_title,
    describe=_describe, cost_minutes=3.0, in_study=(),
    columns=lambda s: (("clean_accuracy", "clean acc", ".3f"), ("robust_accuracy", "robust acc (AA)", ".3f"),
                       ("pgd_success", "PGD-7 ASR", ".3f"), ("aa_success", "AA ASR", ".3f"),
                       ("masking_gap", "AA - PGD", "+.3f"),
                       *((f"success_{a}", a, ".3f") for a in s.attack_config().attack_names),
                       ("gradient_masking_flag", f"masking? (gap > {s.masking_gap_threshold:g})", None)),
    metrics=(Metric("autoattack_robust", "AutoAttack robust accuracy", reader("autoattack", "robust_accuracy"), -1,
                    1, inputs_task="autoattack"),))
