"""The whole study as one resumable grid: study.models × study.tasks × seeds (every
experiment of §3-§5).

  python launch/main.py --config=configs/study.py --config.seeds="(0,1)"           # quick (digits)
  python launch/main.py --config=configs/study.py:paper                                  # the paper's grid
  python launch/main.py --config=configs/study.py --config.study.shard=1/4               # the 2nd of 4 parts
  python -m nas_jax.tasks.study workdir/study                                            # the report again

Each cell (task, model, seed) runs configs/{task}.py at this preset with the cell's model and seed
in {workdir}/cells/{task}/{model}/seed{s} (its own results.jsonl), resumable cell by cell (a
finished cell is skipped on a rerun; a killed one resumes through its task). Victims of seed s live
in the zoo at {zoo_dir}/{dataset}/{model}/{preset}_seed{s} (seed 0: {preset}). At the end the
report ({workdir}/report.md and report.json: per-model means with intervals inside each metric's
range, NAS − manual gaps over architecture means with Welch intervals, permutation and Holm p-values,
the accuracy-adjusted gap, a verdict per metric and remark under the rules of docs/statistics.md) is
written from every finished cell. Fan-out: launch/slurm_study.sh (one shard per array task) and
launch/ray_study.py (one Ray task per cell); see BUILD.md.

Per-task settings: `study.overrides.<task>` (and `.all`) hold launcher-style 'key=value' strings,
e.g. --config.study.overrides.pgd="('pgd.n_inputs=50',)". The search task runs once per seed and searcher of
`study.search_methods` (e.g. --config.study.search_methods="('darts','gdas')"; cells search/{method}/seed{s}).
quick: digits, four NAS (darts, snas, pc_darts, drnas) and four manual models (resnet, vgg, dla, bit) -- the
fewest for which the permutation test of a family gap can reach p < 0.05 (2 / C(8, 4) = 0.029; with 2 + 2 the
smallest p is 1/3, docs/statistics.md) -- and the tasks train, pgd, grad_variance, landscape, cells (those whose
``in_study`` names quick). The manual models are the cheapest of the seven to train on this CPU (resnext's
grouped convolutions and wideresnet's width cost several times more). The quick study measures only what its
report reads: gradient variance with the raw BN statistics, the landscape at input radius 0.02 (and in
parameter space); the task configs keep both BN states and both radii.
A task outside the package joins the grid by its config file:
--config.study.tasks="('train','pgd','examples/custom_attack/config.py')".
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks import TASKS, get_task


def default_tasks(preset: str) -> tuple[str, ...]:
    """The tasks whose ``in_study`` names this preset's grid (train first: it trains the victims)."""
    grid = "quick" if preset == "quick" else "paper"
    return tuple(sorted((n for n in TASKS if grid in get_task(n).in_study), key=lambda n: n != "train"))


def get_config(preset: str = "quick"):
    c = base_config("study", preset)
    quick = c.preset == "quick"
    c.study = ml_collections.ConfigDict()
    c.study.models = ("darts", "snas", "pc_darts", "drnas", "resnet", "vgg", "dla", "bit") if quick else paper_zoo()
    c.study.tasks = default_tasks(c.preset)  # names, or config files of tasks outside the package
    c.seeds = (0,)
    c.study.search_methods = ("darts",)  # the search task's searchers: darts pc_darts gdas snas drnas random
    c.study.shard = "0/1"  # 'i/n': run the i-th of n disjoint parts of the grid
    c.study.only = ()  # cell names 'task/model/seed{s}' to run instead of a shard (the Ray driver)
    c.study.report = True  # write {workdir}/report.md after the cells
    # per task, 'key=value' overrides of its cells; by default what the task's study_overrides give this preset
    # (the quick study measures only what the report reads: a third less work)
    c.study.overrides = ml_collections.ConfigDict(
        {"all": (), **{t: get_task(t).study_overrides.get(c.preset, ()) for t in sorted(TASKS) if t != "study"}})
    return c
