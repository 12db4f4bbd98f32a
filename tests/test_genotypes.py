"""Genotype zoo, validation and the cell metrics of Table 3 (docs/protocol.md §c.4)."""

import json

import pytest

from nas_jax.models import genotypes

# (depth, W1, W2, W3, #skip, #skip reduce, depth reduce) from docs/protocol.md §c.4 ("computed" columns).
EXPECTED = {
    "amoebanet": (4, 5, 4.0, 3, 2, 0, 3),
    "darts": (3, 4, 3.5, 3, 2, 3, 3),
    "drnas": (4, 3, 2.5, 2, 1, 1, 5),
    "enas": (2, 5, 5.0, 5, 2, 0, 4),
    "nasnet": (2, 5, 5.0, 5, 2, 1, 3),
    "pc_darts": (2, 4, 4.0, 4, 1, 0, 4),
    "pdarts": (4, 4, 3.0, 2, 2, 0, 4),
    "sgas": (3, 4, 3.0, 2, 1, 2, 3),
    "snas": (2, 4, 4.0, 4, 4, 2, 3),
    "random": (4, 4, 2.5, 1, 2, 1, 4),
    "darts_v1": (3, 4, 3.5, 3, 3, 3, 3),
    "darts_i": (5, 1, 1.0, 1, 2, 3, 3),
    "darts_ii": (3, 4, 3.5, 3, 0, 3, 3),
    "darts_iii": (5, 1, 1.0, 1, 0, 3, 3),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cell_metrics_reproduce_protocol(name):
    m = genotypes.genotype_metrics(genotypes.get_genotype(name))
    got = (m["depth"], m["width_w1"], m["width_w2"], m["width_w3"], m["skip_connects"],
           m["reduce_skip_connects"], m["reduce_depth"])
    assert got == EXPECTED[name]


def test_hand_counted_chain_cell():
    cell = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 2)]
    m = genotypes.cell_metrics(cell, (2, 3))
    assert m == {"depth": 3, "width_w1": 1, "width_w2": 1.0, "width_w3": 1, "skip_connects": 1}


def test_aliases_and_zoo():
    assert genotypes.get_genotype("darts") == genotypes.get_genotype("darts_v2")
    assert genotypes.get_genotype("diy_deep") == genotypes.get_genotype("darts_i")
    assert len(genotypes.paper_nas_zoo()) == 10 and "darts" in genotypes.paper_nas_zoo()
    for name in genotypes.zoo_names():
        g = genotypes.get_genotype(name)
        assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_darts_i_keeps_darts_reduce_cell():
    base = genotypes.get_genotype("darts")
    for variant in ("darts_i", "darts_ii", "darts_iii"):
        assert genotypes.get_genotype(variant).reduce == base.reduce


def test_unknown_name_lists_valid_choices():
    with pytest.raises(ValueError, match="valid names.*darts"):
        genotypes.get_genotype("dartz")


def test_user_genotype_file_roundtrip(tmp_path):
    g = genotypes.get_genotype("pdarts")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(g.to_json()))
    assert genotypes.get_genotype(f"genotype:{path}") == g
    with pytest.raises(FileNotFoundError, match="genotype:PATH"):
        genotypes.get_genotype(f"genotype:{tmp_path}/missing.json")


@pytest.mark.parametrize("bad,match", [
    ({"normal": [["sep_conv_3x3", 2], ["skip_connect", 0]]}, "inputs must be in"),
    ({"normal": [["conv_9x9", 0], ["skip_connect", 1]]}, "not allowed"),
    ({"normal": [["none", 0], ["skip_connect", 1]]}, "not allowed"),
    ({"normal": [["skip_connect", 0]]}, "even"),
])
def test_invalid_genotypes_are_refused(bad, match):
    d = genotypes.get_genotype("darts").to_json()
    d.update(bad)
    d["normal_concat"] = [2]
    with pytest.raises(ValueError, match=match):
        genotypes.genotype_from_dict(d)
    missing = {k: v for k, v in d.items() if k != "reduce"}
    with pytest.raises(ValueError, match="missing keys"):
        genotypes.genotype_from_dict(missing)
