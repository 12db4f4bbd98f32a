"""The DARTS evaluation network (PROTOCOL §b.3, §b.4, §b.6, Appendix A.13)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.models.darts import DartsNetwork
from nas_jax.models.genotypes import get_genotype

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
    inter = _shapes(_net(), capture=True)["intermediates"]
    sizes = {int(k.split("_")[1]): v["__call__"][0].shape[1] for k, v in inter.items() if k.startswith("cell_")}
    assert [i for i in range(1, 20) if sizes[i] < sizes[i - 1]] == [6, 13]
    assert sizes[0] == 32 and sizes[19] == 8
    inter8 = _shapes(_net(layers=8), capture=True)["intermediates"]
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
