"""Genotypes of the NAS zoo and cell metrics.

PROTOCOL §b.1–§b.2 (the op set and cell wiring), §c.1–§c.2 (the zoo, the
DARTS-i/ii/iii mitigation variants) and §c.4 (Table 3: cell depth, width, #skip).
Genotype data: ``genotypes.json`` (a copy of ``reference/genotypes.json``).
A user genotype is loaded from a JSON file with ``genotype:PATH``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

_DATA_FILE = Path(__file__).with_name("genotypes.json")


@functools.cache
def _data() -> dict:
    with open(_DATA_FILE) as f:
        return json.load(f)


def primitives() -> tuple[str, ...]:
    """The 8 DARTS search primitives, in search order (§b.1)."""
    return tuple(_data()["primitives"])


def allowed_ops() -> tuple[str, ...]:
    """The 10-op evaluation search space of the paper (§b.1)."""
    return tuple(_data()["allowed_ops"])


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A cell pair: lists of (op, input_index); pairs 2k, 2k+1 feed node k+2."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    @property
    def steps(self) -> int:
        """Number of intermediate nodes of the normal cell."""
        return len(self.normal) // 2

    def to_json(self) -> dict:
        return {
            "normal": [list(p) for p in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(p) for p in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }


def genotype_from_dict(d: dict, source: str = "genotype") -> Genotype:
    """Build and validate a genotype from its JSON form (PROTOCOL Appendix A.14)."""
    missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in d]
    if missing:
        raise ValueError(
            f"{source}: missing keys {missing}; a genotype needs 'normal', 'normal_concat', "
            "'reduce' and 'reduce_concat' (see reference/genotypes.json for the format)."
        )
    g = Genotype(
        normal=tuple((str(op), int(i)) for op, i in d["normal"]),
        normal_concat=tuple(int(i) for i in d["normal_concat"]),
        reduce=tuple((str(op), int(i)) for op, i in d["reduce"]),
        reduce_concat=tuple(int(i) for i in d["reduce_concat"]),
    )
    for kind in ("normal", "reduce"):
        _validate_cell(getattr(g, kind), getattr(g, f"{kind}_concat"), f"{source} ({kind} cell)")
    return g


def _validate_cell(cell, concat, where: str) -> None:
    ops = allowed_ops()
    if len(cell) == 0 or len(cell) % 2:
        raise ValueError(f"{where}: needs an even, non-zero number of (op, input) pairs, got {len(cell)}.")
    for k, (op, idx) in enumerate(cell):
        node = k // 2 + 2
        if op not in ops or op == "none":
            raise ValueError(f"{where}: op {op!r} at position {k} is not allowed; valid ops: {[o for o in ops if o != 'none']}.")
        if not 0 <= idx < node:
            raise ValueError(f"{where}: pair {k} feeds node {node} from input {idx}; inputs must be in [0, {node}).")
    n_states = len(cell) // 2 + 2
    bad = [c for c in concat if not 0 <= c < n_states]
    if bad or not concat:
        raise ValueError(f"{where}: concat {list(concat)} must name states in [0, {n_states}).")


def zoo_names() -> tuple[str, ...]:
    """Canonical names of every stored genotype (aliases excluded)."""
    aliases = _data()["aliases"]
    return tuple(k for k in _data()["genotypes"] if k not in aliases)


def paper_nas_zoo() -> tuple[str, ...]:
    """The 10 NAS models of the paper's study (§c.1), with DARTS as 'darts'."""
    return tuple("darts" if n == "darts_v2" else n for n in _data()["paper_nas_zoo"])


def canonical_name(name: str) -> str:
    return _data()["aliases"].get(name, name)


def is_genotype_name(name: str) -> bool:
    return name.startswith("genotype:") or canonical_name(name) in _data()["genotypes"]


def get_genotype(name: str) -> Genotype:
    """Resolve a zoo name, an alias (e.g. 'darts' -> 'darts_v2') or 'genotype:PATH'."""
    if name.startswith("genotype:"):
        path = Path(name.removeprefix("genotype:"))
        if not path.is_file():
            raise FileNotFoundError(f"genotype file {str(path)!r} does not exist; pass genotype:PATH to a JSON genotype file.")
        with open(path) as f:
            d = json.load(f)
        return genotype_from_dict(d, source=str(path))
    key = canonical_name(name)
    if key not in _data()["genotypes"]:
        valid = sorted(set(zoo_names()) | set(_data()["aliases"]))
        raise ValueError(f"unknown genotype {name!r}; valid names: {valid}, or genotype:PATH for a JSON file.")
    return genotype_from_dict(_data()["genotypes"][key], source=key)


# --------------------------------------------------------------------------
# Cell metrics (§c.4, Table 3)
# --------------------------------------------------------------------------


def cell_metrics(cell, concat) -> dict:
    """Depth, width readings W1/W2/W3 (in units of c) and #skip of one cell.

    depth: edges on the longest input->output path, counting the edge into the
    output node. W1: nodes with at least one edge from an input; W2: fractional
    share of input edges; W3: nodes whose both edges come from inputs.
    """
    steps = len(cell) // 2
    depth = {0: 0, 1: 0}
    w1 = w2 = w3 = 0.0
    for j in range(steps):
        (_, a), (_, b) = cell[2 * j], cell[2 * j + 1]
        depth[j + 2] = 1 + max(depth[a], depth[b])
        from_inputs = (a < 2) + (b < 2)
        w1 += from_inputs > 0
        w2 += from_inputs / 2
        w3 += from_inputs == 2
    return {
        "depth": 1 + max(depth[c] for c in concat),
        "width_w1": int(w1),
        "width_w2": float(w2),
        "width_w3": int(w3),
        "skip_connects": sum(op == "skip_connect" for op, _ in cell),
    }


def genotype_metrics(g: Genotype) -> dict:
    """Normal-cell metrics plus the reduce cell's depth and #skip (Table 3 columns)."""
    normal = cell_metrics(g.normal, g.normal_concat)
    reduce = cell_metrics(g.reduce, g.reduce_concat)
    return {
        **normal,
        "reduce_depth": reduce["depth"],
        "reduce_skip_connects": reduce["skip_connects"],
    }
