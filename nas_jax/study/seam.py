"""The task seam (docs/extending.md): what a task is, and the one driver that runs a task over the victims.

A task is one module that defines ``TASK`` plus one config file. A :class:`VictimTask` gives

- its settings as one frozen dataclass (:class:`Settings`): the only place for their defaults (per preset) and
  their checks; the config file's section ``config.<name>`` is built from it and read back through it, and the
  record's ``setting`` is derived from it;
- the measurement of one victim (``measure(ctx, entry) -> (metrics, n)``);
- what it reports: the table's columns, the figure, and the per-model metrics the study report compares across
  families (:class:`~nas_jax.report.study.Metric`, with the paper's figure and direction);
- what a study cell of it costs (minutes at the quick preset, for balancing the grid's shards).

:func:`run_victims` owns the rest: the victims (trained into the zoo first where missing), the attack input
order and key, records written by process 0 only, the table, the figure and the one-line progress per victim.
Seeds, the study grid and the report are run by the registry (:mod:`nas_jax.tasks`), the grid
(:mod:`nas_jax.study.grid`) and the report (:mod:`nas_jax.report.study`) from the same object. A task whose
measurement is not one victim at a time (search, the zoo table, cross-model tasks) is a :class:`Task` with
its own ``run``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from nas_jax.errors import UserError
from nas_jax.report import results
from nas_jax.report.tables import format_table
from nas_jax.study import victims

ALL_MODELS = "*"  # the target of a study cell that takes all the study's models at once (a joint task)


def run_only(default, doc: str = ""):
    """A settings field that changes how a measurement runs, not what it measures (batch sizes), or that is
    recorded in the record's ``n`` (input counts): left out of the record's ``setting``."""
    return dataclasses.field(default=default, metadata={"run_only": True, "doc": doc})


def model_names(default: tuple[str, ...]):
    """A settings field that holds model names (victims beyond the config's ``models``): checked as they are."""
    return dataclasses.field(default=default, metadata={"models": True})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of a task's settings: subclass it as a frozen dataclass with every field's paper default, and give
    the presets' differences in :attr:`PRESETS` (e.g. ``{"quick": {"n_inputs": 100}}``). Check values in
    ``__post_init__`` by raising ``ValueError`` with what is allowed. A field may itself be settings (a nested
    section, given in a preset as an instance)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def section(cls, preset: str) -> ml_collections.ConfigDict:
        """The config section of ``preset``: the defaults with that preset's differences."""
        values = {f.name: f.default for f in dataclasses.fields(cls)}
        values.update(cls.PRESETS.get(preset, {}))
        return ml_collections.ConfigDict({k: dataclasses.asdict(v) if isinstance(v, Settings) else v
                                          for k, v in values.items()})

    @classmethod
    def read(cls, name: str, section) -> Settings:
        """The settings of config section ``name`` (a UserError that names the field and the fix)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - set(fields))
        if unknown:
            raise UserError(f"invalid config: {name} has unknown fields {unknown}; valid: {sorted(fields)}.")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in section.items():
            if hints.get(key) is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(value, list):
                value = tuple(value)
            if isinstance(hints.get(key), type) and issubclass(hints[key], Settings) and not isinstance(value, Settings):
                value = hints[key].read(f"{name}.{key}", value)  # a nested section, e.g. stealing.thief
            values[key] = value
        try:
            return cls(**values)
        except (ValueError, TypeError) as e:
            raise UserError(f"invalid config: {name}: {e} Set it with --config.{name}.FIELD=VALUE.") from e

    def setting(self) -> dict:
        """What the measurement depends on, for the record (every field but the :func:`run_only` ones)."""
        return {f.name: v.setting() if isinstance(v := getattr(self, f.name), Settings) else v
                for f in dataclasses.fields(self) if not f.metadata.get("run_only")}


@dataclasses.dataclass
class Context:
    """What every victim of one run shares: the config, the task's settings, the dataset, the seeded order of
    test inputs that attack inputs are drawn from (G5), the run's key, the workdir (``main``: this process
    writes files) and what the task's ``setup`` prepared once for all victims (``shared``)."""

    config: ml_collections.ConfigDict
    settings: Any
    dataset: Any
    order: np.ndarray
    key: jax.Array
    workdir: Path
    main: bool
    shared: Any = None

    def correct(self, entry) -> np.ndarray:
        """Whether ``entry`` classifies each test input correctly (eval mode)."""
        return victims.predictions(entry, self.dataset.x_test) == self.dataset.y_test

    def inputs(self, correct: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` test indices of the shared order that the victim classifies correctly."""
        return victims.correct_inputs(correct, self.order, n)


Column = tuple[str, str, "str | None"]  # (metric key, header, format spec)


@dataclasses.dataclass
class Measurement:
    """One record's worth of a victim: its ``metrics`` over ``n`` inputs; ``setting``: what tells it apart from
    the victim's other measurements (e.g. the radius of a sweep), added to the record's setting; ``row``: data
    for the figure only (e.g. ROC curves), kept out of the record."""

    metrics: dict
    n: int
    setting: dict = dataclasses.field(default_factory=dict)
    row: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Task:
    """A task that runs itself: ``run(config, workdir) -> records``. ``metrics``: the per-model numbers the study
    report compares across families. ``cost_minutes``: a study cell's minutes at the quick preset on 2 CPU cores,
    victim training excluded (docs/measurements.md; only the ratios matter, for balancing shards). ``joint``:
    one study cell per seed over all the study's models (it compares models inside one call). ``in_study``: the
    presets whose default study grid includes it; ``study_overrides``: per preset, the ``key=value`` overrides its
    default study cells run with (to measure only what the report reads). ``makes_victims``: its study cells
    train the victims the other cells of their (model, seed) use (they run first). ``needs_victims``: False for a
    task that uses no trained victim (its study cells wait for no training); ``trains``: the share of the training set
    its networks train on, which its batch sizes are checked against (the search: its weight half, 0.5; 0: it
    trains nothing). ``study_targets(study_config)``: its study cells' targets per seed (default: each model, or
    all of them at once when ``joint``); ``take_target(config, target, models)``: a cell's target and models into the
    task's config (default: ``config.models``)."""

    name: str
    run: Callable[[ml_collections.ConfigDict, str | Path], list[dict]]
    settings: type[Settings] | None = None
    metrics: tuple = ()
    cost_minutes: float = 1.0
    joint: bool = False
    in_study: tuple[str, ...] = ("paper",)
    study_overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    makes_victims: bool = False
    needs_victims: bool = True
    trains: float = 1.0
    report_sections: tuple = ()  # its own parts of the study report (nas_jax.report.study.Section)
    study_targets: Callable | None = None
    take_target: Callable | None = None
    own_seeds: bool = False  # it runs every seed of config.seeds itself in one call (the study grid, the space study)

    def cell_targets(self, study) -> list[str]:
        """The targets of this task's study cells for one seed (module docstring of the grid)."""
        if self.study_targets is not None:
            return list(self.study_targets(study))
        return [ALL_MODELS] if self.joint else list(study.study.models)

    def set_cell(self, config, target: str, models: tuple[str, ...]) -> None:
        """Put a study cell's target and models into the task's ``config``."""
        if self.take_target is not None:
            self.take_target(config, target, models)
        elif "models" in config:
            config.models = models

    def victims(self, config) -> tuple[str, ...]:
        """The model names the task's settings hold (fields made with :func:`model_names`), checked with the
        config's ``models`` before any work."""
        if self.settings is None:
            return ()
        settings = self.settings.read(self.name, config[self.name])
        return tuple(n for f in dataclasses.fields(settings) if f.metadata.get("models") for n in getattr(settings, f.name))

    def check(self, config) -> None:
        """A task's own checks beyond its settings, before any work (:meth:`victims` has read the settings, refusing
        bad ones, when ``check_config`` calls this)."""


@dataclasses.dataclass(frozen=True)
class VictimTask(Task):
    """A task that measures each victim of ``config.models`` in turn (run by :func:`run_victims`).

    ``measure(ctx, entry) -> Measurement`` (or a list of them, one record each): one victim's metrics and the
    number of inputs they are over. ``setup(ctx)``: what all victims share, computed once (``ctx.shared``),
    e.g. a sample of inputs. ``columns``: the table's columns after model and family (or a function of the
    settings that gives them). ``figure(rows, path, title) -> path``: one row per measurement (``model``,
    ``family``, ``n``, its setting, metrics and row data). ``title(settings, config)``: what was run, e.g.
    "PGD L∞ ε=8/255 on digits" (the driver adds n and the seed). ``describe(metrics, n)``: the progress line
    of one measurement. ``n_label``: what ``n`` counts, for the figure's title."""

    run: Callable = None
    measure: Callable = None
    setup: Callable | None = None
    columns: tuple[Column, ...] | Callable = ()
    figure: Callable | None = None
    title: Callable = lambda settings, config: ""
    describe: Callable = lambda metrics, n: ""
    n_label: str = "inputs per model"
    figure_file: str = ""  # default: {name}.png

    def __post_init__(self):
        object.__setattr__(self, "run", lambda config, workdir: run_victims(self, config, workdir))


def run_victims(task: VictimTask, config, workdir: str | Path) -> list[dict]:
    """Measure every victim of ``config.models`` (seed ``config.seed``) with ``task``: one record per measurement
    in ``{workdir}/results.jsonl``, then a table and the figure (``{workdir}/figures/{task}.png`` by default)."""
    s = task.settings.read(task.name, config[task.name])
    dataset, entries = victims.load_victims(config)
    main = jax.process_index() == 0
    ctx = Context(config, s, dataset, victims.attack_order(len(dataset.y_test), config.seed),
                  jax.random.key(config.seed), Path(workdir), main)
    if task.setup is not None:
        ctx.shared = task.setup(ctx)
    records, rows = [], []
    for entry in tqdm(entries, desc=task.name, unit="victim", dynamic_ncols=True, disable=not main):
        start = results.now()
        out = task.measure(ctx, entry)
        for m in out if isinstance(out, list) else [out]:
            record = results.make_record(config, task=task.name, model=entry.name, metrics=m.metrics, n=m.n,
                                         setting={"family": entry.family, **s.setting(), **m.setting},
                                         start_time=start)
            if main:
                results.append_record(workdir, record)
                tqdm.write(f"  {entry.name}: {task.describe(m.metrics, m.n)}")
            records.append(record)
            rows.append({"model": entry.name, "family": entry.family, "n": m.n, **m.setting, **m.metrics, **m.row})
    if main and rows:
        columns = task.columns(s) if callable(task.columns) else task.columns
        print(format_table(rows, [("model", "model", None), ("family", "family", None), *columns]))
        if task.figure is not None:
            ns = sorted({r["n"] for r in rows})
            n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
            title = f"{task.title(s, config)}, n = {n} {task.n_label}, seed {config.seed}"
            path = Path(workdir) / "figures" / (task.figure_file or f"{task.name}.png")
            print(f"figure: {task.figure(rows, path, title)}")
    return records
