"""Task ``cells``: Table 3 (cell depth, width, #skip) and cell drawings of NAS genotypes (§5.1, Table 3,
Figure 15 style; docs/protocol.md §c.4).

For every genotype of ``config.cells.genotypes`` (empty: every stored one): the normal cell's depth, W1/W2/W3
and #skip (and the reduction cell's) beside Table 3, and the Table 3 averages; one ``task: "cells"`` record per
genotype and ``{workdir}/figures/cells/{name}.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from nas_jax.analysis import cells
from nas_jax.models.genotypes import get_genotype
from nas_jax.models.registry import model_family
from nas_jax.report import results
from nas_jax.report.study import Section
from nas_jax.report.tables import format_table
from nas_jax.study.seam import Settings, Task, model_names
from nas_jax.train.zoo import slug

COLUMNS = [("model", "model", None), ("paper_depth", "T3 depth", None), ("depth", "depth", None),
           ("paper_width", "T3 width (c)", None), ("width_w1", "W1", None), ("width_w2", "W2", ".1f"),
           ("width_w3", "W3", None), ("paper_skip", "T3 #skip", None), ("skip_connects", "#skip", None),
           ("reduce_skip_connects", "#skip (R)", None), ("reduce_depth", "depth (R)", None)]


@dataclasses.dataclass(frozen=True)
class CellsSettings(Settings):
    genotypes: tuple[str, ...] = model_names(())  # () -> every stored genotype; or zoo names and genotype:PATH files
    draw: bool = True  # one PNG per genotype (normal + reduction cell)

    def __post_init__(self):
        for name in self.genotypes:  # a ValueError naming the valid genotypes
            get_genotype(name)


MIN_CELLS_REMARK4 = 4  # cells for Remark 4's descriptive criterion to be read as a verdict
REMARK4 = "Remark 4: NAS cells are wide and shallow and overuse skip connects"


def table3(records: list[dict]) -> str:
    """Table 3 of the study report: our cells beside the paper's (the newest record of each)."""
    rows = {r["model"]: r["metrics"] for r in records if r["task"] == "cells" and r["model"] != "table3_mean"}
    if not rows:
        return "(cells task not run)"
    return format_table([{"model": m, **v} for m, v in rows.items()], [
        ("model", "cell", None), ("depth", "depth", None), ("paper_depth", "paper", None),
        ("width_w3", "width (W3)", None), ("paper_width", "paper", None), ("skip_connects", "#skip", None),
        ("paper_skip", "paper", None)])


def remark4(records: list[dict]) -> list[str]:
    """Remark 4 at this scale, on the descriptive criterion mean depth ≤ 3 and mean #skip ≥ 1."""
    mean = [r["metrics"] for r in records if r["task"] == "cells" and r["model"] == "table3_mean"]
    if not mean:
        return [f"- {REMARK4}: not measured (add the cells task)."]
    m = mean[-1]
    if m["n_models"] < MIN_CELLS_REMARK4:
        found = f"insufficient cells (n = {m['n_models']} < {MIN_CELLS_REMARK4})"
    else:
        found = "holds" if m["depth"] <= 3.0 and m["skip_connects"] >= 1.0 else "does not hold"
    line = (f"- {REMARK4}: **{found}** (descriptive criterion: mean depth ≤ 3 and mean #skip ≥ 1): mean depth "
            f"{m['depth']:.2f} (paper {m['paper_depth_text']}), mean #skip {m['skip_connects']:.2f}, n = "
            f"{m['n_models']} cells.")
    return [line]


def run(config, workdir: str | Path) -> list[dict]:
    names = list(config.cells.genotypes) or list(cells.default_genotypes())
    rows = [cells.table3_row(name) for name in names]  # validates every name before drawing anything
    avg = cells.averages(rows)
    start = results.now()
    measured = [(row["model"], 1, {k: v for k, v in row.items() if k != "model"}) for row in rows]
    measured += [("table3_mean", avg["n_models"], avg)] if avg else []
    records = [results.store(workdir, config, task="cells", model=model, dataset="-", n=n, metrics=metrics,
                             setting={"family": "nas"}, start_time=start) for model, n, metrics in measured]
    if jax.process_index() != 0:
        return records
    print(format_table(rows, COLUMNS))
    if avg:
        print(f"\nmean over the {avg['n_models']} Table 3 models: depth {avg['depth']:.2f} (Table 3 "
              f"{avg['paper_depth_table']:.2f}, text {avg['paper_depth_text']}), width W3 {avg['width_w3']:.2f}c "
              f"(Table 3 {avg['paper_width_table']:.2f}c, text {avg['paper_width_text']}c), W1 {avg['width_w1']:.2f}c, "
              f"W2 {avg['width_w2']:.2f}c, #skip {avg['skip_connects']:.2f}")
    print("T3 = the paper's Table 3; only W3 reproduces its width, and its #skip for DARTS and NASNet equals their "
          "reduction cell's (docs/protocol.md §c.4).")
    if config.cells.draw:
        for name in names:
            cells.draw_genotype(name, Path(workdir) / "figures" / "cells" / f"{slug(name)}.png")
        print(f"figures: {Path(workdir) / 'figures' / 'cells'}/<genotype>.png ({len(names)} files)")
    return records


def _take_target(config, target: str, models) -> None:
    """A study cell draws the study's NAS models."""
    config.cells.genotypes = tuple(m for m in models if model_family(m) == "nas")


TASK = Task("cells", run, settings=CellsSettings, cost_minutes=0.2, joint=True, in_study=("quick", "paper"),
            needs_victims=False, trains=0.0, take_target=_take_target,
            report_sections=(Section("Table 3: cells", table3, remark4),))
