"""Task ``zoo``: parameter counts and cell metrics of every zoo model (Table 3).

Writes ``{workdir}/zoo.json`` and prints it as a table. Parameter counts are
computed with ``jax.eval_shape`` (no FLOPs, no memory), so the full-size zoo
(C=36, 20 layers) is listed in seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from nas_jax import files
from nas_jax.config import check_nas_depth
from nas_jax.models import genotypes
from nas_jax.models.registry import build_model, model_family, model_names
from nas_jax.report import results
from nas_jax.report.tables import format_table
from nas_jax.study.seam import Task


def count_params(model, image_shape=(32, 32, 3)) -> int:
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                               jnp.zeros((1, *image_shape)), train=False))
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes["params"]))


def zoo_rows(names, init_channels: int, layers: int, num_classes: int, auxiliary: bool = False) -> list[dict]:
    rows = []
    for name in names:
        family = model_family(name)
        model = build_model(name, num_classes=num_classes, mean=(0.0,) * 3, std=(1.0,) * 3,
                            init_channels=init_channels, layers=layers, auxiliary=auxiliary,
                            conv_impl="xla")  # shapes only: the smaller trace
        row = {"name": name, "family": family, "params": count_params(model),
               "cell_depth": None, "cell_width": None, "skip_connects": None}
        if family == "nas":
            m = genotypes.genotype_metrics(genotypes.get_genotype(name))
            # Table 3 width is W3 (the reading that reproduces it, docs/protocol.md §c.4); W1/W2 listed too.
            row.update(cell_depth=m["depth"], cell_width=m["width_w3"], skip_connects=m["skip_connects"],
                       cell_width_w1=m["width_w1"], cell_width_w2=m["width_w2"])
        rows.append(row)
    return rows


def run(config, workdir: str | Path) -> list[dict]:
    start = results.now()
    zc = config.zoo
    names = list(zc.models) if zc.models else list(model_names())
    arch = {k: zc[k] for k in ("init_channels", "layers", "num_classes", "auxiliary")}
    rows = zoo_rows(names, **arch)
    out = {"config": arch, "models": rows}
    workdir = Path(workdir)
    if jax.process_index() == 0:
        files.write_json(workdir / "zoo.json", out, indent=2)
        print(format_table(rows, [("name", "model", None), ("family", "family", None), ("params", "params", ",d"),
                                  ("cell_depth", "depth", None), ("cell_width", "width (W3, ×c)", None),
                                  ("cell_width_w1", "W1", None), ("cell_width_w2", "W2", None),
                                  ("skip_connects", "#skip", None)]))
        print(f"\nwritten to {workdir / 'zoo.json'}")
    return [results.store(workdir, config, task="zoo", model=r["name"], dataset="-", n=1, start_time=start,
                          metrics={k: v for k, v in r.items() if k not in ("name", "family")},
                          setting={"family": r["family"], **out["config"]}) for r in rows]


@dataclasses.dataclass(frozen=True)
class ZooTable(Task):
    def check(self, config) -> None:
        """The table's NAS networks are built at ``zoo.layers`` cells."""
        check_nas_depth(config.zoo.models or model_names(), config.zoo.layers, "zoo.layers")


TASK = ZooTable("zoo", run, cost_minutes=0.2, joint=True, in_study=(), needs_victims=False, trains=0.0)
