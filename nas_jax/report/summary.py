"""One row per model across attacks, in the layout of the paper's Table 4 (§5.2; docs/protocol.md §f.4, §h.4).

  python launch/table4.py workdir/table4 [--models darts,darts_i] [--out table4.md]

Reads ``{workdir}/results.jsonl``. A row is one victim (a model and its training spec's hash: a bf16 and a
float32 victim are two rows), each cell the newest record of its measurement (docs/provenance.md); a ``settings``
column names the settings that differ between rows. The cells are the tasks' own (:class:`Summary`, carried by
their study metrics); '-' where a task was not run. A searched cell (``genotype:PATH``, as ``launch/table4.sh``
names it) is labelled with the ``method / variant`` of the ``search`` record beside its genotype.json. The paper's
values (CIFAR-10, :data:`PAPER_TABLE4`) follow the table for the stored DARTS variants it shows.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from nas_jax.files import json_sha256
from nas_jax.models.registry import display_name
from nas_jax.report.results import flatten, newest, read_records
from nas_jax.report.tables import format_table

PAPER_TABLE4 = {  # docs/protocol.md §h.4: PGD ASR (M), (L), backdoor ASR, CAD, MI AUC on CIFAR-10 [paper]
    "darts": (1.000, 0.867, 0.999, 0.027, 0.562),
    "darts_i": (0.883, 0.727, 0.904, 0.046, 0.534),
    "darts_ii": (0.930, 0.750, 0.988, 0.030, 0.531),
    "darts_iii": (0.820, 0.656, 0.842, 0.046, 0.527),
}

COLUMNS = [("label", "model", None), ("settings", "settings", None), ("family", "family", None),
           ("searched", "search (method / mitigation)", None)]


@dataclasses.dataclass(frozen=True)
class Summary:
    """A task's cells of Table 4: ``columns`` (row key, header, format); ``pick(records)``: from one victim's
    records of every task (oldest first) the record its cells come from and their values (extra keys, e.g. a
    budget for ``note``, stay in the row), None where none fits; ``note(rows)``: a line under the table or None;
    ``place``: where its columns go (the paper's Table 4 order)."""

    columns: tuple[tuple[str, str, str | None], ...]
    pick: Callable[[list[dict]], tuple[dict, dict] | None]
    place: int
    note: Callable[[list[dict]], str | None] = lambda rows: None


def summaries(metrics) -> list[Summary]:
    """The Table 4 summaries that ``metrics`` (study metrics, :class:`~nas_jax.report.study.Metric`) read, in
    their places."""
    return sorted(dict.fromkeys(m.summary for m in metrics if m.summary), key=lambda s: s.place)


def newest_cells(task: str, columns: dict[str, str]) -> Callable:
    """A :attr:`Summary.pick`: the victim's newest ``task`` record, its ``metrics[columns[c]]`` as column c."""
    def pick(records):
        own = [r for r in records if r["task"] == task]
        return (own[-1], {c: own[-1]["metrics"].get(k) for c, k in columns.items()}) if own else None

    return pick


def at_largest(task: str, key: str, column: str, metric: str, at: str, keep=lambda setting: True) -> Callable:
    """A :attr:`Summary.pick`: the newest ``task`` record at the largest ``setting[key]`` among those ``keep``
    accepts; its ``metrics[metric]`` as ``column`` and that largest value as ``at``."""
    def pick(records):
        own = [r for r in records if r["task"] == task and r["setting"].get(key) is not None and keep(r["setting"])]
        if not own:
            return None
        top = max(r["setting"][key] for r in own)
        chosen = newest_of(own, lambda r: r["setting"][key] == top)
        return chosen, {column: chosen["metrics"].get(metric), at: top}

    return pick


def newest_of(records: list[dict], keep) -> dict | None:
    """The newest record for which ``keep(record)`` holds (``records`` in the order of :func:`newest`)."""
    chosen = [r for r in records if keep(r)]
    return chosen[-1] if chosen else None


def victim_key(record: dict) -> str:
    """The victim a record measured: the content hash of its training spec (the model name for records written
    before records named their victim)."""
    return (record.get("victim") or {}).get("spec_sha256") or f"name:{record['model']}"


def _victim_settings(record: dict) -> dict:
    spec = dict((record.get("victim") or {}).get("spec") or {})
    for key in ("model", "seed", "dataset"):  # their own columns or the row's key
        spec.pop(key, None)
    if spec:  # float32 specs leave their dtype out (zoo.training_spec)
        spec["arch"] = {"dtype": "float32", **spec.get("arch", {})}
    if isinstance(spec.get("genotype"), dict):  # a genotype file's content, by the hash in its zoo folder's name
        spec["genotype"] = json_sha256(spec["genotype"], 12)  # = genotypes.genotype_sha256 of that genotype
    return flatten(spec)


def _differing(dicts: list[dict], missing_differs: bool = False) -> set[str]:
    """Keys whose values differ between the dicts that have them (or between all, a missing key counting as a
    value of its own)."""
    return {k for k in set().union(*dicts)
            if len({repr(d[k]) if k in d else "absent" for d in dicts if missing_differs or k in d}) > 1}


def settings_column(rows: list[dict]) -> None:
    """Fill each row's ``settings``: its victim settings that differ between rows of the same model, and the
    task settings of its records that differ between any rows (``k=v, ...``; None where nothing differs)."""
    shown: dict[int, set[str]] = {id(r): set() for r in rows}
    for model in {r["model"] for r in rows}:
        own = [r for r in rows if r["model"] == model]
        keys = _differing([r["_victim_settings"] for r in own], missing_differs=True)
        for r in own:
            shown[id(r)] |= keys & set(r["_victim_settings"])
    task_keys = _differing([r["_task_settings"] for r in rows])
    for r in rows:
        merged = {**r["_victim_settings"], **r["_task_settings"]}
        keys = sorted(shown[id(r)] | (task_keys & set(r["_task_settings"])))
        r["settings"] = ", ".join(f"{k}={merged[k]}" for k in keys) or None


def search_label(model: str) -> str | None:
    """``method / variant`` of the search that wrote ``model``'s genotype (``genotype:PATH``: the record in PATH's
    folder whose ``genotype_path`` is that file), or None for a stored model or a genotype no record wrote."""
    if not model.startswith("genotype:"):
        return None
    path = Path(model.removeprefix("genotype:"))
    search = newest_of(newest(read_records(path.parent)),
                       lambda r: Path(r.get("setting", {}).get("genotype_path", "")).name == path.name)
    if not search:
        return None
    setting = search["setting"]
    return f"{setting.get('method', 'darts')} / {setting.get('variant', '?')}"


def summarize(records: list[dict], table: list[Summary], models: list[str] | None = None) -> list[dict]:
    """Rows of :data:`COLUMNS` and the ``table``'s columns, one per victim of ``models`` (default: every model with
    a record, first-seen order; a model's victims oldest first), each cell from the victim's newest record of
    that measurement."""
    records = newest(records)
    models = models or list(dict.fromkeys(r["model"] for r in records))
    rows = []
    for name in models:
        mine = [r for r in records if r["model"] == name]
        for victim in dict.fromkeys(victim_key(r) for r in mine):
            rows.append(_victim_row(name, [r for r in mine if victim_key(r) == victim], table))
    settings_column(rows)
    for r in rows:
        del r["_victim_settings"], r["_task_settings"]
    return rows


def _victim_row(name: str, own: list[dict], table: list[Summary]) -> dict:
    row = {"model": name, "label": display_name(name),
           "family": next((r["setting"].get("family") for r in own if r["setting"].get("family")), None),
           "searched": search_label(name)}
    row["_task_settings"] = {}  # those of the records its cells come from
    for summary in table:
        if picked := summary.pick(own):
            row.update(picked[1])
            row["_task_settings"].update((picked[0].get("identity") or {}).get("task_settings") or {})
    row["_victim_settings"] = _victim_settings(own[-1])
    return row


def render(rows: list[dict], table: list[Summary]) -> str:
    """The table, with the tasks' notes (e.g. the budget a column is at) below it."""
    columns = [c for c in COLUMNS if c[0] not in ("searched", "settings") or any(r.get(c[0]) for r in rows)]
    lines = [format_table(rows, columns + [c for s in table for c in s.columns])]
    lines += [note for s in table if (note := s.note(rows))]
    paper = [f"{r['model']} {m:.1%}/{lo:.1%}, {asr:.1%}/{cad:.1%}, {auc:.3f}" for r in rows
             if r["model"] in PAPER_TABLE4 for m, lo, asr, cad, auc in [PAPER_TABLE4[r["model"]]]]
    if paper:
        lines.append("Paper Table 4 (CIFAR-10; PGD ASR M/L, backdoor ASR/CAD, MI AUC): " + "; ".join(paper) + ".")
    return "\n".join(lines)


def main(argv, table: list[Summary]) -> int:
    """The command line of launch/table4.py, with the registered tasks' ``table``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", help="a directory holding results.jsonl")
    p.add_argument("--models", default="", help="comma-separated model names (default: all, in order of appearance)")
    p.add_argument("--out", default="", help="also write the table to this file")
    a = p.parse_args(argv)
    records = read_records(a.workdir)
    if not records:
        p.error(f"no records in {Path(a.workdir) / 'results.jsonl'}; run the tasks with --workdir={a.workdir} first.")
    known = list(dict.fromkeys(r["model"] for r in records))
    models = [m for m in a.models.split(",") if m] or None
    missing = [m for m in models or [] if m not in known]
    if missing:
        p.error(f"no records for {missing} in {a.workdir}; models with records: {', '.join(known)}.")
    text = render(summarize(records, table, models), table)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0

