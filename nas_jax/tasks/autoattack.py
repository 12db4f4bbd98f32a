"""Task ``autoattack``: robust accuracy of NAS and manual victims under AutoAttack (Croce & Hein 2020), with a
gradient-masking check of the paper's PGD results (§3.2).

For every victim, on the first ``n_inputs`` correctly classified test inputs of the shared order (G5): the
AutoAttack ensemble (:mod:`nas_jax.attacks.autoattack`) and untargeted PGD-7 (the paper's PGD budget, §e.1) on
the *same* inputs. A model whose AutoAttack success exceeds its PGD success by more than
``masking_gap_threshold`` is flagged: PGD underestimates it (its gradients mislead PGD), so a "more robust"
reading from PGD would not hold. One ``task: "autoattack"`` record per model (``metrics.robust_accuracy``, the
per-attack success, the PGD comparison), a table and ``{workdir}/figures/autoattack.png``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from nas_jax.attacks.autoattack import AutoAttackConfig, autoattack_jit
from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.data import to_float
from nas_jax.report import figures, results
from nas_jax.report.tables import format_table
from nas_jax.study import victims
from nas_jax.study.evasion import run_pgd


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


def run(config, workdir: str | Path) -> list[dict]:
    ac = config.autoattack
    cfg = AutoAttackConfig.from_config(ac)
    pgd_cfg = EvasionConfig.from_config(ac, prefix="pgd_")
    setting = {"eps": ac.eps, "norm": ac.norm, "attacks": list(cfg.attack_names), "apgd_iterations": ac.apgd_iterations,
               "apgd_restarts": ac.apgd_restarts, "fab_iterations": ac.fab_iterations,
               "fab_restarts": ac.fab_restarts, "n_target_classes": ac.n_target_classes, "n_queries": ac.n_queries,
               "p_init": ac.p_init, "pgd_iterations": ac.pgd_iterations, "pgd_step_size": ac.pgd_step_size,
               "pgd_restarts": ac.pgd_restarts}
    dataset, entries = victims.load_victims(config)
    order = victims.attack_order(len(dataset.y_test), config.seed)
    key = jax.random.key(config.seed)
    records, rows = [], []
    for entry in tqdm(entries, desc="autoattack", unit="model", dynamic_ncols=True, disable=jax.process_index() != 0):
        start = results.now()
        correct = victims.predictions(entry, dataset.x_test) == dataset.y_test
        idx = victims.correct_inputs(correct, order, ac.n_inputs)
        x, y = dataset.x_test[idx], dataset.y_test[idx]
        aa = run_autoattack(entry, x, y, cfg, jax.random.fold_in(key, 0), ac.batch_size)
        pgd = run_pgd(entry, x, y, pgd_cfg, "untargeted", jax.random.fold_in(key, 1), ac.batch_size)
        metrics = {"clean_accuracy": float(correct.mean()),
                   **masking_metrics(aa.robust, aa.first_attack, cfg.attack_names, pgd.success,
                                     ac.masking_gap_threshold)}
        if "square" in cfg.attack_names:
            ran = aa.queries > 0
            metrics["mean_square_queries"] = float(aa.queries[ran].mean()) if ran.any() else 0.0
        record = results.make_record(config, task="autoattack", model=entry.name, metrics=metrics, n=len(idx),
                                     setting={"family": entry.family, **setting}, start_time=start)
        if jax.process_index() == 0:
            results.append_record(workdir, record)
        records.append(record)
        rows.append({"model": entry.name, "family": entry.family, **metrics,
                     "flag": "MASKING?" if metrics["gradient_masking_flag"] else ""})
        tqdm.write(f"  {entry.name}: robust accuracy {metrics['robust_accuracy']:.1%} (AutoAttack) on {len(idx)} "
                   f"inputs; PGD-7 success {metrics['pgd_success']:.1%}, AutoAttack {metrics['aa_success']:.1%}")
    if jax.process_index() == 0:
        cols = [("model", "model", None), ("family", "family", None), ("clean_accuracy", "clean acc", ".3f"),
                ("robust_accuracy", "robust acc (AA)", ".3f"), ("pgd_success", "PGD-7 ASR", ".3f"),
                ("aa_success", "AA ASR", ".3f"), ("masking_gap", "AA - PGD", "+.3f")]
        cols += [(f"success_{n}", n, ".3f") for n in cfg.attack_names]
        cols += [("flag", f"gap > {ac.masking_gap_threshold:g}", None)]
        print(format_table(rows, cols))
        eps_txt = f"{ac.eps * 255:.0f}/255" if ac.norm == "linf" else f"{ac.eps:g}"
        norm_txt = "L∞" if ac.norm == "linf" else "L2"
        fig = figures.autoattack_figure(rows, Path(workdir) / "figures" / "autoattack.png",
                                        f"AutoAttack vs PGD-7, {norm_txt} ε={eps_txt}, {config.dataset}, "
                                        f"n = {ac.n_inputs} inputs per model, seed {config.seed}")
        print(f"figure: {fig}")
    return records
