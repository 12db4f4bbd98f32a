"""Task ``space``: the vulnerability of the whole DARTS search space, beyond the paper (docs/space.md).

The paper explains NAS cells' vulnerability (§5) by what NAS prefers: smooth loss, low gradient variance, many
skip connects, shallow and wide cells. This task asks whether the NAS cells are more vulnerable than a typical
cell of their space, and which properties measurable at initialisation predict a cell's vulnerability:

1. ``n_random`` genotypes drawn uniformly from the DARTS space (seed ``sample_seed``; random search's sampler),
   written as genotype JSON files ``{workdir}/genotypes/random_s{seed}_{i:04d}.json`` (``genotype:PATH``
   everywhere), next to the named NAS cells ``named``.
2. Per genotype and seed, its properties at initialisation (eval mode, raw BN statistics), in one compiled
   program per shape (:class:`~nas_jax.models.space.SpaceNetwork`): gradient variance (Eqn 14), the NTK
   condition number, the input-gradient norm, the input Hessian's dominant eigenvalue, sharpness along random
   filter-normalised directions (:mod:`nas_jax.analysis.sensitivity`) and the cell metrics of Table 3. One
   ``task: "space"`` record each, resumable genotype by genotype.
3. The first ``n_trained`` random genotypes and the named ones trained and attacked by the study grid in
   ``{workdir}/grid`` (cells ``train`` and each task of ``threats`` per genotype and seed; ``shard`` as the
   study's).
4. ``{workdir}/report.md`` and ``report.json``: per metric the threat tasks report (PGD: the ASR most and least
   likely), each property's rank correlation with it, the named cells' percentiles among the random cells, the
   named − random gap raw and at matched clean accuracy, and the
   figures ``{workdir}/figures/space_predictor_{metric}.png`` and ``space_percentiles_{metric}.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import files
from nas_jax.analysis.grad_variance import gradient_variance
from nas_jax.analysis.ntk import condition_number, ntk_matrix
from nas_jax.analysis.sensitivity import input_gradient_norms, input_hessian_eigenvalues, sharpness
from nas_jax.config import base_config
from nas_jax.data import load_dataset, to_float
from nas_jax.models import space
from nas_jax.models.genotypes import Genotype, genotype_metrics, genotype_sha256, get_genotype
from nas_jax.models.registry import nas_names
from nas_jax.report import plots, results, statistics
from nas_jax.report.study import collect_records
from nas_jax.search.genotype import save_genotype
from nas_jax.search.random_search import random_genotypes
from nas_jax.study import grid
from nas_jax.study.phases import BN_MODES, bn_variables, calibration_batches, check_choices, sample_indices
from nas_jax.study.seam import Settings, Task, run_only
from nas_jax.tasks import TASKS, get_task
from nas_jax.train import zoo

PROPERTIES = ("gradient_variance", "ntk_log10_cond", "input_grad_norm", "input_hessian", "sharpness", "depth",
              "width_w3", "skip_connects")  # what the report relates to the vulnerability
NAS_SHAPE = (4, 4, 4)  # the DARTS space's shape (shape_of): 4 nodes, all concatenated


@dataclasses.dataclass(frozen=True)
class SpaceSettings(Settings):
    """``n_random`` sampled genotypes (``sample_seed``) and the ``named`` NAS cells; properties on ``n_examples``
    common test images with BN ``raw`` (the initial running statistics, which do not normalise) or
    ``calibrated`` on ``calibration_batches`` training batches (§4's pitfall, docs/protocol.md §f.3); the input
    Hessian on the first ``hessian_examples`` of them (``hessian_iterations`` power iterations); sharpness:
    ``sharpness_directions`` directions at ``sharpness_radius``. ``n_trained`` random genotypes (the first of
    the sample) and the named ones are trained and attacked by ``threats`` (registered task names) in the study
    grid, of which this run takes ``shard``."""

    PRESETS: ClassVar[dict] = {"quick": {"n_random": 200, "n_trained": 20, "n_examples": 32,
                                         "named": ("darts", "snas", "pc_darts", "drnas")}}
    n_random: int = 1000
    sample_seed: int = 0
    named: tuple[str, ...] = tuple(n for n in nas_names() if space.shape_of(get_genotype(n)) == NAS_SHAPE)
    n_examples: int = 128
    bn: str = "calibrated"
    calibration_batches: int = 2
    hessian_examples: int = 8
    hessian_iterations: int = 10
    sharpness_radius: float = 0.05
    sharpness_directions: int = 8
    n_trained: int = 100
    threats: tuple[str, ...] = ("pgd",)
    shard: str = run_only("0/1", "i/n: the i-th of n disjoint parts (properties and grid cells)")

    def __post_init__(self):
        for name, value in (("n_random", self.n_random), ("n_examples", self.n_examples),
                            ("hessian_iterations", self.hessian_iterations),
                            ("hessian_examples", self.hessian_examples),
                            ("sharpness_directions", self.sharpness_directions)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not 0 <= self.n_trained <= self.n_random:
            raise ValueError(f"n_trained must be in [0, n_random={self.n_random}], got {self.n_trained}.")
        if self.n_examples < 2:
            raise ValueError(f"n_examples must be >= 2 (a gradient variance), got {self.n_examples}.")
        for name in self.named:
            get_genotype(name)  # a ValueError naming the valid genotypes
        for name in self.threats:
            if not get_task(name).metrics:
                raise ValueError(f"threat {name!r} reports no per-model metric; use tasks such as pgd or nes.")
        check_choices((self.bn,), BN_MODES, "bn")
        if self.bn == "calibrated" and self.calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1 with bn='calibrated', got {self.calibration_batches}.")
        grid.parse_shard(self.shard)


def sample(s: SpaceSettings, workdir: Path) -> list[tuple[str, Genotype, str]]:
    """``(model name, genotype, family)`` of every genotype: the random ones (family ``random``), written once as
    genotype JSON, then the named NAS cells (``nas``)."""
    out = []
    folder = workdir / "genotypes"
    for i, g in enumerate(random_genotypes(s.sample_seed, s.n_random, ops=space.SPACE_OPS)):
        path = folder / f"random_s{s.sample_seed}_{i:04d}.json"
        if not path.exists() or get_genotype(f"genotype:{path}") != g:
            save_genotype(g, path)
        out.append((f"genotype:{path.resolve()}", g, "random"))
    return out + [(name, get_genotype(name), "nas") for name in s.named]


def properties(apply_fn, variables, x, y, key, s: SpaceSettings, num_classes: int) -> dict:
    """The properties at initialisation of the network ``variables`` holds (eval mode, §4 and §5.3)."""
    k1, k2 = jax.random.split(key)
    h = min(s.hessian_examples, len(x))
    gv = gradient_variance(apply_fn, variables, x, y, chunk=0)
    kappa = condition_number(ntk_matrix(apply_fn, variables, x, num_classes=num_classes))["cond"]
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    return {
        "gradient_variance": gv["trace_cov"],
        "ntk_log10_cond": float(np.log10(kappa)) if np.isfinite(kappa) and kappa > 0 else None,
        "input_grad_norm": float(jnp.mean(input_gradient_norms(apply_fn, variables, xj, yj))),
        "input_hessian": float(jnp.mean(input_hessian_eigenvalues(apply_fn, variables, xj[:h], yj[:h], k1,
                                                                   s.hessian_iterations))),
        "sharpness": float(sharpness(apply_fn, variables, xj, yj, k2, s.sharpness_radius, s.sharpness_directions)),
    }


def property_setting(s: SpaceSettings) -> dict:
    """What a genotype's properties depend on besides the genotype and seed (a record's ``setting``)."""
    return {k: v for k, v in s.setting().items() if k not in ("n_random", "n_trained", "threats", "named")}


def measure_properties(config, s: SpaceSettings, genotypes: list[tuple[str, Genotype, str]], workdir: Path,
                       seeds: tuple[int, ...]) -> int:
    """One ``space`` record per genotype of this shard and seed that has none yet; returns how many were written."""
    i_shard, n_shards = grid.parse_shard(s.shard)
    dataset = load_dataset(config.dataset, config.data_dir or None)
    idx = sample_indices(len(dataset.y_test), s.n_examples, config.seed, 15)
    x, y = to_float(dataset.x_test[idx]), dataset.y_test[idx]
    batches = calibration_batches(dataset, s.calibration_batches, config.train.batch_size, config.seed)
    setting = property_setting(s)
    done = {(r["model"], r["seed"], r["setting"].get("genotype_sha256")) for r in results.read_records(workdir, "space")
            if all(r["setting"].get(k) == v for k, v in setting.items())}
    mine = [t for i, t in enumerate(genotypes) if i % n_shards == i_shard]
    by_shape: dict[tuple, list] = {}
    for t in mine:
        by_shape.setdefault(space.shape_of(t[1]), []).append(t)
    written = 0
    for shape, members in by_shape.items():
        ops = space.program_ops([g for _, g, _ in members])
        net = space.SpaceNetwork(members[0][1], num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std,
                                 init_channels=config.arch.init_channels, layers=config.arch.layers, dropout=0.0,
                                 conv_impl=config.arch.conv_impl, space_ops=ops)
        for seed in seeds:
            todo = [t for t in members if (t[0], seed, genotype_sha256(t[1])) not in done]
            if not todo:
                continue
            print(f"properties: {len(todo)} genotypes of shape {shape}, seed {seed} (the first compiles the program)",
                  flush=True)
            variables = jax.jit(net.init)(jax.random.key(seed), jnp.asarray(x[:1]))
            for j, (name, g, family) in enumerate(todo):
                t0, start = time.perf_counter(), results.now()
                v = space.with_genotype(variables, g, ops)
                v = bn_variables(net, v, s.bn, batches, seed)
                metrics = properties(net.apply, v, x, y, jax.random.fold_in(jax.random.key(seed), 1), s,
                                     dataset.num_classes)
                cell = genotype_metrics(g)
                metrics.update({k: cell[k] for k in ("depth", "width_w3", "skip_connects", "reduce_depth",
                                                     "reduce_skip_connects")})
                results.store(workdir, zoo.with_seed(config, seed), task="space", model=name, metrics=metrics,
                              n=len(idx), start_time=start,
                              setting={"family": family, **setting, "genotype_sha256": genotype_sha256(g)})
                written += 1
                print(f"  [{j + 1}/{len(todo)}] {name.rsplit('/', 1)[-1]}: "
                      + ", ".join(f"{k} {metrics[k]:.4g}" for k in PROPERTIES[:5] if metrics[k] is not None)
                      + f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    return written


def victim_tasks() -> tuple[str, ...]:
    """The registered tasks whose study cells train the victims (they run first and record clean accuracy)."""
    return tuple(n for n in TASKS if get_task(n).makes_victims)


def threat_metrics(s: SpaceSettings) -> list:
    """The report metrics of the threat tasks: the vulnerability the report relates to the properties."""
    return [m for t in s.threats for m in get_task(t).metrics]


def accuracy_metric():
    """The clean accuracy a victim-making task reports (matched-accuracy comparison)."""
    return next(m for t in victim_tasks() for m in get_task(t).metrics if m.key == "clean_accuracy")


def grid_config(config, s: SpaceSettings, models: tuple[str, ...], seeds: tuple[int, ...]):
    """The study config of the trained genotypes: cells ``train`` and ``threats`` per model and seed, at this
    preset with the study's default overrides (configs/study.py) and this config's ``arch`` and ``train`` values;
    no family report (the space report reads the cells)."""
    c = grid.task_config("study", config.preset)
    for key in grid.SHARED_FIELDS:
        c[key] = config[key]
    c.seeds = seeds
    c.study.models = models
    c.study.tasks = (*victim_tasks(), *s.threats)
    c.study.shard = s.shard
    c.study.report = False
    default = base_config("space", config.preset)  # the space config's recipe, which every cell must train with
    c.study.overrides.all = (*c.study.overrides.all, *(
        f"{sec}.{k}={v if isinstance(v, str) else repr(v)}" for sec in ("arch", "train") for k, v in config[sec].items()
        if v != default[sec][k]))
    return c


def run(config, workdir: str | Path) -> list[dict]:
    s = SpaceSettings.read("space", config.space)
    workdir = Path(workdir)
    seeds = tuple(int(v) for v in config.get("seeds", ())) or (int(config.seed),)
    genotypes = sample(s, workdir)
    trained = tuple(name for name, _, family in genotypes[:s.n_trained]) + tuple(s.named)
    print(f"space: {s.n_random} random genotypes (sample seed {s.sample_seed}) + {len(s.named)} named NAS cells, "
          f"seeds {list(seeds)}; properties of all, {len(trained)} trained and attacked ({', '.join(s.threats)}) "
          f"in {workdir / 'grid'}", flush=True)
    t0 = time.perf_counter()
    written = measure_properties(config, s, genotypes, workdir, seeds)
    print(f"properties: {written} new records in {time.perf_counter() - t0:.0f} s", flush=True)
    if trained:
        get_task("study").run(grid_config(config, s, trained, seeds), workdir / "grid")
    if jax.process_index() == 0:
        print(f"report: {write_report(workdir, s, seeds)}")
    return results.read_records(workdir, "space")



def per_cell(records: list[dict], metric) -> dict[str, dict[int, float]]:
    """``{model: {seed: value}}`` of a report :class:`~nas_jax.report.study.Metric` over grid records."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["model"], int(r["seed"])), []).append(r)
    out: dict[str, dict[int, float]] = {}
    for (model, seed), recs in groups.items():
        v = metric.read(recs, {})
        if v is not None and np.isfinite(v):
            out.setdefault(model, {})[seed] = float(v)
    return out


def property_means(props: list[dict]) -> dict[str, dict[str, float]]:
    """``{property: {model: mean over seeds}}`` of the ``space`` records."""
    out: dict[str, dict[str, list[float]]] = {p: {} for p in PROPERTIES}
    for r in props:
        for p in PROPERTIES:
            if r["metrics"].get(p) is not None:
                out[p].setdefault(r["model"], []).append(float(r["metrics"][p]))
    return {p: {m: float(np.mean(v)) for m, v in by.items()} for p, by in out.items()}


def analyse(props: list[dict], grid_records: list[dict], named: tuple[str, ...], metrics, accuracy_metric) -> dict:
    """Per vulnerability metric (the threat tasks' report ``metrics``): each property's rank correlation with it
    over the trained random genotypes, the named cells' percentiles among the random ones, and the named − random
    gap, raw and at matched clean accuracy (``accuracy_metric``)."""
    family = {r["model"]: r["setting"]["family"] for r in props}
    mean = property_means(props)
    random_all = [m for m in family if family[m] == "random"]
    accuracy = per_cell(grid_records, accuracy_metric)
    out: dict = {"n_random": len(random_all), "named": list(named), "metrics": {}}
    for metric in metrics:
        vuln = per_cell(grid_records, metric)
        random_cells = sorted(m for m in vuln if family.get(m) == "random")
        named_cells = [m for m in named if m in vuln]
        if not random_cells:
            continue
        cell_mean = {m: float(np.mean(list(v.values()))) for m, v in vuln.items()}
        corr = {p: statistics.rank_correlation([mean[p].get(m) for m in random_cells],
                                               [cell_mean[m] for m in random_cells]) for p in PROPERTIES}
        holm = statistics.holm({p: c.p_value for p, c in corr.items()})
        percentile = {m: {p: statistics.percentile_in(mean[p].get(m), [mean[p].get(r) for r in random_all])
                          for p in PROPERTIES} for m in named_cells}
        for m in named_cells:
            percentile[m][metric.key] = statistics.percentile_in(cell_mean[m], [cell_mean[r] for r in random_cells])
        entry = {"label": metric.label, "n_random": len(random_all), "n_trained_random": len(random_cells),
                 "named": named_cells,
                 "seeds": sorted({s for v in vuln.values() for s in v}),
                 "correlation": {p: {"interval": c, "p_holm": holm[p]} for p, c in corr.items()},
                 "percentile": percentile, "values": cell_mean,
                 "properties": {m: {p: mean[p].get(m) for p in PROPERTIES} for m in cell_mean}}
        values = {m: list(vuln[m].values()) for m in (*random_cells, *named_cells)}
        labels = {m: "nas" if m in named_cells else "manual" for m in values}  # 'manual': the random cells' group
        if len(named_cells) > 1 and len(random_cells) > 1:
            entry["gap"] = statistics.family_gap(values, labels, bounds=metric.bounds)
            entry["min_p"] = statistics.min_achievable_p(len(named_cells), len(random_cells))
            try:
                entry["adjusted_gap"] = statistics.accuracy_adjusted_gap(
                    values, {m: [accuracy.get(m, {}).get(s) for s in vuln[m]] for m in values}, labels,
                    bounds=metric.bounds)
            except ValueError as e:  # too few cells, or an accuracy missing
                entry["adjusted_gap_refused"] = str(e)
        out["metrics"][metric.key] = entry
    return out


def gap_verdict(gap: statistics.Interval, min_p: float) -> str:
    """Whether the named NAS cells' metric is higher than the random cells': "higher" or "lower" when the
    permutation p over cell labels is below α and Welch's interval excludes 0 on that side."""
    if min_p >= statistics.ALPHA:
        return f"insufficient cells (smallest achievable p = {min_p:.3g} ≥ {statistics.ALPHA})"
    if not np.isfinite(gap.low):
        return "inconclusive (no interval)"
    if gap.p_value < statistics.ALPHA and gap.low > 0:
        return "higher"
    if gap.p_value < statistics.ALPHA and gap.high < 0:
        return "lower"
    if gap.p_value < statistics.ALPHA:
        return (f"inconclusive (permutation p = {gap.p_value:.3g} < {statistics.ALPHA}, but Welch's interval "
                "includes 0: more cells would settle it)")
    return f"no significant difference (p = {gap.p_value:.3g})"


def _ci(c: statistics.Interval, fmt: str = ".2f") -> str:
    return "–" if not np.isfinite(c.value) else c.format(fmt).rsplit(" (n=", 1)[0]


def render(analysis: dict) -> str:
    """The report's markdown: per vulnerability metric, the correlations, the named cells' percentiles and the
    gap."""
    intro = (f"{analysis['n_random']} random genotypes with properties at initialisation; named NAS cells: "
             f"{', '.join(analysis['named'])}. Rank correlations are over the trained random genotypes (a sample "
             "of the space); each genotype's value is its mean over seeds. Percentiles: the share of random "
             "cells below the named cell (Wilson interval over the random cells). Intervals are 95%.")
    lines = ["# The DARTS search space: random cells against NAS-found cells", "", intro, ""]
    if not analysis["metrics"]:
        lines.append("No vulnerability measured yet (the grid's attack cells have not finished).")
    for key, a in analysis["metrics"].items():
        seeds = a["seeds"]
        lines += [f"## {a['label']} ({a['n_trained_random']} random + {len(a['named'])} named cells, seeds {seeds})",
                  ""]
        if len(seeds) < 3:
            lines += [(f"Each cell's value is {len(seeds)} training run(s): its seed-to-seed spread is not measured "
                       "(it is part of the scatter the intervals over cells reflect)."), ""]
        lines += ["| property | Spearman ρ [95% CI] | p | Holm p |", "|---|---|---|---|"]
        for p, c in a["correlation"].items():
            i = c["interval"]
            lines.append(f"| {p} | {_ci(i)} | {i.p_value:.3g} | {c['p_holm']:.3g} |")
        lines += ["", "Percentile of each named cell among the random cells:", "",
                  "| cell | " + " | ".join([key, *PROPERTIES]) + " |", "|---" * (len(PROPERTIES) + 2) + "|"]
        for m, pct in a["percentile"].items():
            lines.append(f"| {m} | " + " | ".join(_ci(pct[k]) for k in (key, *PROPERTIES)) + " |")
        if "gap" in a:
            g = a["gap"]
            lines += ["", (f"Named − random mean: {_ci(g, '.3f')} (Welch), permutation p = {g.p_value:.3g}: "
                           f"**{gap_verdict(g, a['min_p'])}**.")]
            if "adjusted_gap" in a:
                adj = a["adjusted_gap"]
                lines.append(f"At matched clean accuracy ({key} ~ 1 + accuracy + [named]): {_ci(adj, '.3f')} "
                             "(bootstrap over cells).")
            else:
                lines.append(f"At matched clean accuracy: not estimated ({a['adjusted_gap_refused']})")
        lines.append("")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, statistics.Interval):
        return {k: (float(v) if np.isfinite(v) else None) if isinstance(v, float) else v
                for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj if not isinstance(obj, float) or np.isfinite(obj) else None


def write_report(workdir: Path, s: SpaceSettings, seeds: tuple[int, ...]) -> Path:
    """``{workdir}/report.md``, ``report.json`` and the figures, from the newest records of this sample."""
    names = {name: genotype_sha256(g) for name, g, _ in sample(s, workdir)}
    setting = property_setting(s)  # records of other settings, genotype contents or seeds are not this study's
    props = [r for r in collect_records(workdir) if r["task"] == "space" and r["seed"] in seeds
             and names.get(r["model"]) == r["setting"].get("genotype_sha256")
             and all(r["setting"].get(k) == v for k, v in setting.items())]
    grid_dir = workdir / "grid"
    grid_records = [r for r in collect_records(grid_dir) if r["model"] in names and r["seed"] in seeds] \
        if grid_dir.exists() else []
    analysis = analyse(props, grid_records, tuple(s.named), threat_metrics(s), accuracy_metric())
    figures = [f for key, a in analysis["metrics"].items() for f in (predictor_figure(a, key, workdir / "figures"),
                                                                 percentile_figure(a, key, workdir / "figures"))]
    text = render(analysis) + "\nFigures: " + ", ".join(f"`{f.relative_to(workdir)}`" for f in figures) + "\n"
    files.write_json(workdir / "report.json", _jsonable(analysis), indent=2)
    files.write_text(workdir / "report.md", text)
    return workdir / "report.md"


def predictor_figure(a: dict, key: str, folder: Path) -> Path:
    """The vulnerability against the property with the largest |ρ|, random cells grey, the named NAS cells marked."""
    import matplotlib.pyplot as plt

    best = max(PROPERTIES, key=lambda p: abs(np.nan_to_num(a["correlation"][p]["interval"].value)))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m, value in a["values"].items():
        x = a["properties"].get(m, {}).get(best)
        if x is None:
            continue
        named = m in a["named"]
        ax.scatter(x, value, c="tab:red" if named else "0.6", s=40 if named else 14, zorder=3 if named else 2)
        if named:
            ax.annotate(m, (x, value), fontsize=8, xytext=(3, 3), textcoords="offset points")
    rho = a["correlation"][best]["interval"]
    ax.set(xlabel=f"{best} at initialisation", ylabel=a["label"], title=f"{a['label']} vs {best}: ρ = {_ci(rho)}")
    if best in ("gradient_variance", "input_hessian", "sharpness") and all(
            (a["properties"].get(m, {}).get(best) or 0) > 0 for m in a["values"]):
        ax.set_xscale("log")
    ax.scatter([], [], c="0.6", s=14, label="random cells")
    ax.scatter([], [], c="tab:red", s=40, label="NAS cells")
    ax.legend(fontsize=8)
    return plots.save_figure(fig, folder / f"space_predictor_{key}.png")


def percentile_figure(a: dict, key: str, folder: Path) -> Path:
    """Each named cell's percentile among the random cells, per property and for the vulnerability metric."""
    import matplotlib.pyplot as plt

    columns = (key, *PROPERTIES)
    fig, ax = plt.subplots(figsize=(8, 4))
    cells = list(a["percentile"])
    for j, m in enumerate(cells):
        xs = np.arange(len(columns)) + (j - (len(cells) - 1) / 2) * 0.8 / max(len(cells), 1)
        vals = [a["percentile"][m][c] for c in columns]
        errors = [[v.value - v.low for v in vals], [v.high - v.value for v in vals]]
        ax.errorbar(xs, [v.value for v in vals], yerr=errors, fmt="o", ms=4, capsize=2, label=m)
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    title = f"NAS cells among random cells: properties of {a['n_random']}, {key} of {a['n_trained_random']} trained"
    ax.set(ylim=(0, 1), ylabel="percentile among random cells", xticks=range(len(columns)), title=title)
    ax.set_xticklabels([a["label"] if c == key else c for c in columns], rotation=30, ha="right")
    plots.legend_outside(ax, fontsize=8)
    return plots.save_figure(fig, folder / f"space_percentiles_{key}.png")


TASK = Task("space", run, settings=SpaceSettings, cost_minutes=30.0, in_study=(), needs_victims=False, trains=0.0,
            own_seeds=True)
