"""Task ``pgd``: targeted white-box PGD against NAS and manual victims (§3.2, Figure 2).

For every victim: clean accuracy, then most-likely (3 iterations) and
least-likely (7 iterations) L∞ PGD with eps 8/255, step 2/255 and 5 random
restarts (Table 5) on ``n_inputs`` correctly classified test inputs. Prints a
table, appends one ``task: "pgd"`` record per model and saves a Figure 2-style
bar chart to ``{workdir}/figures/pgd_asr.png``.
"""

from __future__ import annotations

from pathlib import Path

from nas_jax.study.evasion import run_pgd, targeted_study


def _mean_iterations(out, mode: str) -> dict:
    return {f"mean_iterations_{mode}": float(out.iterations[out.success].mean()) if out.success.any() else None}


def run(config, workdir: str | Path) -> list[dict]:
    pc = config.pgd
    setting = {"eps": pc.eps, "step_size": pc.step_size, "restarts": pc.restarts, "norm": pc.norm,
               "confidence": pc.confidence, "iterations_most_likely": pc.iterations_most_likely,
               "iterations_least_likely": pc.iterations_least_likely}

    def attack(entry, x, y, cfg, mode, key):
        return run_pgd(entry, x, y, cfg, mode, key, pc.batch_size)

    return targeted_study(config, workdir, "pgd", pc, attack, _mean_iterations, setting,
                          title=f"PGD L∞ ε={pc.eps * 255:.0f}/255 on {config.dataset}")
