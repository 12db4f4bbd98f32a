"""Figures of a DARTS search: the mixing weights of every edge over the epochs (§5.2, Figure 15
context; docs/protocol.md §g "track #skip per epoch"). Cell drawings come from
:func:`nas_jax.analysis.cells.draw_genotype`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nas_jax.models.search_space import edge_index
from nas_jax.report.plots import save_figure


def alpha_history(log: list[dict], kind: str, ops: tuple[str, ...], steps: int, path: str | Path,
                  title: str = "") -> Path:
    """One panel per edge i -> j (rows: node j, columns: input i), one line per op: the
    effective mixing weight (softmax(α), skip × γ) at the end of every epoch."""
    epochs = [r["epoch"] + 1 for r in log]
    weights = np.asarray([r[f"weights_{kind}"] for r in log])  # (epochs, edges, ops)
    fig, axes = plt.subplots(steps, steps + 1, figsize=(2.3 * (steps + 1), 1.9 * steps), sharex=True, sharey=True,
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, j in enumerate(range(2, steps + 2)):
        for i in range(steps + 1):
            ax = axes[row][i]
            if i >= j:
                ax.axis("off")
                continue
            e = edge_index(j, i)
            for k, op in enumerate(ops):
                ax.plot(epochs, weights[:, e, k], color=colors(k), lw=2.0 if op == "skip_connect" else 1.0,
                        ls="--" if op == "none" else "-", label=op)
            ax.set_title(f"{i} → {j}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("weight", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=1, bbox_to_anchor=(1.0, 0.98))
    fig.supxlabel("epoch", fontsize=9)
    fig.suptitle(title or f"{kind} cell: mixing weights per edge", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def hessian_history(log: list[dict], path: str | Path, title: str = "") -> Path:
    """λ_max of the α-Hessian of the validation loss per epoch (RobustDARTS' smoothness signal; the
    paper's §4.1/§5.1 trainability preference), with the normal cell's #skip on a second axis."""
    rows = [r for r in log if "hessian_eigenvalue" in r]
    epochs = [r["epoch"] + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), layout="constrained")
    ax.plot(epochs, [r["hessian_eigenvalue"] for r in rows], "o-", color="tab:red", label="λ_max(∇²_α L_val)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("dominant eigenvalue", color="tab:red")
    skip = ax.twinx()
    skip.step(epochs, [r["normal_skip_connects"] for r in rows], where="mid", color="tab:blue", alpha=0.6,
              label="#skip (normal cell)")
    skip.set_ylabel("#skip (normal cell)", color="tab:blue")
    skip.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title or "search smoothness: α-Hessian eigenvalue", fontsize=10)
    return save_figure(fig, path, dpi=130)
