"""Per-example gradient variance (docs/protocol.md §f.3, Appendix A.11): vmap vs a batch-size-1 loop, the metrics
vs numpy, BN calibration, the manual/NAS ratio. The task end to end: tests/test_analysis_tasks.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.analysis import grad_variance as gv
from nas_jax.models.common import batch_norm
from nas_jax.tasks.grad_variance import family_ratios


def _np_metrics(g: np.ndarray, clip: float) -> dict:
    """The four readings computed directly in float64 numpy (population variance)."""
    g = g.astype(np.float64)
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    gc = g * np.minimum(1.0, clip / (norms + 1e-6))
    return {"trace_cov": g.var(0).sum(), "sum_std_unclipped": g.std(0).sum(),
            "trace_cov_clipped": gc.var(0).sum(), "sum_std": gc.std(0).sum()}


def test_trace_cov_of_hand_made_vectors_equals_numpy():
    # Hand-checkable: mean (2, 2/3); Var = (2/3, 8/9) -> trace 14/9, sum of stds sqrt(2/3) + sqrt(8/9).
    g = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0]], np.float32)
    rows, mask = gv.chunked(g, 2)  # a padded last chunk: the padding must not count
    raw, _ = gv.moments_scan(lambda r, _: r, jnp.asarray(rows), jnp.asarray(rows[..., 0]), jnp.asarray(mask), 100.0)
    s = gv.summarize(raw)
    np.testing.assert_allclose(float(s["trace_cov"]), 14 / 9, rtol=1e-6)
    np.testing.assert_allclose(float(s["sum_std"]), np.sqrt(2 / 3) + np.sqrt(8 / 9), rtol=1e-6)

    # Random vectors with a large common offset (a naive E[g²] − E[g]² would lose digits), clipped and not.
    rng = np.random.default_rng(0)
    g = (rng.normal(size=(23, 40)) * rng.uniform(0.1, 3, size=40) + 50.0).astype(np.float32)
    g[::4] *= 0.01  # some rows under the clipping norm
    rows, mask = gv.chunked(g, 5)
    raw, clipped = gv.moments_scan(lambda r, _: r, jnp.asarray(rows), jnp.asarray(mask), jnp.asarray(mask), 5.0)
    ref = _np_metrics(g, 5.0)
    got = {"trace_cov": gv.summarize(raw)["trace_cov"], "sum_std_unclipped": gv.summarize(raw)["sum_std"],
           "trace_cov_clipped": gv.summarize(clipped)["trace_cov"], "sum_std": gv.summarize(clipped)["sum_std"]}
    for k, v in ref.items():
        np.testing.assert_allclose(float(got[k]), v, rtol=2e-5, err_msg=k)


class _ConvBN(nn.Module):
    """A tiny CNN with BN and dropout (off in eval mode): compiles in a second."""

    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = batch_norm(train)(nn.Conv(5, (3, 3))(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x.mean((1, 2)))


def _tiny_model(dropout: float = 0.5, shape=(1, 6, 6, 3)):
    model = _ConvBN(dropout)
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros(shape))  # rbg: fast to compile
    # Non-trivial running statistics, so eval-mode BN actually normalises.
    rng = np.random.default_rng(0)
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda a: a + 0.3 * rng.uniform(size=a.shape).astype(np.float32), variables["batch_stats"])
    return model, variables


def test_vmapped_per_example_grads_equal_a_loop_and_feed_the_metrics():
    model, variables = _tiny_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(7, 6, 6, 3)).astype(np.float32)
    y = np.arange(7) % 3
    loss_grad = jax.jit(jax.grad(lambda p, xi, yi: gv.example_loss(
        model.apply, {"params": p, "batch_stats": variables["batch_stats"]}, xi, yi)))
    loop = [loss_grad(variables["params"], x[i], y[i]) for i in range(len(x))]  # batch-size-1 semantics
    stacked = gv.per_example_grads(model.apply, variables, x, y, chunk=3)  # 7 = 3 + 3 + 1: a ragged tail
    for i, g in enumerate(loop):
        jax.tree_util.tree_map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-7),
                               stacked, g)
    rows = np.stack([np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(g)]) for g in loop])
    got = gv.gradient_variance(model.apply, variables, x, y, chunk=3, clip_norm=0.5)
    ref = _np_metrics(rows, 0.5)
    assert got["num_params"] == rows.shape[1] == sum(a.size for a in jax.tree_util.tree_leaves(variables["params"]))
    assert ref["trace_cov_clipped"] < 0.9 * ref["trace_cov"]  # the clipping norm is active
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, err_msg=k)
        assert isinstance(got[f"{k}_per_param"], float)
        np.testing.assert_allclose(got[f"{k}_per_param"], v / rows.shape[1], rtol=1e-4, err_msg=k)
    # trace_cov is E||g - E g||^2 (Eqn 14) computed directly.
    direct = np.mean(np.sum((rows - rows.mean(0)) ** 2, axis=1))
    np.testing.assert_allclose(got["trace_cov"], direct, rtol=1e-4)
    np.testing.assert_allclose(got["mean_grad_sq_norm"], (rows.astype(np.float64).mean(0) ** 2).sum(), rtol=1e-4)
    auto = gv.gradient_variance(model.apply, variables, x, y, chunk=0, clip_norm=0.5)  # 0: the backend's chunk
    assert gv.auto_chunk() == (1 if jax.default_backend() == "cpu" else 32)
    for k, v in ref.items():
        np.testing.assert_allclose(auto[k], v, rtol=1e-4, err_msg=k)

    # Input gradients: the same machinery with respect to x, against finite differences of the loss.
    stacked_x = np.asarray(gv.per_example_grads(model.apply, variables, x, y, wrt="input", chunk=4))
    loss = jax.jit(lambda xi, yi: gv.example_loss(model.apply, variables, xi, yi))
    for i, (r, c, ch) in enumerate([(0, 0, 0), (2, 3, 1), (5, 5, 2)]):
        h = np.zeros_like(x[i])
        h[r, c, ch] = 1e-2
        fd = (float(loss(x[i] + h, y[i])) - float(loss(x[i] - h, y[i]))) / 2e-2
        np.testing.assert_allclose(stacked_x[i, r, c, ch], fd, rtol=2e-2, atol=1e-4)


def test_calibrated_bn_holds_the_average_batch_statistics():
    model, variables = _tiny_model(dropout=0.0, shape=(1, 8, 8, 3))
    x = 5.0 * np.random.default_rng(1).uniform(size=(3, 6, 8, 8, 3)).astype(np.float32) + 3.0
    one = gv.calibrate_batch_stats(model.apply, variables, [x[0]], jax.random.key(2))
    # With one batch, eval mode with the calibrated statistics equals train mode (batch statistics) up to the
    # running variance's n/(n-1) (PyTorch's unbiased running variance; n = 6·8·8 values per channel).
    train_out, _ = jax.jit(lambda v, a: model.apply(v, a, train=True, mutable=["batch_stats"]))(variables, x[0])
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(apply(one, x[0]), train_out, rtol=3e-3, atol=3e-3)
    assert not np.allclose(apply(variables, x[0]), train_out, atol=1e-2)  # the old statistics do not
    # With several batches: the mean of the per-batch means and unbiased variances (as PyTorch's running stats).
    many = gv.calibrate_batch_stats(model.apply, variables, list(x), jax.random.key(2))
    h = np.asarray(jax.jit(nn.Conv(5, (3, 3)).apply)({"params": variables["params"]["Conv_0"]}, x), np.float64)
    stats = many["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], h.mean((1, 2, 3)).mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], h.reshape(3, -1, 5).var(1, ddof=1).mean(0), rtol=1e-4)
    # Models without BN come back unchanged.
    dense = nn.Dense(2)
    v = {"params": dense.init(jax.random.key(0, impl="rbg"), np.zeros((1, 3)))["params"]}
    assert gv.calibrate_batch_stats(dense.apply, v, [np.zeros((1, 3))], jax.random.key(0)) is v


def test_family_ratio_is_the_ratio_of_geometric_means():
    rows = [{"model": m, "family": f, "phase": "init", "bn": "raw", "trace_cov": t, "sum_std": 1.0}
            for m, f, t in (("a", "nas", 1e-2), ("b", "nas", 1e-4), ("c", "manual", 10.0), ("d", "manual", 1000.0))]
    out = {r["metric"]: r for r in family_ratios(rows)}
    np.testing.assert_allclose(out["trace_cov"]["log10_ratio"], 2.0 - (-3.0))
    np.testing.assert_allclose(out["sum_std"]["ratio"], 1.0)
    assert set(out) == {"trace_cov", "sum_std"} and out["trace_cov"]["n_nas"] == 2
