"""Properties of a network at initialisation (input-gradient norm, input-Hessian eigenvalue, weight sharpness)
against brute force on a tiny model: central finite differences, the dense Hessian's eigenvalues, an explicit
loop over directions and the first-order expansion of the loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict

from nas_jax.analysis import sensitivity
from nas_jax.analysis.grad_variance import example_loss
from nas_jax.analysis.landscape import filter_normalized_directions


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.tanh(nn.Conv(3, (3, 3))(x))
        return nn.Dense(4)(x.reshape(len(x), -1))


def _setup():
    model = Tiny()
    x = jax.random.uniform(jax.random.key(0), (5, 4, 4, 1), jnp.float64)
    y = jnp.array([0, 1, 2, 3, 1])
    variables = model.init(jax.random.key(1), x)
    return model.apply, variables, x, y


def test_input_gradient_norms_and_hessian_eigenvalues_match_brute_force():
    with jax.enable_x64(True):
        apply_fn, variables, x, y = _setup()
        norms = np.asarray(sensitivity.input_gradient_norms(apply_fn, variables, x, y))
        eig = np.asarray(sensitivity.input_hessian_eigenvalues(apply_fn, variables, x, y, jax.random.key(2), 300))
        eps = 1e-6
        for i in range(len(x)):
            loss = lambda z, i=i: example_loss(apply_fn, variables, z, y[i])
            basis = np.eye(x[i].size).reshape(-1, *x[i].shape)
            fd = np.array([(loss(x[i] + eps * e) - loss(x[i] - eps * e)) / (2 * eps) for e in basis])
            np.testing.assert_allclose(norms[i], np.linalg.norm(fd), rtol=1e-6)
            dense = np.asarray(jax.hessian(loss)(x[i])).reshape(x[i].size, x[i].size)
            values = np.linalg.eigvalsh((dense + dense.T) / 2)
            np.testing.assert_allclose(eig[i], values[np.argmax(np.abs(values))], rtol=1e-5)


def test_sharpness_is_the_mean_loss_increase_along_filter_normalised_directions():
    with jax.enable_x64(True):
        apply_fn, variables, x, y = _setup()
        key = jax.random.key(3)

        def loss(params):
            return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
                apply_fn({**variables, "params": params}, x), y)))

        def along(d, r):
            return jax.tree_util.tree_map_with_path(
                lambda p, w: w + r * d.get(tuple(k.key for k in p), 0.0), variables["params"])

        dirs = [filter_normalized_directions(k, variables["params"])[0] for k in jax.random.split(key, 4)]
        base = loss(variables["params"])
        for r in (0.05, 1e-5):
            loop = np.mean([loss(along(d, r)) for d in dirs]) - base  # one direction at a time
            got = float(sensitivity.sharpness(apply_fn, variables, x, y, key, r, 4))
            np.testing.assert_allclose(got, loop, rtol=1e-6, atol=1e-12)
        grad = flatten_dict(jax.grad(lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            apply_fn({**variables, "params": p}, x), y)))(variables["params"]))
        first_order = 1e-5 * np.mean([sum(float(jnp.vdot(grad[p], d[p])) for p in d) for d in dirs])
        np.testing.assert_allclose(got, first_order, rtol=1e-3)  # r = 1e-5: the linear term dominates
        assert float(sensitivity.sharpness(apply_fn, variables, x, y, key, 0.0, 4)) == 0.0
