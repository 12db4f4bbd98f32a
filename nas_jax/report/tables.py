"""Plain-text tables for the terminal and for papers' supplementary material."""

from __future__ import annotations

import re

from nas_jax.models.registry import display_name

_KIND_PATH = re.compile(r"\b(npz|genotype):([^\s,;()]+)")


def short_name(text: str) -> str:
    """``text`` with every ``kind:PATH`` name shortened: a genotype to its label (the file stem,
    :func:`~nas_jax.models.registry.display_name`), an npz dataset to its file name
    (``npz:/long/path/file.npz`` -> ``file.npz``); other text is returned unchanged."""
    def short(m: re.Match) -> str:
        kind, path = m.groups()
        return display_name(f"genotype:{path}") if kind == "genotype" else path.rsplit("/", 1)[-1]

    return _KIND_PATH.sub(short, text)


def _cell(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt and isinstance(value, (int, float)):
        return format(value, fmt)
    return short_name(str(value))


def format_table(rows: list[dict], columns: list[tuple[str, str, str | None]]) -> str:
    """Render ``rows`` with ``columns`` = [(key, header, format spec or None)]."""
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
