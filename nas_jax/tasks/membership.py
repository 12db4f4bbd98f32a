"""Task ``membership``: label-only membership inference by HopSkipJump boundary distance (§3.2, Figure 10).

For every victim: ``n_members`` random training images (not augmented) and ``n_nonmembers`` random test images,
the same for all models (G5); correctly classified ones are attacked with untargeted L2 HopSkipJump through the
top-1 label (Table 5 budget), the others score 0. One ``task: "membership"`` record per model (``auc``: raw ROC
AUC, members positive; ``auc_max``; the correct-vs-incorrect baseline), distances in
``{workdir}/membership/{model}.npz``, ROC curves and AUC bars in ``{workdir}/figures/membership_roc.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from matplotlib.lines import Line2D

from nas_jax.attacks.hopskipjump import HSJConfig, LabelOracle, hopskipjump_jit
from nas_jax.attacks.membership import DISTANCES, baseline_auc, boundary_scores, membership_auc, roc, sample_members
from nas_jax.data import to_float
from nas_jax.report import plots
from nas_jax.report.study import Metric, row_reader
from nas_jax.report.summary import Summary, newest_cells
from nas_jax.study import victims
from nas_jax.study.seam import Measurement, Settings, VictimTask, run_only
from nas_jax.train.zoo import slug


@dataclasses.dataclass(frozen=True)
class MembershipSettings(Settings):
    """Table 5's HopSkipJump budget on 1,000 members + 1,000 non-members; quick: the artifact's budget (10 iterations,
    100 / 25 evaluations, 50 draws) on 100 + 100. ``distance``: 'l2' [paper] or 'linf' (the artifact's, same point);
    the other fields as in :class:`~nas_jax.attacks.hopskipjump.HSJConfig` (``max_halvings`` [project])."""

    PRESETS: ClassVar[dict] = {"quick": {"n_members": 100, "n_nonmembers": 100, "max_iter": 10, "max_eval": 100,
                                         "init_eval": 25, "init_size": 50, "batch_size": 100, "chunk_size": 25}}
    n_members: int = 1000  # random training images, not augmented [paper]
    n_nonmembers: int = 1000  # random test images [paper]
    distance: str = "l2"
    max_iter: int = 50
    max_eval: int = 2500
    init_eval: int = 100
    init_size: int = 100
    max_halvings: int = 30
    query_budget: int = 0
    final_search: bool = False
    batch_size: int = run_only(250)  # inputs per compiled attack call
    chunk_size: int = run_only(20)  # gradient samples per input per model call (memory: batch x chunk images)

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; valid: {DISTANCES}.")
        self.hsj()

    def hsj(self) -> HSJConfig:
        return HSJConfig(max_iter=self.max_iter, max_eval=self.max_eval, init_eval=self.init_eval,
                         init_size=self.init_size, max_halvings=self.max_halvings, query_budget=self.query_budget,
                         chunk_size=self.chunk_size, final_search=self.final_search)


def attack_distances(entry, x_u8: np.ndarray, key: jax.Array, cfg: HSJConfig, batch_size: int):
    """Per-input HopSkipJump results on uint8 inputs; the victim answers with its top-1 label only (eval mode)."""
    oracle = LabelOracle(entry.model.apply, entry.variables)

    def attack(x, _labels, k):
        return hopskipjump_jit(oracle, to_float(x), k, cfg=cfg)

    return victims.AttackBatches(batch_size).run(attack, x_u8, np.zeros(len(x_u8), np.int32), key)


def score_model(entry, sample: dict, key: jax.Array, cfg: HSJConfig, batch_size: int) -> dict[str, np.ndarray]:
    """Distances (0 for misclassified inputs, which are not attacked), queries and flags for every input."""
    n = len(sample["labels"])
    correct = victims.predictions(entry, sample["images"]) == sample["labels"]
    idx = np.flatnonzero(correct)
    out = {"correct": correct, "distance_l2": np.zeros(n), "distance_linf": np.zeros(n),
           "queries": np.zeros(n, np.int64), "initialized": np.zeros(n, bool), "halving_capped": np.zeros(n, np.int64)}
    if len(idx):
        res = attack_distances(entry, sample["images"][idx], key, cfg, batch_size)
        for name in ("distance_l2", "distance_linf", "queries", "initialized", "halving_capped"):
            out[name][idx] = np.asarray(getattr(res, name))
    return out


def model_metrics(sample: dict, out: dict, distance: str) -> dict:
    member, correct = sample["is_member"], out["correct"]
    attacked = correct
    metrics = {}
    for name in DISTANCES:
        aucs = membership_auc(member, boundary_scores(out, correct, name))
        metrics[f"auc_{name}"], metrics[f"auc_max_{name}"] = aucs["auc"], aucs["auc_max"]
    scores = boundary_scores(out, correct, distance)
    metrics.update(membership_auc(member, scores))
    metrics.update({
        "baseline_auc": baseline_auc(member, correct),
        "member_accuracy": float(correct[member].mean()), "nonmember_accuracy": float(correct[~member].mean()),
        "mean_distance_members": float(scores[member & attacked].mean()) if (member & attacked).any() else None,
        "mean_distance_nonmembers": float(scores[~member & attacked].mean()) if (~member & attacked).any() else None,
        "init_failure_rate": float(1 - out["initialized"][attacked].mean()) if attacked.any() else None,
        "mean_queries": float(out["queries"][attacked].mean()) if attacked.any() else 0.0,
        "max_queries": int(out["queries"].max()),
        "halving_cap_hits": int(out["halving_capped"].sum()),
    })
    return metrics


def setup(ctx) -> dict:
    """The same members and non-members for every victim (G5), and the attack's key."""
    s = ctx.settings
    return {"sample": sample_members(ctx.dataset, s.n_members, s.n_nonmembers, ctx.config.seed),
            "key": jax.random.key(ctx.config.seed, impl="rbg")}  # rbg: XLA:CPU compiles threefry slowly


def measure(ctx, entry):
    """The boundary distance of every input, the AUCs, and (process 0) the per-input distances in
    ``{workdir}/membership/{model}.npz``."""
    s, sample = ctx.settings, ctx.shared["sample"]
    out = score_model(entry, sample, ctx.shared["key"], s.hsj(), s.batch_size)
    metrics = model_metrics(sample, out, s.distance)
    if ctx.main:
        (ctx.workdir / "membership").mkdir(parents=True, exist_ok=True)
        np.savez(ctx.workdir / "membership" / f"{slug(entry.name)}.npz", is_member=sample["is_member"],
                 indices=sample["indices"], **out)
    fpr, tpr = roc(sample["is_member"], boundary_scores(out, out["correct"], s.distance))
    return Measurement(metrics, len(sample["labels"]), row={"fpr": fpr, "tpr": tpr})


def membership_roc_figure(curves: list[dict], path: Path, title: str) -> Path:
    """Left: ROC curves (members positive), one per model, coloured by family. Right: AUC per model with the
    correct-vs-incorrect baseline as a black tick (Figure 10 style)."""
    rows = plots.nas_first(curves)
    fig, (ax, bx) = plots.plt.subplots(1, 2, figsize=(10.5, 3.8))
    for r in rows:
        ax.plot(r["fpr"], r["tpr"], color=plots.FAMILY_COLORS[r["family"]], alpha=0.8, lw=1.2)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC, boundary distance")
    pos = np.arange(len(rows))
    bx.bar(pos, [r["auc"] for r in rows], color=[plots.FAMILY_COLORS[r["family"]] for r in rows])
    bx.scatter(pos, [r["baseline_auc"] for r in rows], marker="_", s=200, color="k", label="correct-vs-incorrect")
    bx.axhline(0.5, color="k", lw=0.6, ls=":")
    bx.set_xticks(pos, [r["model"] for r in rows], rotation=60, ha="right", fontsize=8)
    bx.set_ylim(0.3, 1.0)
    bx.set_ylabel("AUC")
    bx.set_title("membership AUC")
    families = [Line2D([], [], color=c, label=f) for f, c in plots.FAMILY_COLORS.items()]
    plots.legend_outside(bx, handles=families + bx.get_legend_handles_labels()[0], fontsize=7)
    fig.suptitle(title)
    return plots.save_figure(fig, path)


TABLE4 = Summary((("mi_auc", "MI AUC", ".3f"),), newest_cells("membership", {"mi_auc": "auc"}), place=3)


TASK = VictimTask(
    name="membership", settings=MembershipSettings, setup=setup, measure=measure, figure=membership_roc_figure,
    figure_file="membership_roc.png", cost_minutes=3.0,
    n_label="inputs",
    title=lambda s, config: f"label-only MI (HSJ {s.distance}) on {config.dataset}, {s.n_members} members + "
                            f"{s.n_nonmembers} non-members",
    describe=lambda m, n: (f"AUC {m['auc']:.3f} (baseline {m['baseline_auc']:.3f}), {m['mean_queries']:.0f} "
                           "queries per attacked input"),
    columns=lambda s: (("auc", "AUC", ".3f"), ("auc_max", "max(AUC,1-AUC)", ".3f"),
                       ("auc_linf" if s.distance == "l2" else "auc_l2", "AUC other norm", ".3f"),
                       ("baseline_auc", "baseline AUC", ".3f"), ("member_accuracy", "acc members", ".3f"),
                       ("nonmember_accuracy", "acc non-members", ".3f"), ("mean_queries", "queries/input", ".0f"),
                       ("init_failure_rate", "init failures", ".3f")),
    metrics=(Metric("mi_auc", "membership AUC (Fig. 10)", row_reader("mi_auc"), +1, 1, paper_gap=0.04,
                    summary=TABLE4),))
