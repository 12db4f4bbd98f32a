"""The DARTS evaluation network (docs/protocol.md §b.3, §b.4, §b.6, Appendix A.13)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.models.darts import DartsNetwork, cell_runs, stack_runs
from nas_jax.models.genotypes import get_genotype

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import cheap_genotype, fast_jit

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _net(name="darts", **kw):
    kw.setdefault("conv_impl", "xla")
    return DartsNetwork(get_genotype(name), 10, MEAN, STD, **kw)


def _shapes(model, capture=False):
    def init():
        v = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.zeros((1, 32, 32, 3)))
        if not capture:
            return v
        return model.apply(v, jnp.zeros((1, 32, 32, 3)), capture_intermediates=True, mutable=["intermediates"])[1]

    return jax.eval_shape(init)


def _count(tree):
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def test_darts_v2_parameter_count_matches_reference():
    assert _count(_shapes(_net())["params"]) == 3_349_342


def test_auxiliary_head_parameter_count():
    assert _count(_shapes(_net(auxiliary=True))["params"]) - 3_349_342 == 476_426


@pytest.mark.parametrize("name,dim", [("darts", 576), ("enas", 720), ("nasnet", 720), ("amoebanet", 432)])
def test_feature_dimension(name, dim):
    assert _shapes(_net(name))["params"]["classifier"]["kernel"].shape == (dim, 10)


def test_reduction_cells_at_one_and_two_thirds():
    inter = _shapes(_net(scan_cells=False), capture=True)["intermediates"]  # captures need unrolled cells
    sizes = {int(k.split("_")[1]): v["__call__"][0].shape[1] for k, v in inter.items() if k.startswith("cell_")}
    assert [i for i in range(1, 20) if sizes[i] < sizes[i - 1]] == [6, 13]
    assert sizes[0] == 32 and sizes[19] == 8
    inter8 = _shapes(_net(layers=8, scan_cells=False), capture=True)["intermediates"]
    sizes8 = [inter8[f"cell_{i}"]["__call__"][0].shape[1] for i in range(8)]
    assert sizes8 == [32, 32, 16, 16, 16, 8, 8, 8]


def test_tiny_network_modes():
    model = _net(init_channels=4, layers=3, conv_impl="auto")
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
    v = jax.jit(model.init)({"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1)}, x)

    @jax.jit
    def train_apply(v, key):
        return model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    # eval mode: deterministic, BN statistics untouched; features sown and feed the classifier
    logits, inter = jax.jit(lambda v: model.apply(v, x, mutable=["intermediates"]))(v)
    np.testing.assert_array_equal(logits, jax.jit(model.apply)(v, x))
    assert logits.shape == (4, 10)
    # train mode: dropout differs across keys and BN statistics move
    t1, m1 = train_apply(v, jax.random.key(1))
    t2, _ = train_apply(v, jax.random.key(2))
    assert not np.allclose(t1, t2)
    moved = jax.tree_util.tree_map(lambda p, q: bool(jnp.any(p != q)), v["batch_stats"], m1["batch_stats"])
    assert any(jax.tree_util.tree_leaves(moved))
    (feats,) = inter["intermediates"]["features"]
    p = v["params"]["classifier"]
    np.testing.assert_allclose(feats @ p["kernel"] + p["bias"], logits, rtol=1e-5, atol=1e-5)


def test_darts_init_is_pytorch_default():
    model = _net(layers=3)  # C=36: stem 3 -> 108, classifier 576 -> 10
    p = jax.jit(model.init)({"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1)},
                            jnp.zeros((1, 8, 8, 3)))["params"]
    stem = p["Conv_0"]["kernel"]  # 3x3x3 -> 108: fan_in 27
    assert float(jnp.max(jnp.abs(stem))) <= 1 / np.sqrt(27)
    w = p["classifier"]["kernel"]
    np.testing.assert_allclose(float(jnp.std(w)), 1 / np.sqrt(576) / np.sqrt(3), rtol=0.05)


def test_scanned_cells_group_the_identical_cells_of_each_stage():
    model = _net(layers=20)
    runs = cell_runs([sig for _, sig in model.cells((32, 32), 108)], breaks=(13,))
    # cell 0 (stem inputs), 1 (stem s0), the reductions 6 and 13 and the cells after them stay unrolled
    assert [r for r in runs if r[1] - r[0] > 1] == [(2, 6), (8, 13), (15, 20)]
    assert sum(stop - start for start, stop in runs) == 20


def test_scanned_network_equals_unrolled_network():
    """Same variables -> same eval logits, train-mode loss, gradients and BN statistics. The scanned network's
    variables are the unrolled ones with each run's cells stacked, from init on (same initial values). The cell
    scan is the network's layout, whatever the ops: a cheap genotype (train_worker) keeps its compile short."""
    kw = {"init_channels": 2, "layers": 11, "dropout": 0.0, "conv_impl": "xla"}
    scanned, unrolled = (DartsNetwork(cheap_genotype(), 10, MEAN, STD, scan_cells=s, **kw) for s in (True, False))
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    runs = scanned.stacked_runs((8, 8))
    assert runs == ((5, 7), (9, 11)) and unrolled.stacked_runs((8, 8)) == ()
    v = jax.jit(unrolled.init)({"params": jax.random.key(0, impl="rbg")}, x)
    stack = lambda tree: stack_runs(tree, runs)
    vs = jax.jit(scanned.init)({"params": jax.random.key(0, impl="rbg")}, x)
    assert set(vs["params"]) == set(stack(v["params"])) and {"cells_5_to_6", "cells_9_to_10"} <= set(vs["params"])
    for a, b in zip(jax.tree_util.tree_leaves(vs), jax.tree_util.tree_leaves({k: stack(t) for k, t in v.items()}),
                    strict=True):
        np.testing.assert_array_equal(a, b)  # initialised as the unrolled cells, then stacked

    def run(model, variables):
        def loss(p):
            out, mut = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=True,
                                   mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), mut["batch_stats"]

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return model.apply(variables, x), value, stats, grads

    ours = fast_jit(lambda: run(scanned, vs))()
    logits, value, stats, grads = fast_jit(lambda: run(unrolled, v))()
    ref = (logits, value, stack(stats), stack(grads))
    for part_ours, part_ref in zip(ours, ref, strict=True):  # logits, loss, BN statistics, gradients
        leaves = jax.tree_util.tree_leaves(part_ref)
        scale = max(float(jnp.max(jnp.abs(b))) for b in leaves)  # BN biases before BN have ~0 gradients: noise
        for a, b in zip(jax.tree_util.tree_leaves(part_ours), leaves, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    moved = [bool(jnp.any(a != b)) for a, b in zip(jax.tree_util.tree_leaves(ours[2]),
                                                    jax.tree_util.tree_leaves(vs["batch_stats"]))]
    assert all(moved)  # every cell's BN statistics were updated, scanned ones included
