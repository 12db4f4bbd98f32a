"""Genotypes of the NAS zoo and cell metrics.

docs/protocol.md §b.1–§b.2 (ops, cell wiring), §c.1–§c.2 (the zoo, DARTS-i/ii/iii) and §c.4 (Table 3). Data:
``genotypes.json`` (a copy of ``reference/genotypes.json``); a user genotype is ``genotype:PATH`` (:data:`FORMAT`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
from pathlib import Path

from nas_jax import files
from nas_jax.errors import UserError

_DATA_FILE = Path(__file__).with_name("genotypes.json")

FORMAT = ('a genotype is a JSON object with the keys normal, normal_concat, reduce and reduce_concat: each cell '
          '(normal, reduce) is a list of [op, input_index] pairs, two per intermediate node, and each *_concat lists '
          'the nodes whose outputs are concatenated, e.g. {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], '
          '"normal_concat": [2], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]], "reduce_concat": [2]} '
          '(the bundled genotypes: nas_jax/models/genotypes.json; the format in full: docs/genotypes.md)')

KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")  # the fields of a genotype and of its JSON form


class GenotypeFileNotFoundError(UserError, FileNotFoundError):
    """A ``genotype:PATH`` file that does not exist."""


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
        return {k: [list(v) if isinstance(v, tuple) else v for v in getattr(self, k)] for k in KEYS}


def genotype_from_dict(d: dict, source: str = "genotype") -> Genotype:
    """Build and validate a genotype from its JSON form (docs/protocol.md Appendix A.14); errors are UserErrors."""
    if not isinstance(d, dict):
        raise UserError(f"{source}: holds a JSON {type(d).__name__}, not an object; {FORMAT}.")
    missing = [k for k in KEYS if k not in d]
    if missing:
        raise UserError(f"{source}: missing keys {missing}; {FORMAT}.")
    parsed = {}
    for kind in ("normal", "reduce"):
        parsed[kind] = _pairs(d[kind], f"{source} ({kind} cell)")
        parsed[f"{kind}_concat"] = _indices(d[f"{kind}_concat"], f"{source} ({kind}_concat)")
    for kind in ("normal", "reduce"):
        _validate_cell(parsed[kind], parsed[f"{kind}_concat"], f"{source} ({kind} cell)")
    return Genotype(**parsed)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pairs(cell, where: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(cell, list | tuple):
        raise UserError(f"{where}: {cell!r} is not a list of [op, input_index] pairs; {FORMAT}.")
    for k, pair in enumerate(cell):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str) and _is_int(pair[1])):
            raise UserError(f"{where}: item {k} is {pair!r}, not an [op, input_index] pair such as "
                            f'["sep_conv_3x3", 0]; {FORMAT}.')
    return tuple((str(op), int(i)) for op, i in cell)


def _indices(concat, where: str) -> tuple[int, ...]:
    if not (isinstance(concat, list | tuple) and all(_is_int(i) for i in concat)):
        raise UserError(f"{where}: {concat!r} is not a list of node indices such as [2, 3, 4, 5]; {FORMAT}.")
    return tuple(int(i) for i in concat)


def _validate_cell(cell, concat, where: str) -> None:
    ops = allowed_ops()
    if len(cell) == 0 or len(cell) % 2:
        raise UserError(f"{where}: needs an even, non-zero number of [op, input_index] pairs (two per "
                        f"intermediate node), got {len(cell)}.")
    for k, (op, idx) in enumerate(cell):
        node = k // 2 + 2
        if op not in ops or op == "none":
            valid = [o for o in ops if o != "none"]
            raise UserError(f"{where}: op {op!r} at position {k} is not allowed; valid ops: {valid}.")
        if not 0 <= idx < node:
            raise UserError(f"{where}: pair {k} feeds node {node} from input {idx}; inputs must be in [0, {node}).")
    n_states = len(cell) // 2 + 2
    bad = [c for c in concat if not 0 <= c < n_states]
    if bad or not concat:
        raise UserError(f"{where}: concat {list(concat)} must name states in [0, {n_states}).")


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
    """Resolve a zoo name, an alias (e.g. 'darts' -> 'darts_v2') or 'genotype:PATH'. A file that is missing,
    unreadable or not a valid genotype raises a UserError naming it."""
    if name.startswith("genotype:"):
        return _read_genotype_file(Path(name.removeprefix("genotype:")))
    key = canonical_name(name)
    if key not in _data()["genotypes"]:
        valid = sorted(set(zoo_names()) | set(_data()["aliases"]))
        raise ValueError(f"unknown genotype {name!r}; valid names: {valid}, or genotype:PATH for a JSON file.")
    return genotype_from_dict(_data()["genotypes"][key], source=key)


def _read_genotype_file(path: Path) -> Genotype:
    where = f"genotype file {str(path)!r}"
    if not path.is_file():
        raise GenotypeFileNotFoundError(f"{where} does not exist; pass genotype:PATH to a JSON genotype file "
                                        "(e.g. the genotype.json that configs/search.py writes).")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                        f"fix the file: {FORMAT}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{where} cannot be read ({e}); pass a readable UTF-8 JSON file.") from None
    try:
        return genotype_from_dict(d, source=where)
    except UserError as e:
        raise UserError(f"{e} Fix the file and run again.") from None


def genotype_sha256(g: Genotype) -> str:
    """The content identity of a genotype: SHA-256 of its sorted-key JSON form."""
    return files.json_sha256(g.to_json())


# --------------------------------------------------------------------------
# Cell metrics (§c.4, Table 3)
# --------------------------------------------------------------------------


def cell_metrics(cell, concat) -> dict:
    """Depth, width readings W1/W2/W3 (in units of c) and #skip of one cell: depth counts the edges of the longest
    input->output path, the edge into the output included; W1: nodes with an edge from an input; W2: the fractional
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
    reduce = cell_metrics(g.reduce, g.reduce_concat)
    return {**cell_metrics(g.normal, g.normal_concat), "reduce_depth": reduce["depth"],
            "reduce_skip_connects": reduce["skip_connects"]}
