"""Loss smoothness during search: power iteration on α-Hessian-vector products
against a dense eigendecomposition, and the DARTS-ES stopping rule."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_search import _search_config

from nas_jax import curvature, parallel
from nas_jax.data import Dataset, load_dataset
from nas_jax.models.supernet import ARCH, Supernet
from nas_jax.search import darts, smoothness
from nas_jax.search.pipeline import run_search

OPS = ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3")
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def test_power_iteration_on_a_quadratic_finds_the_largest_magnitude_eigenvalue():
    """loss = ½ aᵀAa with a known spectrum {-5, 3, 1, 0.5}: λ = -5 (largest |λ|, sign kept)."""
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))
    a = q @ np.diag([-5.0, 3.0, 1.0, 0.5]) @ q.T
    arch = {"normal": jnp.zeros((2, 2)), "reduce": jnp.zeros((0, 2))}

    def loss(tree):
        x = ravel_pytree(tree)[0]
        return 0.5 * x @ jnp.asarray(a, x.dtype) @ x

    lam, v = curvature.dominant_eigenvalue(loss, arch, jax.random.key(1), iterations=60)
    assert float(lam) == pytest.approx(-5.0, rel=1e-4)
    vec = ravel_pytree(v)[0]
    assert abs(float(vec @ q[:, 0])) == pytest.approx(1.0, abs=1e-3)


def test_power_iteration_matches_the_dense_alpha_hessian_of_a_tiny_supernet():
    """The eigenvalue of the compiled per-epoch measurement equals the largest-magnitude eigenvalue of
    jax.hessian of the same validation loss over the flattened α."""
    model = Supernet(4, MEAN, STD, init_channels=2, layers=1, steps=1, multiplier=1, op_names=OPS, conv_impl="xla")
    v = jax.jit(lambda k: model.init({"params": k}, jnp.zeros((2, 8, 8, 3)), train=False))(jax.random.key(0))
    rng = np.random.default_rng(0)  # a spectral gap |λ₂/λ₁| ≈ 0.4: 100 iterations converge
    arch = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), v[ARCH])
    params, stats = v["params"], v["batch_stats"]
    xs = rng.integers(0, 256, (1, 8, 8, 8, 3), dtype=np.uint8)
    ys = rng.integers(0, 4, (1, 8))
    state = darts.SearchState(jnp.zeros((), jnp.int32), params, stats, arch, None, None)
    lam = smoothness.make_eigenvalue_fn(model, 100, parallel.data_mesh())(state, xs, ys, jax.random.key(2))

    flat, unravel = ravel_pytree(arch)
    images = jnp.asarray(xs, jnp.float32) / 255.0

    def loss(f):
        return darts.batch_loss(model, params, stats, unravel(f), images[0], ys[0])[0]

    dense = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(loss))(flat), np.float64))
    expected = dense[np.argmax(np.abs(dense))]
    magnitudes = np.sort(np.abs(dense))[::-1]
    assert magnitudes[0] > 1e-3 and magnitudes[1] < 0.5 * magnitudes[0]  # non-trivial curvature, a clear gap
    assert float(lam) == pytest.approx(float(expected), rel=1e-3)


def test_early_stop_rule():
    assert smoothness.early_stop_epoch([0.5, 0.4, 0.6, 0.9], factor=2.5) is None
    assert smoothness.early_stop_epoch([0.5, 0.4, 0.6, 0.9], factor=1.3) == 2
    assert smoothness.early_stop_epoch([0.5, 0.4, 0.6, 0.9], factor=0.0) is None
    assert smoothness.early_stop_epoch([0.5, 2.0, 0.6], factor=1.3, min_epochs=2) is None
    assert smoothness.minimum_epoch([0.5, 0.4, 0.6, 0.9], before=2) == 1


@pytest.fixture(scope="module")
def small_digits():
    ds = load_dataset("digits", native=True)
    return Dataset("digits", ds.x_train[:96], ds.y_train[:96], ds.x_test[:8], ds.y_test[:8], ds.num_classes, ds.mean,
                   ds.std)


def _config():
    c = _search_config(None)  # test_search's tiny first-order search, over 4 ops, 3 power iterations per epoch
    c.search.primitives, c.search.hessian_iterations, c.search.hessian_batches = OPS, 3, 1
    c.train.epochs = 3
    return c


def test_search_logs_the_eigenvalue_per_epoch_and_darts_es_stops_by_the_rule(tmp_path, small_digits):
    c = _config()
    full = run_search(c, tmp_path / "full", dataset=small_digits, progress=False)
    eigs = [r["hessian_eigenvalue"] for r in full["log"]]
    assert len(eigs) == 3 and all(np.isfinite(eigs))
    assert (tmp_path / "full" / "figures" / "search_hessian.png").exists()
    assert full["early_stopped_epoch"] is None
    # a factor just below λ_1 / λ_0 makes the rule fire at epoch 1: the run stops there, with epoch 0's genotype
    assert eigs[0] > 0 and eigs[1] > 0
    c.search.early_stop_factor = 0.999 * eigs[1] / eigs[0]
    stopped = run_search(c, tmp_path / "es", dataset=small_digits, progress=False)
    assert stopped["early_stopped_epoch"] == 1 and len(stopped["log"]) == 2
    assert [r["hessian_eigenvalue"] for r in stopped["log"]] == pytest.approx(eigs[:2], rel=1e-5)
    assert stopped["genotype"].to_json() == full["log"][0]["genotype"]
    saved = json.loads((tmp_path / "es" / "genotype.json").read_text())
    assert saved["normal"] == full["log"][0]["genotype"]["normal"]
    again = run_search(c, tmp_path / "es", dataset=small_digits, progress=False)  # a rerun restores, searches no more
    assert again["step"] == stopped["step"] and again["early_stopped_epoch"] == 1
