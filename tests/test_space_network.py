"""The space network (one compiled program for every genotype of a shape) against the per-genotype DARTS
network, for the 14 named genotypes: with the same variables, the same logits (eval and train mode), the same
new BN statistics and the same gradients; a second genotype of a shape compiles nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.models import space
from nas_jax.models.darts import DartsNetwork
from nas_jax.models.genotypes import get_genotype, zoo_names

KW = {"num_classes": 10, "mean": (0.5, 0.4, 0.3), "std": (0.25, 0.2, 0.3), "init_channels": 2, "layers": 3,
      "dropout": 0.0, "conv_impl": "xla"}


def _forward(model, variables, x):
    """(eval logits, train logits, new batch_stats)."""
    train_logits, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return model.apply(variables, x, train=False), train_logits, new["batch_stats"]


def _grads(model, variables, x, y):
    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    return jax.grad(loss)(variables["params"])


def _setup(name, template_name):
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    net = space.SpaceNetwork(get_genotype(template_name), space_ops=space.ZOO_OPS, **KW)
    template = net.init(jax.random.key(1), x)
    reference = DartsNetwork(get_genotype(name), **KW)
    v = reference.init(jax.random.key(2), x)
    v["batch_stats"] = jax.tree_util.tree_map(lambda s: s + 0.1, v["batch_stats"])  # eval mode reads them
    return x, net, template, reference, v


def test_the_space_network_is_each_named_genotypes_network_in_one_program_per_shape():
    """Eval and train-mode logits and the new BN statistics, all 14 named genotypes (three shapes)."""
    families = {}
    for name in zoo_names():
        families.setdefault(space.shape_of(get_genotype(name)), []).append(name)
    assert len(zoo_names()) == 14 and len(families) == 3  # the DARTS space's 4 nodes, ENAS/NASNet, AmoebaNet
    for names in families.values():
        run = None
        for name in names:
            x, net, template, reference, v = _setup(name, names[0])
            run = run or jax.jit(lambda v, net=net, x=x: _forward(net, v, x))
            w = space.variables_from_network(reference, v, template, space.ZOO_OPS)
            want, got = _forward(reference, v, x), run(w)
            for a, b in zip(want[:2], got[:2], strict=True):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
            expected = space.variables_from_network(reference, {**v, "batch_stats": want[2]}, template,
                                                    space.ZOO_OPS)["batch_stats"]  # unused ops' stay the template's
            jax.tree_util.tree_map(lambda e, g: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6),
                                   expected, got[2])
        assert run._cache_size() == 1  # every genotype of the shape ran in one compiled program


def test_the_space_networks_gradients_are_the_genotype_networks_in_its_slots():
    """Gradients of the train-mode loss: the per-genotype network's, in the slots of its ops; zero elsewhere."""
    x, net, template, reference, v = _setup("pdarts", "darts_v2")  # pdarts uses all seven ops of the space
    y = jnp.arange(4)
    w = space.variables_from_network(reference, v, template, space.ZOO_OPS)
    zero = jax.tree_util.tree_map(jnp.zeros_like, template)
    expected = space.variables_from_network(reference, {**v, "params": _grads(reference, v, x, y)}, zero,
                                            space.ZOO_OPS)["params"]
    jax.tree_util.tree_map(lambda e, g: np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6), expected,
                           jax.jit(lambda w: _grads(net, w, x, y))(w))
