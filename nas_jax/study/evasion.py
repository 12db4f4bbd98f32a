"""The evasion studies' shared driver: PGD on one victim and the most/least-likely study of §3.2.

:func:`run_pgd` runs the compiled PGD of :mod:`nas_jax.attacks.pgd` on a victim's uint8 inputs with per-input
keys (the result does not depend on the batch size); :func:`targeted_study` is Figure 2's and Figure 5's
protocol (most likely: c_2, least likely: c_m; Table 5's iterations) for any attack (PGD, NES).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.attacks.pgd import pgd_attack_jit
from nas_jax.data import to_float
from nas_jax.report import plots, results
from nas_jax.report.tables import format_table
from nas_jax.study import victims


def run_pgd(entry, x_u8: np.ndarray, labels: np.ndarray, cfg: EvasionConfig, mode: str, key, batch_size: int):
    """Per-example PGD results of one victim on uint8 inputs. ``model.apply`` runs
    in eval mode by default (G2); one compiled attack per model serves every eps,
    step and iteration count and both most- and least-likely targets (run as the
    k-th most likely class with a traced k)."""
    k = entry.dataset.num_classes if mode == "least_likely" else 2  # traced: unused by the other modes
    mode = "kth" if mode in ("most_likely", "least_likely") else mode

    def attack(x, y, key):
        return pgd_attack_jit(entry.model.apply, entry.variables, to_float(x), y, key, cfg, mode=mode, k=k)

    return victims.AttackBatches(batch_size, per_example_keys=True).run(attack, x_u8, labels, key)


def targeted_study(config, workdir: str | Path, task: str, sc, run_attack, extra_metrics, setting: dict,
                   title: str) -> list[dict]:
    """Most- and least-likely attacks on every victim (Figures 2 and 5).

    ``run_attack(entry, x_u8, labels, cfg, mode, key)`` returns per-example
    results; ``extra_metrics(out, mode)`` adds task-specific metrics. Prints a
    table, appends one ``task`` record per model, saves ``figures/{task}_asr.png``.
    """
    dataset, entries = victims.load_victims(config)
    order = victims.attack_order(len(dataset.y_test), config.seed)
    key = jax.random.key(config.seed)
    settings = [("most_likely", sc.iterations_most_likely), ("least_likely", sc.iterations_least_likely)]
    records, rows = [], []
    bar = tqdm(total=len(entries) * len(settings), desc=f"{task} attacks", unit="attack", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    for entry in entries:
        start = results.now()
        correct = victims.predictions(entry, dataset.x_test) == dataset.y_test
        idx = victims.correct_inputs(correct, order, sc.n_inputs)
        metrics = {"clean_accuracy": float(correct.mean())}
        for mode, iterations in settings:
            cfg = EvasionConfig.from_config(sc, iterations=iterations)
            out = run_attack(entry, dataset.x_test[idx], dataset.y_test[idx], cfg, mode,
                             jax.random.fold_in(key, iterations))
            metrics[f"asr_{mode}"] = float(out.success.mean())
            metrics.update(extra_metrics(out, mode))
            bar.update(1)
            bar.set_postfix(model=entry.name, mode=mode, asr=f"{metrics[f'asr_{mode}']:.2f}")
        record = results.make_record(config, task=task, model=entry.name, metrics=metrics, n=len(idx),
                                     setting={"family": entry.family, **setting}, start_time=start)
        if jax.process_index() == 0:
            results.append_record(workdir, record)
        records.append(record)
        rows.append({"model": entry.name, "family": entry.family, **metrics})
        bar.write(f"  {entry.name}: ASR most-likely {metrics['asr_most_likely']:.1%}, "
                  f"least-likely {metrics['asr_least_likely']:.1%} on {len(idx)} inputs")
    bar.close()
    if jax.process_index() == 0:
        print(format_table(rows, [("model", "model", None), ("family", "family", None),
                                  ("clean_accuracy", "clean acc", ".3f"), ("asr_most_likely", "ASR most-likely", ".3f"),
                                  ("asr_least_likely", "ASR least-likely", ".3f")]))
        ns = sorted({r["n"] for r in records})
        n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        fig = plots.bar_panels(rows, [("asr_most_likely", "most likely"), ("asr_least_likely", "least likely")],
                               Path(workdir) / "figures" / f"{task}_asr.png", ylabel="ASR (%)",
                               title=f"{title}, n = {n} inputs per model, seed {config.seed}")
        print(f"figure: {fig}")
    return records
