"""BatchNorm with PyTorch's running statistics (G4): one update checked against a hand computation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.models.common import batch_norm


class _Net(nn.Module):
    affine: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        return batch_norm(train, self.affine)(x)


def test_one_update_matches_pytorch_formula():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 2, 5)) * 2.0 + 1.5).astype(np.float32)  # n = 4·3·2 = 24 values per channel
    net = _Net()
    variables = net.init(jax.random.key(0), jnp.asarray(x))
    y, mutated = net.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    stats = mutated["batch_stats"]["BatchNorm_0"]

    flat = x.reshape(-1, 5).astype(np.float64)
    n = flat.shape[0]
    mu = flat.mean(0)
    biased = ((flat - mu) ** 2).sum(0) / n
    unbiased = ((flat - mu) ** 2).sum(0) / (n - 1)  # torch.var(unbiased=True)
    # PyTorch: running = (1 - 0.1) · running + 0.1 · batch statistic, from (0, 1)
    np.testing.assert_allclose(stats["mean"], 0.1 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * unbiased, rtol=1e-5)
    assert not np.allclose(stats["var"], 0.9 + 0.1 * biased, rtol=1e-4)  # Flax's biased update differs
    # The batch itself is normalised with the biased variance and eps 1e-5 (scale 1, bias 0 at init).
    np.testing.assert_allclose(y, ((flat - mu) / np.sqrt(biased + 1e-5)).reshape(x.shape), rtol=1e-4, atol=1e-5)

    # Eval mode uses the running statistics.
    v2 = {"params": variables["params"], "batch_stats": mutated["batch_stats"]}
    y_eval = net.apply(v2, jnp.asarray(x), train=False)
    expect = (flat - 0.1 * mu) / np.sqrt(0.9 + 0.1 * unbiased + 1e-5)
    np.testing.assert_allclose(y_eval, expect.reshape(x.shape), rtol=1e-4, atol=1e-5)


def test_variable_names_and_counts_are_flax_layout():
    x = jnp.ones((2, 4, 4, 3))
    v = _Net().init(jax.random.key(0), x)
    assert jax.tree_util.tree_map(jnp.shape, v) == {
        "params": {"BatchNorm_0": {"bias": (3,), "scale": (3,)}},
        "batch_stats": {"BatchNorm_0": {"mean": (3,), "var": (3,)}},
    }
    v = _Net(affine=False).init(jax.random.key(0), x)
    assert "params" not in v and jax.tree_util.tree_map(jnp.shape, v["batch_stats"]) == {
        "BatchNorm_0": {"mean": (3,), "var": (3,)}}
    # init does not update the running statistics
    np.testing.assert_array_equal(v["batch_stats"]["BatchNorm_0"]["var"], np.ones(3))
