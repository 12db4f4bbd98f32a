"""Loss contours (docs/protocol.md §f.1–f.2, Appendix A.12): orthogonal directions of the stated norms, grid
endpoints, the vmapped grid against direct evaluation (Γ(0, 0) = the model's loss), smoothness summaries
on an analytic surface."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from nas_jax.analysis import landscape as ls
from nas_jax.models.common import batch_norm
from nas_jax.models.registry import build_model


class _Net(nn.Module):
    """Normalisation, then conv + BN + dense: the first conv is not the first module called."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.LayerNorm(name="norm")(x)
        x = nn.relu(batch_norm(train)(nn.Conv(4, (3, 3), name="stem")(x)))
        x = nn.Conv(3, (3, 3), name="second")(x)
        return nn.Dense(3, name="head")(x.mean((1, 2)))


@pytest.fixture(scope="module")
def net():
    model = _Net()
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 6, 6, 3)))
    rng = np.random.default_rng(0)
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda a: a + 0.2 * rng.uniform(size=a.shape).astype(np.float32), variables["batch_stats"])
    x = rng.uniform(size=(4, 6, 6, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    return model, variables, x, y


@jax.jit
def _ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


_APPLY = {}


def _losses(model, variables, x, y):
    apply = _APPLY.setdefault(model, jax.jit(model.apply))  # one compiled apply per model and shape
    return np.asarray(_ce(apply(variables, x), y))


@pytest.mark.parametrize("n", [108, 27])  # 108 = 6·6·3, as below
def test_pm1_directions_are_balanced_orthogonal_and_of_norm_sqrt_n(n):
    d1, d2 = (np.asarray(d, np.float64) for d in ls.pm1_directions(jax.random.key(n), n))
    assert set(np.unique(d1)) == {-1.0, 1.0} and (d1 == -1).sum() == n // 2
    np.testing.assert_allclose([np.linalg.norm(d1), np.linalg.norm(d2)], [np.sqrt(n)] * 2, rtol=1e-6)
    if n % 2 == 0:
        assert set(np.unique(d2)) == {-1.0, 1.0}
        assert d1 @ d2 == 0.0  # exactly: d1·d2 = Σr for the balanced ±1 vector r
    else:  # odd n: Σr = ±1, fixed by Gram-Schmidt
        assert abs(d1 @ d2) < 1e-4
    assert not np.array_equal(np.abs(d1 - d2), np.zeros(n))


def test_first_conv_directions_move_only_the_first_convolution(net):
    model, variables, x, _ = net
    d1, d2 = ls.first_conv_directions(jax.random.key(1), model, variables, x.shape[1:])
    assert list(d1) == list(d2) == [("stem", "kernel")]
    n = variables["params"]["stem"]["kernel"].size
    a, b = np.ravel(d1[("stem", "kernel")]), np.ravel(d2[("stem", "kernel")])
    assert a.shape == (n,) and a @ b == 0.0 and a @ a == b @ b == n

    # The study's networks (shapes only, nothing compiled): DARTS' stem conv 3 -> 3C and ResNet's conv1.
    for name, kw, want in (("darts", dict(init_channels=4, layers=3), (3, 3, 3, 12)),
                           ("resnet", dict(width_multiplier=0.125), (3, 3, 3, 8))):
        m = build_model(name, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3, **kw)
        shapes = jax.eval_shape(lambda k, m=m: m.init(k, jnp.zeros((1, 8, 8, 3)), train=False),
                                jax.random.key(0))
        path = ls.first_conv_path(m, shapes, (8, 8, 3))
        assert flatten_dict(shapes["params"])[path].shape == want, (name, path)
        assert path[-1] == "kernel" and (name != "resnet" or path == ("conv1", "kernel"))


def test_filter_normalized_directions(net):
    _, variables, _, _ = net
    params = variables["params"]
    d1, d2 = ls.filter_normalized_directions(jax.random.key(2), params)
    flat = flatten_dict(params)
    assert set(d1) == {p for p, w in flat.items() if w.ndim >= 2}  # biases, BN and LayerNorm stay fixed
    assert ("stem", "kernel") in d1 and ("head", "kernel") in d1
    dot = 0.0
    for path, a in d1.items():
        w, b = np.asarray(flat[path], np.float64), np.asarray(d2[path], np.float64)
        a = np.asarray(a, np.float64)
        axes = tuple(range(w.ndim - 1))  # one filter per output unit (last axis of a Flax kernel)
        wn = np.sqrt((w**2).sum(axes))
        np.testing.assert_allclose(np.sqrt((a**2).sum(axes)), wn, rtol=1e-5)
        np.testing.assert_allclose(np.sqrt((b**2).sum(axes)), wn, rtol=1e-5)
        np.testing.assert_allclose((a * b).sum(axes), 0.0, atol=1e-5 * wn.max() ** 2)  # per filter, hence overall
        dot += (a * b).sum()
    assert abs(dot) < 1e-5


def test_filter_normalized_directions_count_each_stacked_cells_filters_apart():
    """A scanned run of DARTS cells is one entry with the cells on a leading axis: every cell's filter gets the
    norm of that cell's filter, and the stacked BN parameters (2-D only by the cell axis) stay fixed."""
    import sys
    from pathlib import Path

    from nas_jax.models.darts import DartsNetwork, is_stacked_run

    sys.path.insert(0, str(Path(__file__).parent))
    from train_worker import cheap_genotype

    model = DartsNetwork(cheap_genotype(), 10, (0.5,) * 3, (0.25,) * 3, init_channels=2, layers=11, conv_impl="xla")
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    d1, _ = ls.filter_normalized_directions(jax.random.key(2), params)
    stacked = {p: w for p, w in flatten_dict(params).items() if is_stacked_run(p[0])}
    assert stacked and all(p in d1 for p, w in stacked.items() if w.ndim >= 3)
    assert not any(p in d1 for p, w in stacked.items() if w.ndim == 2)  # BN scale and bias of each cell
    for path, w in stacked.items():
        if w.ndim >= 3:
            axes = tuple(range(1, w.ndim - 1))  # per cell, per output filter
            np.testing.assert_allclose(np.sqrt((np.asarray(d1[path]) ** 2).sum(axes)),
                                       np.sqrt((np.asarray(w) ** 2).sum(axes)), rtol=1e-5)


def test_grids_have_the_protocol_endpoints():
    a = ls.grid(0.5, 41)
    np.testing.assert_allclose([a[0], a[-1], a[20], a[21] - a[20]], [-0.5, 0.5, 0.0, 0.025], atol=1e-15)
    for r in (0.02, 0.2):
        g = ls.grid(r, 41)
        assert len(g) == 41 and g[20] == 0.0
        np.testing.assert_allclose([g[0], g[-1], g[1] - g[0]], [-r, r, r / 20], rtol=1e-12)
    assert ls.DEFAULT_GRID == {"first_conv": (0.5, 41), "filter_normalized": (1.0, 51), "input": (0.02, 41)}
    with pytest.raises(ValueError, match="odd"):
        ls.grid(0.5, 40)


def test_parameter_contour_equals_direct_evaluation(net):
    model, variables, x, y = net
    d1, d2 = ls.first_conv_directions(jax.random.key(1), model, variables, x.shape[1:])
    axis = ls.grid(0.5, 5)
    c = ls.parameter_contour(model.apply, variables, d1, d2, x, y, axis, axis, chunk=4)  # 25 points = 4·6 + 1
    assert c.losses.shape == (5, 5, 4) and c.space == "param"
    base = _losses(model, variables, x, y)
    np.testing.assert_allclose(c.losses[2, 2], base, rtol=1e-6)  # Γ(0, 0) is the model's loss
    flat = flatten_dict(variables["params"])
    for i, j in ((0, 4), (3, 1)):
        moved = dict(flat)
        moved[("stem", "kernel")] = flat[("stem", "kernel")] + axis[i] * d1[("stem", "kernel")] \
            + axis[j] * d2[("stem", "kernel")]
        direct = _losses(model, {**variables, "params": unflatten_dict(moved)}, x, y)
        np.testing.assert_allclose(c.losses[i, j], direct, rtol=1e-4)
    assert np.abs(c.losses - base).max() > 1e-3  # the directions do move the loss
    # The artifact's 'batch' option: the loss averaged over groups of images.
    g = ls.parameter_contour(model.apply, variables, d1, d2, x, y, axis, axis, chunk=4, images_per_contour=2)
    np.testing.assert_allclose(g.losses, c.losses.reshape(5, 5, 2, 2).mean(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="multiple"):
        ls.parameter_contour(model.apply, variables, d1, d2, x[:3], y[:3], axis, axis, images_per_contour=2)


def test_input_contour_equals_direct_evaluation(net):
    model, variables, x, y = net
    axis = ls.grid(0.2, 3)
    key = jax.random.key(3)
    c = ls.input_contour(model.apply, variables, x, y, key, axis, axis, chunk=4)
    np.testing.assert_allclose(c.losses[1, 1], _losses(model, variables, x, y), rtol=1e-6)
    keys = jax.random.split(key, len(x))
    moved = []
    for k in range(len(x)):  # fresh, verified directions per image; the perturbed input clipped to [0, 1]
        d1, d2 = (np.asarray(d).reshape(x[0].shape) for d in ls.pm1_directions(keys[k], x[0].size))
        assert np.ravel(d1) @ np.ravel(d2) == 0.0
        moved.append(np.clip(x[k] + axis[0] * d1 + axis[2] * d2, 0.0, 1.0))
    np.testing.assert_allclose(c.losses[0, 2], _losses(model, variables, np.stack(moved), y), rtol=1e-5)
    assert np.abs(c.losses[0, 2] - c.losses[1, 1]).max() > 1e-4


def test_smoothness_of_an_analytic_quadratic():
    a = ls.grid(1.0, 41)
    aa, bb = np.meshgrid(a, a, indexing="ij")
    surf = 1.0 + 2.0 * aa**2 + 3.0 * bb**2 + 0.5 * aa * bb
    c = ls.Contour("param", "first_conv", a, a, np.stack([surf, 2 * surf], -1))  # two contours
    s = ls.smoothness(c, radius=0.5, n_angles=256)
    np.testing.assert_allclose(s["loss_center"], 1.5)
    np.testing.assert_allclose(s["curvature_d1"], 1.5 * 4.0, rtol=1e-8)  # ∂²Γ/∂α² of a quadratic is exact
    np.testing.assert_allclose(s["curvature_d2"], 1.5 * 6.0, rtol=1e-8)
    # On the circle of radius r the mean of 2α² + 3β² + αβ/2 is 2.5 r² (bilinear interpolation: ~1e-3).
    np.testing.assert_allclose(s["increase_at_radius"], 1.5 * 2.5 * 0.25, rtol=5e-3)
    np.testing.assert_allclose(s["increase_max"], 1.5 * (2 + 3 + 0.5), rtol=1e-12)
    assert s["radius"] == 0.5 and ls.smoothness(c)["radius"] == 0.5  # default: half the grid range
