"""The evasion studies' shared pieces: PGD on one victim and the most/least-likely protocol of §3.2.

:func:`run_pgd` runs :mod:`nas_jax.attacks.pgd` on a victim's uint8 inputs with per-input keys (independent of
batch size); :func:`targeted_metrics` is Figure 2's and Figure 5's protocol for any attack (PGD, NES).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.attacks.pgd import pgd_attack_jit
from nas_jax.data import to_float
from nas_jax.report import plots
from nas_jax.study import victims
from nas_jax.study.seam import Measurement, Settings, run_only


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


TARGETED_MODES = ("most_likely", "least_likely")


@dataclasses.dataclass(frozen=True)
class PGDStudySettings(Settings):
    """What the PGD studies share (Table 5; docs/protocol.md §e.1): ``n_inputs`` per victim, ``restarts``, ``norm``,
    ``confidence`` (> 0 also requires p_target > confidence; the artifact uses 0.99) and ``batch_size`` inputs per
    compiled attack; :meth:`pgd` is the budget at a study's ε, step and iterations."""

    n_inputs: int = run_only(1000)
    restarts: int = 5
    norm: str = "linf"
    confidence: float = 0.0
    batch_size: int = run_only(250)

    def pgd(self, eps: float, step_size: float, iterations: int) -> EvasionConfig:
        return EvasionConfig(eps=eps, step_size=step_size, iterations=iterations, restarts=self.restarts,
                             norm=self.norm, confidence=self.confidence)


@dataclasses.dataclass(frozen=True)
class TargetedSettings(PGDStudySettings):
    """Table 5's budget of the most/least-likely attacks (docs/protocol.md §e.1)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    iterations_most_likely: int = 3
    iterations_least_likely: int = 7

    def __post_init__(self):
        self.budget(1)  # EvasionConfig's checks (norm, restarts)

    def budget(self, iterations: int) -> EvasionConfig:
        return self.pgd(self.eps, self.step_size, iterations)

    def iterations(self) -> dict[str, int]:
        return {"most_likely": self.iterations_most_likely, "least_likely": self.iterations_least_likely}


def targeted_metrics(ctx, entry, n_inputs: int, iterations: dict[str, int], attack, extra_metrics) -> Measurement:
    """Figure 2's and Figure 5's protocol on one victim (PGD, NES): on its first ``n_inputs`` correctly classified
    inputs of the shared order, the most-likely (c_2) and least-likely (c_m) attacks with ``iterations[mode]``
    iterations (Table 5: 3 and 7), key ``fold_in(ctx.key, iterations)``. ``attack(x_u8, labels, mode, iterations,
    key)`` returns per-example results, ``extra_metrics(out, mode)`` the task's own metrics."""
    correct = ctx.correct(entry)
    idx = ctx.inputs(correct, n_inputs)
    x, y = ctx.dataset.x_test[idx], ctx.dataset.y_test[idx]
    metrics = {"clean_accuracy": float(correct.mean())}
    for mode in TARGETED_MODES:
        out = attack(x, y, mode, iterations[mode], jax.random.fold_in(ctx.key, iterations[mode]))
        metrics[f"asr_{mode}"] = float(out.success.mean())
        metrics.update(extra_metrics(out, mode))
    return Measurement(metrics, len(idx))


TARGETED_COLUMNS = (("clean_accuracy", "clean acc", ".3f"), ("asr_most_likely", "ASR most-likely", ".3f"),
                    ("asr_least_likely", "ASR least-likely", ".3f"))


def describe_targeted(metrics: dict, n: int) -> str:
    return (f"ASR most-likely {metrics['asr_most_likely']:.1%}, least-likely {metrics['asr_least_likely']:.1%} "
            f"on {n} inputs")


def targeted_figure(rows: list[dict], path: Path, title: str) -> Path:
    """Figure 2 / Figure 5: ASR bars per model, most- and least-likely panels."""
    return plots.bar_panels(rows, [("asr_most_likely", "most likely"), ("asr_least_likely", "least likely")], path,
                            ylabel="ASR (%)", title=title)
