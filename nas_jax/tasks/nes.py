"""Task ``nes``: black-box NES evasion, most/least likely (§3.2, Figure 5; Eqn 10).

The victim is reached only through ``query_fn(x) -> probabilities`` (eval
mode); every query is counted per input. One ``task: "nes"`` record per model
with ASR and mean queries per input for both targets; figure
``{workdir}/figures/nes_asr.png``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from nas_jax.attacks.nes import BlackBox, nes_attack_jit
from nas_jax.data import to_float
from nas_jax.report import plots, results
from nas_jax.report.tables import format_table
from nas_jax.tasks import victims
from nas_jax.tasks.pgd import evasion_config


def run_nes(entry, x_u8, labels, cfg, mode, key, nc):
    """Per-example NES results; the victim is reachable only as a probability oracle."""
    query_fn = BlackBox(entry.model.apply, entry.variables)  # eval mode, softmax output only

    def attack(x, y, key):
        return nes_attack_jit(query_fn, to_float(x), y, key, cfg, mode=mode, n_queries=nc.n_queries,
                              sigma=nc.sigma, query_budget=nc.query_budget)

    return victims.AttackBatches(nc.batch_size).run(attack, x_u8, labels, key)


def run(config, workdir: str | Path) -> list[dict]:
    nc = config.nes
    dataset, entries = victims.load_victims(config)
    order = victims.attack_order(len(dataset.y_test), config.seed)
    key = jax.random.key(config.seed)
    settings = [("most_likely", nc.iterations_most_likely), ("least_likely", nc.iterations_least_likely)]
    records, rows = [], []
    for entry in entries:
        start = results.now()
        correct = victims.predictions(entry, dataset.x_test) == dataset.y_test
        idx = victims.correct_inputs(correct, order, nc.n_inputs)
        metrics = {"clean_accuracy": float(correct.mean())}
        for mode, iterations in settings:
            out = run_nes(entry, dataset.x_test[idx], dataset.y_test[idx], evasion_config(nc, iterations), mode,
                          jax.random.fold_in(key, iterations), nc)
            metrics[f"asr_{mode}"] = float(out.success.mean())
            metrics[f"mean_queries_{mode}"] = float(np.mean(out.queries))
            metrics[f"mean_queries_success_{mode}"] = (float(np.mean(out.queries[out.success]))
                                                       if out.success.any() else None)
        record = results.make_record(
            config, task="nes", model=entry.name, metrics=metrics, n=len(idx), start_time=start,
            setting={"family": entry.family, "eps": nc.eps, "step_size": nc.step_size, "restarts": nc.restarts,
                     "n_queries": nc.n_queries, "sigma": nc.sigma, "query_budget": nc.query_budget})
        if jax.process_index() == 0:
            results.append_record(workdir, record)
        records.append(record)
        rows.append({"model": entry.name, "family": entry.family, **metrics})
        print(f"  {entry.name}: NES ASR most-likely {metrics['asr_most_likely']:.1%}, "
              f"least-likely {metrics['asr_least_likely']:.1%} on {len(idx)} inputs", flush=True)
    if jax.process_index() == 0:
        print(format_table(rows, [("model", "model", None), ("family", "family", None),
                                  ("asr_most_likely", "ASR most-likely", ".3f"),
                                  ("mean_queries_most_likely", "queries M", ".0f"),
                                  ("asr_least_likely", "ASR least-likely", ".3f"),
                                  ("mean_queries_least_likely", "queries L", ".0f")]))
        fig = plots.bar_panels(rows, [("asr_most_likely", "most likely"), ("asr_least_likely", "least likely")],
                               Path(workdir) / "figures" / "nes_asr.png", ylabel="ASR (%)",
                               title=f"NES (n={nc.n_queries}) on {config.dataset}")
        print(f"figure: {fig}")
    return records
