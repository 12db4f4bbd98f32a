"""Tests for the 7 manual CIFAR models (docs/protocol.md §c.3, §b.6, §b.7).

Full-size parameter counts use ``jax.eval_shape`` (no computation); forward passes use tiny
widths / block counts on 2 x 32 x 32 x 3 inputs so the file stays fast on CPU.

Keys are ``impl="rbg"``: compiling a model's ``init`` with the default threefry PRNG takes
~20 s on 2 CPU cores even for a tiny model, against ~3 s with rbg; the initialisers' statistics
do not depend on the bit generator.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.models.manual import MANUAL_MODELS
from nas_jax.models.manual.bit import StdConv
from nas_jax.models.manual.resnext import grouped_width

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

# Trainable parameters (params collection; BN running statistics excluded), 10 classes.
# Derivation: each count equals sum(p.numel()) of the PyTorch definition with the §c.3 changes,
# cross-checked offline with torch 2.13 / torchvision 0.28 (never a dependency):
EXPECTED_PARAMS = {
    # torchvision resnet18, conv1 7x7 -> 3x3 (-9408 + 1728), fc 512->10. Oracle of §b.6.
    "resnet": 11_173_962,
    # torchvision resnext50_32x4d, conv1 -> 3x3, layer4 removed, fc Linear(1024, 10) with bias.
    "resnext": 8_437_578,
    # torchvision wide_resnet50_2, conv1 -> 3x3, fc 2048->10.
    "wideresnet": 66_847_050,
    # torchvision densenet121 (7,978,856 at 1000 classes): conv0 7x7 -> 3x3 (-9408 + 1728),
    # norm0 removed (-128), classifier 1024->10 (-1,025,000 + 10,250).
    "densenet": 6_956_298,
    # torchvision vgg13_bn features (9,410,880 incl. BN affine) + 512*512+512 + 512*512+512 + 512*10+10.
    "vgg": 9_941_322,
    # timm / artifact dla34 without the unused project layers (15,742,104 at 1000 classes):
    # base conv 7x7 -> 3x3 (-2352 + 432), fc 512->10 (-513,000 + 5,130).
    "dla": 15_232_314,
    # big_transfer ResNetV2-50x1 body + head GN (23,500,352): root 7x7 -> 3x3 (-9408 + 1728),
    # Linear(2048, 10) (+20,490).
    "bit": 23_513_162,
}

FEATURE_DIMS = {
    "resnet": 512,
    "resnext": 1024,
    "wideresnet": 2048,
    "densenet": 1024,
    "vgg": 512,
    "dla": 512,
    "bit": 2048,
}

# Tiny variants for real forward passes: (constructor kwargs, expected feature dimension).
TINY = {
    "resnet": ({"width_multiplier": 1 / 16, "blocks": (1, 1, 1, 1)}, 32),
    "resnext": ({"width_multiplier": 1 / 16, "blocks": (1, 1, 1)}, 64),
    "wideresnet": ({"width_multiplier": 1 / 16, "blocks": (1, 1, 1, 1)}, 128),
    # growth 2, 4 initial features: 4 +2*2 = 8 -> 4 -> 8 -> 4 -> 8 -> 4 -> 8 -> 4 -> 8.
    "densenet": ({"width_multiplier": 1 / 16, "blocks": (2, 2, 2, 2)}, 8),
    "vgg": ({"width_multiplier": 1 / 16}, 32),
    "dla": ({"width_multiplier": 1 / 8}, 64),
    "bit": ({"width_multiplier": 1 / 16, "blocks": (1, 1, 1, 1)}, 128),
}


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def _init(model, x: jax.Array):
    return jax.jit(model.init)(_key(0), x)


def _random_variables(model, x: jax.Array) -> dict:
    """Variables with the right tree and shapes, filled on the host (skips compiling ``init``).

    Kernels ~ N(0, 2 / fan_in), norm scales 1, biases 0, running mean 0 and variance 1. The
    real initialisers are checked by the ``*_initialisers`` tests below.
    """
    shapes = jax.eval_shape(model.init, _key(0), x)
    rng = np.random.default_rng(0)

    def fill(path, leaf) -> jax.Array:
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0.0, math.sqrt(2.0 / fan_in), leaf.shape), jnp.float32)
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, jnp.float32)
        return jnp.zeros(leaf.shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _build(name: str, **kwargs):
    return MANUAL_MODELS[name](num_classes=10, mean=MEAN, std=STD, **kwargs)


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _images(n: int = 2, size: int = 32) -> jax.Array:
    return jax.random.uniform(_key(42), (n, size, size, 3))


def test_registry_interface():
    assert sorted(MANUAL_MODELS) == ["bit", "densenet", "dla", "resnet", "resnext", "vgg", "wideresnet"]
    for cls in MANUAL_MODELS.values():
        assert cls.family == "manual"
        model = cls(num_classes=3, mean=MEAN, std=STD, width_multiplier=0.5)
        assert model.width_multiplier == 0.5
        assert cls.__module__.startswith("nas_jax.models.manual.")


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_full_size_parameter_count_and_feature_dim(name):
    model = _build(name)
    variables = jax.eval_shape(model.init, _key(0), jnp.zeros((1, 32, 32, 3)))
    assert _count(variables["params"]) == EXPECTED_PARAMS[name]
    kernel = variables["params"]["classifier"]["kernel"]
    assert kernel.shape[0] == FEATURE_DIMS[name]
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((4, 32, 32, 3)))
    assert out.shape == (4, 10)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_features_and_batch_norm_modes(name):
    kwargs, feature_dim = TINY[name]
    model = _build(name, **kwargs)
    x = _images()
    variables = _random_variables(model, x[:1])

    @jax.jit  # one compilation for both modes keeps the test fast on CPU
    def both_modes(v, x, key):
        eval_out = model.apply(v, x, train=False, mutable=["intermediates", "batch_stats"])
        train_out = model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
        return eval_out, train_out

    (logits, state), (train_logits, new_state) = both_modes(variables, x, _key(1))

    # Eval mode: logits, sown features, deterministic, no state change.
    assert logits.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))
    (feats,) = state["intermediates"]["features"]
    assert feats.shape == (2, feature_dim)
    if "batch_stats" in variables:
        assert jax.tree_util.tree_all(
            jax.tree_util.tree_map(jnp.array_equal, state["batch_stats"], variables["batch_stats"])
        )
    (logits_again, _), (train_logits_2, _) = both_modes(variables, x, _key(2))
    np.testing.assert_array_equal(np.asarray(logits_again), np.asarray(logits))

    # The sown features are exactly what the `classifier` Dense consumes.
    clf = variables["params"]["classifier"]
    first = feats @ clf["kernel"] + clf["bias"]
    if name == "vgg":
        p = variables["params"]
        hidden = jax.nn.relu(jax.nn.relu(first) @ p["classifier_1"]["kernel"] + p["classifier_1"]["bias"])
        first = hidden @ p["classifier_2"]["kernel"] + p["classifier_2"]["bias"]
    np.testing.assert_allclose(np.asarray(first), np.asarray(logits), rtol=1e-5, atol=1e-6)

    # Train mode: batch statistics are used and the running averages move.
    if name == "vgg":  # dropout is on in train mode only
        assert not np.allclose(train_logits, train_logits_2)
    if name == "bit":
        assert set(variables) == {"params"} and not new_state  # GroupNorm only: no state to update
        np.testing.assert_allclose(np.asarray(train_logits), np.asarray(logits), rtol=1e-5, atol=1e-6)
        return
    assert train_logits.shape == (2, 10)
    changed = jax.tree_util.tree_map(
        lambda a, b: not np.allclose(a, b), new_state["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree_util.tree_leaves(changed))


def _std_ok(w, expected: float, tol: float = 0.03) -> bool:
    return abs(float(jnp.std(w)) / expected - 1.0) < tol


def test_resnet_initialisers():
    # Full widths with one block per stage on 8x8 inputs: cheap, and layer4 has a 3x3x512x512 conv.
    model = _build("resnet", blocks=(0, 0, 0, 1))  # stem + one stage-4 block
    params = _init(model, jnp.zeros((1, 8, 8, 3)))["params"]
    kernel = params["layer4_0"]["conv2"]["kernel"]
    assert kernel.shape == (3, 3, 512, 512)
    assert _std_ok(kernel, math.sqrt(2.0 / (9 * 512)))  # He-normal, fan_out (§b.7)
    assert abs(float(jnp.mean(kernel))) < 1e-3
    assert "bias" not in params["layer4_0"]["conv2"]
    bn = params["layer4_0"]["bn2"]
    assert jnp.all(bn["scale"] == 1) and jnp.all(bn["bias"] == 0)
    bound = 1.0 / math.sqrt(512)  # PyTorch default Linear
    clf = params["classifier"]
    assert float(jnp.max(jnp.abs(clf["kernel"]))) <= bound
    assert _std_ok(clf["kernel"], bound / math.sqrt(3), tol=0.1)
    assert float(jnp.max(jnp.abs(clf["bias"]))) <= bound and float(jnp.max(jnp.abs(clf["bias"]))) > 0


def test_densenet_and_vgg_initialisers():
    dense = _build("densenet", blocks=(0, 0, 0, 1))
    params = _init(dense, jnp.zeros((1, 8, 8, 3)))["params"]
    kernel = params["denseblock4_layer1"]["conv2"]["kernel"]
    assert kernel.shape == (3, 3, 128, 32)
    assert _std_ok(kernel, math.sqrt(2.0 / (9 * 128)))  # He-normal, fan_in (fan_out would be 2x larger)
    assert jnp.all(params["classifier"]["bias"] == 0)  # torchvision DenseNet zeroes the Linear bias

    vgg = _build("vgg")
    params = _init(vgg, jnp.zeros((1, 32, 32, 3)))["params"]
    conv = params["conv9"]
    assert conv["kernel"].shape == (3, 3, 512, 512)
    assert _std_ok(conv["kernel"], math.sqrt(2.0 / (9 * 512)))
    assert jnp.all(conv["bias"] == 0)  # VGG convs have a bias, initialised to zero
    for name in ("classifier", "classifier_1"):
        assert _std_ok(params[name]["kernel"], 0.01, tol=0.05)
        assert jnp.all(params[name]["bias"] == 0)


def test_dla_initialisers():
    dla = _build("dla", levels=(1, 1, 1, 1))
    params = _init(dla, jnp.zeros((1, 8, 8, 3)))["params"]
    kernel = params["level5"]["tree2"]["conv1"]["kernel"]
    assert kernel.shape == (3, 3, 512, 512)
    assert _std_ok(kernel, math.sqrt(2.0 / (9 * 512)))  # official DLA: N(0, 2 / (k*k*out))


def test_bit_weight_standardised_conv():
    conv = StdConv(features=8, kernel_size=3, stride=2)
    x = _images()
    variables = jax.jit(conv.init)(_key(0), x)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (3, 3, 3, 8)
    assert float(jnp.max(jnp.abs(kernel))) <= 1.0 / math.sqrt(27)  # PyTorch default conv init
    apply = jax.jit(conv.apply)
    out = apply(variables, x)
    assert out.shape == (2, 16, 16, 8)  # explicit pad 1, stride 2
    # Per-output-channel standardisation: an affine change of each filter leaves the output unchanged.
    scaled = {"params": {"kernel": kernel * jnp.arange(1.0, 9.0) + jnp.linspace(-1.0, 1.0, 8)}}
    np.testing.assert_allclose(np.asarray(apply(scaled, x)), np.asarray(out), rtol=1e-4, atol=1e-4)
    # ... and the standardised filters have zero mean and unit (biased) variance.
    w = np.asarray(kernel)
    w = (w - w.mean(axis=(0, 1, 2))) / np.sqrt(w.var(axis=(0, 1, 2)) + 1e-10)
    ref = jax.lax.conv_general_dilated(
        x, jnp.asarray(w), (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_resnext_width_rule():
    assert grouped_width(128, 32, 1.0) == (128, 32)
    assert grouped_width(512, 32, 0.25) == (128, 32)
    assert grouped_width(128, 32, 1 / 16) == (8, 8)  # fewer than 1 channel per group: cardinality drops
    assert grouped_width(128, 32, 0.3) == (32, 32)


def test_vgg_classifier_hidden_width_is_not_scaled():
    """The width multiplier scales VGG's convolutions but not its 512-wide classifier (see vgg.py)."""
    model = _build("vgg", width_multiplier=0.25)
    shapes = jax.eval_shape(model.init, _key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert shapes["conv0"]["kernel"].shape == (3, 3, 3, 16)
    assert shapes["classifier"]["kernel"].shape == (128, 512)
    assert shapes["classifier_1"]["kernel"].shape == (512, 512)
    assert shapes["classifier_2"]["kernel"].shape == (512, 10)
