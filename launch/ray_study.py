"""The study grid on Ray: one Ray task per cell (task, model, seed), then the report.

  pip install -e ".[ray]"
  python launch/ray_study.py --config=configs/study.py:paper --workdir=/shared/study \
      --gpus_per_cell=1 --cpus_per_cell=4 [--address=auto] [--config.seeds="(0,1,2)"]

Every cell is one launcher call, ``python launch/main.py <the same --config flags>
--config.study.only="('<cell>',)" --config.study.report=False --workdir=WORKDIR``, run as a Ray task
with the given resources on whichever node Ray picks (the workdir and zoo must be on a shared
filesystem). A cell that needs a victim waits for the ``train`` cell of its (model, seed) when the
grid has one, so no victim is trained twice. Cells are resumable: rerunning the driver skips
finished cells. Without ``--address`` the driver starts a local Ray instance (``--num_cpus``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import app, flags

from nas_jax.config_loader import load, split_argv

flags.DEFINE_string("workdir", None, "the study's output directory (shared by all nodes).")
flags.DEFINE_float("gpus_per_cell", 0.0, "GPUs each cell's Ray task asks for.")
flags.DEFINE_float("cpus_per_cell", 1.0, "CPUs each cell's Ray task asks for.")
flags.DEFINE_string("address", "", "a running Ray cluster's address ('auto' to find it); '' starts a local one.")
flags.DEFINE_integer("num_cpus", 0, "CPUs of the local Ray instance started when --address is '' (0: all).")
flags.mark_flags_as_required(["workdir"])


def cell_argv(config_flags_text: list[str], workdir: str, cell_name: str) -> list[str]:
    """The launcher call that runs one cell of the grid the driver was given."""
    return [sys.executable, str(ROOT / "launch" / "main.py"), *config_flags_text, f"--workdir={workdir}",
            f"--config.study.only=('{cell_name}',)", "--config.study.report=False"]


def run_cell(name: str, argv: list[str], *_after) -> str:
    """Run one cell's launcher call; ``_after`` are the results of the cells it waits for."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # several cells may share one GPU
    out = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cell {name} failed ({' '.join(argv[2:])}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return name


def main(argv):
    import ray

    from nas_jax.report.study import write_report
    from nas_jax.study import grid
    from nas_jax.tasks import check_config, study_metrics, study_sections
    from nas_jax.tasks.study import study_grid

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; pass options as --config.key=value.")
    spec, overrides, _ = split_argv(sys.argv[1:])
    if spec is None:
        raise app.UsageError("--config=FILE[:preset] is required, e.g. --config=configs/study.py:paper.")
    config = load(spec, overrides)  # the launcher's loader: what every cell will load
    check_config(config)  # the study config's own checks, before the grid is built and Ray starts
    workdir = str(Path(flags.FLAGS.workdir).resolve())  # cells run from the repo root
    passed = [f"--config={spec}", *(f"--config.{o}" for o in overrides)]
    s = config.study
    cells, tasks = study_grid(config)
    local = {"num_cpus": flags.FLAGS.num_cpus or None} if not flags.FLAGS.address else {}
    ray.init(address=flags.FLAGS.address or None, include_dashboard=False, **local)
    remote = ray.remote(num_cpus=flags.FLAGS.cpus_per_cell, num_gpus=flags.FLAGS.gpus_per_cell)(run_cell)
    victims, pending, by_name = {}, [], {t.name: t for t in tasks}
    for cell in cells:  # grid order: a seed's train cells come before the cells that use their victims
        if not by_name[cell.task].needs_victims:  # e.g. a search
            after = []
        elif cell.model == grid.ALL_MODELS:  # a joint cell waits for every victim of its seed
            after = [ref for (_, seed), ref in victims.items() if seed == cell.seed]
        else:
            after = [victims[(cell.model, cell.seed)]] if (cell.model, cell.seed) in victims else []
        ref = remote.remote(cell.name, cell_argv(passed, workdir, cell.name), *after)
        if by_name[cell.task].makes_victims:
            victims[(cell.model, cell.seed)] = ref
        pending.append(ref)
    for name in ray.get(pending):
        print(f"done: {name}", flush=True)
    report = write_report(workdir, study_metrics(tasks), models=tuple(s.models), sections=study_sections(tasks))
    print(f"report: {report}")


if __name__ == "__main__":
    app.run(main, argv=[sys.argv[0], *split_argv(sys.argv[1:])[2]])
