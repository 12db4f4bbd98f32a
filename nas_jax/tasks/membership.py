"""Task ``membership``: label-only membership inference by HopSkipJump boundary distance (§3.2, Figure 10).

For every victim: ``n_members`` random training images (not augmented) and ``n_nonmembers`` random test images,
the same draw for all models (G5). Correctly classified inputs are attacked with untargeted L2 HopSkipJump through
the top-1 label only (Table 5 budget); misclassified ones score 0. Prints a table, appends one
``task: "membership"`` record per model (``metrics.auc``: raw ROC AUC, members positive, larger distance = member;
``auc_max`` = max(AUC, 1 − AUC); the correct-vs-incorrect baseline beside it), saves the per-input distances to
``{workdir}/membership/{model}.npz`` and the ROC curves with an AUC bar chart to
``{workdir}/figures/membership_roc.png``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from nas_jax.attacks.hopskipjump import HSJConfig, LabelOracle, hopskipjump_jit
from nas_jax.attacks.membership import DISTANCES, baseline_auc, boundary_scores, membership_auc, roc, sample_members
from nas_jax.data import to_float
from nas_jax.report import figures, results
from nas_jax.report.study import Metric, row_reader
from nas_jax.report.tables import format_table
from nas_jax.study import victims
from nas_jax.study.seam import Task
from nas_jax.train.zoo import slug


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


def run(config, workdir: str | Path) -> list[dict]:
    mc, workdir = config.membership, Path(workdir)
    if mc.distance not in DISTANCES:
        raise ValueError(f"unknown membership.distance {mc.distance!r}; valid: {DISTANCES}.")
    cfg = HSJConfig.from_config(mc)
    dataset, entries = victims.load_victims(config)
    sample = sample_members(dataset, mc.n_members, mc.n_nonmembers, config.seed)
    key = jax.random.key(config.seed, impl="rbg")  # rbg: XLA:CPU compiles threefry slowly (hopskipjump docstring)
    setting = {"distance": mc.distance, "max_iter": mc.max_iter, "max_eval": mc.max_eval, "init_eval": mc.init_eval,
               "init_size": mc.init_size, "max_halvings": mc.max_halvings, "query_budget": mc.query_budget,
               "final_search": mc.final_search, "n_members": mc.n_members, "n_nonmembers": mc.n_nonmembers}
    records, rows, curves = [], [], []
    for entry in entries:
        start = results.now()
        out = score_model(entry, sample, key, cfg, mc.batch_size)
        metrics = model_metrics(sample, out, mc.distance)
        record = results.make_record(config, task="membership", model=entry.name, metrics=metrics,
                                     n=len(sample["labels"]), setting={"family": entry.family, **setting},
                                     start_time=start)
        if jax.process_index() == 0:
            results.append_record(workdir, record)
            (workdir / "membership").mkdir(parents=True, exist_ok=True)
            np.savez(workdir / "membership" / f"{slug(entry.name)}.npz", is_member=sample["is_member"],
                     indices=sample["indices"], **out)
        records.append(record)
        rows.append({"model": entry.name, "family": entry.family, **metrics})
        fpr, tpr = roc(sample["is_member"], boundary_scores(out, out["correct"], mc.distance))
        curves.append({"model": entry.name, "family": entry.family, "fpr": fpr, "tpr": tpr, "auc": metrics["auc"],
                       "baseline_auc": metrics["baseline_auc"]})
        print(f"  {entry.name}: AUC {metrics['auc']:.3f} (baseline {metrics['baseline_auc']:.3f}), "
              f"{metrics['mean_queries']:.0f} queries per attacked input", flush=True)
    if jax.process_index() == 0:
        print(format_table(rows, [("model", "model", None), ("family", "family", None), ("auc", "AUC", ".3f"),
                                  ("auc_max", "max(AUC,1-AUC)", ".3f"), ("auc_linf" if mc.distance == "l2" else
                                  "auc_l2", "AUC other norm", ".3f"), ("baseline_auc", "baseline AUC", ".3f"),
                                  ("member_accuracy", "acc members", ".3f"),
                                  ("nonmember_accuracy", "acc non-members", ".3f"),
                                  ("mean_queries", "queries/input", ".0f"),
                                  ("init_failure_rate", "init failures", ".3f")]))
        for family in ("nas", "manual"):
            aucs = [r["auc"] for r in rows if r["family"] == family]
            if aucs:
                print(f"  {family} mean AUC {np.mean(aucs):.3f} over {len(aucs)} models")
        fig = figures.membership_roc_figure(curves, workdir / "figures" / "membership_roc.png",
                         f"label-only MI (HSJ {mc.distance}) on {config.dataset}, n = {mc.n_members} members + "
                         f"{mc.n_nonmembers} non-members, seed {config.seed}")
        print(f"figure: {fig}")
    return records


TASK = Task("membership", run, cost_minutes=3.0,
            metrics=(Metric("mi_auc", "membership AUC (Fig. 10)", row_reader("mi_auc"), +1, 1, paper_gap=0.04),))
