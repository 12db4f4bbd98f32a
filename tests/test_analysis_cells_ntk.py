"""Cell structure (Table 3, docs/protocol.md §c.4) against hand counts, cell drawings, and the empirical NTK
(§5.3): a linear model's NTK is XXᵀ, an MLP's equals J Jᵀ from jax.jacrev, κ and the ASR correlation."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.analysis import cells, ntk
from nas_jax.config_loader import load_config_file


def test_table3_rows_match_hand_counts(tmp_path):
    # DARTS V2 normal: 2<-{0,1}, 3<-{0,1}, 4<-{1,0}, 5<-{0,2}: depths 1,1,1,2 -> cell depth 3 (edge into the
    # output counted); W1 = 4 (every node touches an input), W2 = 1+1+1+1/2, W3 = 3; 2 skips. Reduce:
    # 2<-{0,1}, 3<-{2,1}, 4<-{0,2}, 5<-{2,1}: depth 3, 3 skips. Table 3 says 3 skips (docs/protocol.md §c.4).
    # ENAS normal: five nodes, each fed by inputs only: depth 2, W1 = W2 = W3 = 5, 2 skips.
    # DARTS-i normal: the chain 2<-{0,1}, 3<-{2,2}, 4<-{3,3}, 5<-{4,4}: depth 5, widths 1, 2 skips.
    hand = {"darts": (3, 4, 3.5, 3, 2, 3, 3), "enas": (2, 5, 5.0, 5, 2, 4, 0), "darts_i": (5, 1, 1.0, 1, 2, 3, 3)}
    # A user genotype: 2<-{0 skip,1 sep}, 3<-{2 skip,2 sep}, 4<-{3 sep,0 dil}, output {2,3,4}: depth 4,
    # W1 = 2 (nodes 2, 4), W2 = 1 + 0 + 1/2, W3 = 1, 2 skips; reduce: one node from both inputs: depth 2.
    user = {"normal": [["skip_connect", 0], ["sep_conv_3x3", 1], ["skip_connect", 2], ["sep_conv_3x3", 2],
                       ["sep_conv_3x3", 3], ["dil_conv_3x3", 0]], "normal_concat": [2, 3, 4],
            "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]], "reduce_concat": [2]}
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(user))
    hand[f"genotype:{path}"] = (4, 2, 1.5, 1, 2, 2, 1)
    keys = ("depth", "width_w1", "width_w2", "width_w3", "skip_connects", "reduce_depth", "reduce_skip_connects")
    for name, want in hand.items():
        row = cells.table3_row(name)
        assert tuple(row[k] for k in keys) == want, name
    darts = cells.table3_row("darts")
    assert (darts["paper_depth"], darts["paper_width"], darts["paper_skip"]) == (3, 3, 3)
    assert cells.table3_row("darts_i")["paper_depth"] is None

    rows = [cells.table3_row(n) for n in cells.default_genotypes()]
    avg = cells.averages(rows)
    assert avg["n_models"] == 9
    np.testing.assert_allclose([avg["paper_depth_table"], avg["paper_width_table"]], [26 / 9, 30 / 9])
    np.testing.assert_allclose([avg["depth"], avg["width_w3"]], [26 / 9, 30 / 9])  # W3 reproduces Table 3
    with pytest.raises(ValueError, match="unknown genotype"):
        cells.table3_row("dartz")


def test_cell_layout_and_drawing(tmp_path):
    g = cells.genotypes.get_genotype("darts_i")
    pos, edges, outs = cells.cell_layout(g.normal, g.normal_concat)
    assert len(edges) == 8 and outs == [2, 3, 4, 5]
    assert pos["out"][0] == 2 * 5  # x = 2 x the longest distance from the inputs: the cell depth
    assert [pos[n][0] for n in (2, 3, 4, 5)] == [2, 4, 6, 8]
    png = cells.draw_genotype("darts", tmp_path / "cells" / "darts.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_op_labels_of_every_zoo_cell_are_readable(tmp_path, monkeypatch):
    """No two op labels of a drawn cell overlap (edges converging on one node used to put theirs at the same
    spot), for every cell of the zoo; a searched genotype.json is titled by its folder, not 'genotype.json'."""
    import json

    from nas_jax.report.plots import plt

    drawn, close = [], plt.close
    monkeypatch.setattr(plt, "close", drawn.append)  # keep each saved figure open for inspection
    for name in cells.genotypes.zoo_names():
        cells.draw_genotype(name, tmp_path / f"{name}.png")
        fig = drawn[-1]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_zorder() == 3]  # the op labels
            assert boxes, name
            clashes = [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1) if a.overlaps(b)]
            assert not clashes, f"{name} {ax.get_title()}: op labels {clashes} overlap"
    found = tmp_path / "runs" / "dartsx" / "genotype.json"
    found.parent.mkdir(parents=True)
    g = cells.genotypes.get_genotype("darts")
    found.write_text(json.dumps({"normal": [list(e) for e in g.normal], "normal_concat": list(g.normal_concat),
                                 "reduce": [list(e) for e in g.reduce], "reduce_concat": list(g.reduce_concat)}))
    cells.draw_genotype(f"genotype:{found}", tmp_path / "found.png")
    assert drawn[-1].axes[0].get_title().startswith("dartsx normal cell")
    for fig in drawn:
        close(fig)


class _Linear(nn.Module):
    classes: int
    bias: bool

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.classes, use_bias=self.bias)(x.reshape(len(x), -1))


def test_ntk_of_a_linear_model_is_x_xt():
    x = np.random.default_rng(0).normal(size=(6, 2, 2, 1)).astype(np.float32)
    xx = x.reshape(6, -1).astype(np.float64) @ x.reshape(6, -1).T.astype(np.float64)
    # One output: Θ = XXᵀ. C outputs with bias, logit_sum: ∂Σ_c f_c/∂W = x ⊗ 1, ∂/∂b = 1, so Θ = C(XXᵀ + 1).
    for classes, bias, kernel, want in ((1, False, "logit_sum", xx), (3, True, "logit_sum", 3 * (xx + 1))):
        model = _Linear(classes, bias)
        v = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
        theta = ntk.ntk_matrix(model.apply, v, x, num_classes=classes, kernel=kernel, chunk=4)
        np.testing.assert_allclose(theta, want, rtol=1e-5, atol=1e-5)
    c = ntk.condition_number(xx + np.eye(6))
    eig = np.linalg.eigvalsh(xx + np.eye(6))
    np.testing.assert_allclose(c["cond"], eig[-1] / eig[0], rtol=1e-10)
    np.testing.assert_allclose(c["trace"], np.trace(xx) + 6, rtol=1e-10)
    assert ntk.condition_number(np.ones((3, 3)))["cond"] == float("inf")  # singular
    with pytest.raises(ValueError, match="logit_sum"):
        ntk.projections("sum", 3)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(jnp.tanh(nn.Dense(5)(x.reshape(len(x), -1))))


def test_ntk_of_an_mlp_equals_jacobian_products():
    model = _MLP()
    x = np.random.default_rng(1).normal(size=(5, 2, 2, 1)).astype(np.float32)
    v = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
    jac = jax.jit(jax.jacrev(lambda p: model.apply({"params": p}, x)))(v["params"])  # leaves (n, C, *shape)
    j = np.concatenate([np.asarray(a, np.float64).reshape(5, 3, -1) for a in jax.tree_util.tree_leaves(jac)], -1)
    trace = np.einsum("icp,jcp->ij", j, j)  # the class-traced NTK Σ_c J_c J_cᵀ
    got = ntk.ntk_matrix(model.apply, v, x, num_classes=3, kernel="trace", chunk=2)
    np.testing.assert_allclose(got, trace, rtol=1e-4, atol=1e-6)


def test_asr_correlation_pairs_models_and_datasets():
    cond = {"a": 10.0, "b": 100.0, "c": 1000.0, "d": float("inf"), "e": 50.0}
    recs = [{"model": m, "dataset": "cifar10", "metrics": {"asr_most_likely": s, "asr_least_likely": 1 - s}}
            for m, s in (("a", 0.1), ("b", 0.5), ("c", 0.6), ("d", 0.9))]
    recs.append({"model": "b", "dataset": "cifar10", "metrics": {"asr_most_likely": 0.2, "asr_least_likely": 0.8}})
    recs.append({"model": "e", "dataset": "cifar100", "metrics": {"asr_most_likely": 0.0, "asr_least_likely": 0.0}})
    out = ntk.asr_correlation(cond, recs, "cifar10")
    assert out["models"] == ["a", "b", "c"]  # d: infinite κ; e: no record on this dataset
    np.testing.assert_allclose(out["pearson_most_likely"], np.corrcoef([1, 2, 3], [0.1, 0.2, 0.6])[0, 1])
    assert out["spearman_most_likely"] == pytest.approx(1.0) and out["spearman_least_likely"] == pytest.approx(-1.0)
    assert ntk.asr_correlation({"a": 10.0}, recs, "cifar10")["pearson_most_likely"] is None


def test_cells_task_end_to_end(tmp_path):
    from pathlib import Path

    from nas_jax.report import results
    from nas_jax.tasks import get_task

    c = load_config_file(Path(__file__).parents[1] / "configs" / "cells.py", "quick")
    c.cells.genotypes = ("darts", "darts_i")
    get_task("cells").run(c, tmp_path)
    recs = {r["model"]: r for r in results.read_records(tmp_path, task="cells")}
    assert set(recs) == {"darts", "darts_i", "table3_mean"}  # the mean over the Table 3 models given (DARTS)
    assert recs["table3_mean"]["metrics"]["n_models"] == 1
    assert recs["darts"]["metrics"]["depth"] == 3 and recs["darts_i"]["metrics"]["depth"] == 5
    assert (tmp_path / "figures" / "cells" / "darts_i.png").stat().st_size > 0
