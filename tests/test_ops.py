"""Op semantics of the DARTS op set (docs/protocol.md §b.1) and the CPU/XLA conv equality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.models import ops


def _init_apply(module, x, train=False):
    variables = module.init(jax.random.key(0), x, train)
    out, _ = module.apply(variables, x, train, mutable=["batch_stats"])
    return variables, out


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (3, 2, 1), (5, 1, 1), (5, 2, 2), (7, 2, 1), (3, 1, 2)])
def test_depthwise_shifted_equals_xla(k, stride, dilation):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 5))
    kernel = jax.random.normal(jax.random.key(2), (k, k, 1, 5))
    pad = dilation * (k - 1) // 2
    a, b = (jax.jit(lambda x, kk, impl=impl: ops.depthwise_conv(x, kk, stride, pad, dilation, impl))(x, kernel)
            for impl in ("shifted", "xla"))
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_shifted_equals_xla(stride):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 5))
    kernel = jax.random.normal(jax.random.key(2), (1, 1, 5, 7))
    a = ops.pointwise_conv(x, kernel, stride, "shifted")
    b = ops.pointwise_conv(x, kernel, stride, "xla")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_sep_conv_is_two_stacked_blocks():
    x = jnp.ones((2, 8, 8, 4))
    variables, out = _init_apply(ops.make_op("sep_conv_3x3", 4, 2), x)
    params = variables["params"]
    assert sorted(params) == ["BatchNorm_0", "BatchNorm_1", "DepthwiseConv_0", "DepthwiseConv_1",
                              "PointwiseConv_0", "PointwiseConv_1"]
    assert params["DepthwiseConv_0"]["kernel"].shape == (3, 3, 1, 4)
    assert out.shape == (2, 4, 4, 4)  # stride only in the first block


def test_dil_conv_is_one_block_with_dilation_two():
    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
    variables, out = _init_apply(ops.make_op("dil_conv_3x3", 2, 1), x)
    assert sorted(variables["params"]) == ["BatchNorm_0", "DepthwiseConv_0", "PointwiseConv_0"]
    assert out.shape == x.shape  # pad 2 keeps the size with dilation 2


def test_skip_stride_two_is_factorized_reduce():
    op = ops.make_op("skip_connect", 6, 2)
    assert isinstance(op, ops.FactorizedReduce)
    assert isinstance(ops.make_op("skip_connect", 6, 1), ops.Identity)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
    variables, out = _init_apply(op, x)
    assert out.shape == (2, 4, 4, 6)
    # Reference: ReLU -> 1x1 stride-2 convs on x and x[:, 1:, 1:] -> concat -> BN (train-mode stats irrelevant: eval, init stats)
    p = variables["params"]
    r = jax.nn.relu(x)
    a = r[:, ::2, ::2] @ p["PointwiseConv_0"]["kernel"][0, 0]
    b = r[:, 1::2, 1::2] @ p["PointwiseConv_1"]["kernel"][0, 0]
    ref = jnp.concatenate([a, b], -1) / jnp.sqrt(1 + 1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_pools_carry_no_parameters_or_bn(name):
    variables = ops.make_op(name, 4, 1).init(jax.random.key(0), jnp.ones((1, 4, 4, 4)), False)
    assert not jax.tree_util.tree_leaves(variables)


def test_avg_pool_excludes_padding_and_max_pool_pads_with_minus_inf():
    ones = jnp.ones((1, 4, 4, 1))
    avg = ops.make_op("avg_pool_3x3", 1, 1).apply({}, ones, False)
    np.testing.assert_allclose(avg, 1.0)  # corners average 4 real pixels, not 9
    mx = ops.make_op("max_pool_3x3", 1, 1).apply({}, -ones, False)
    np.testing.assert_allclose(mx, -1.0)  # padding never wins
    assert ops.make_op("max_pool_3x3", 1, 2).apply({}, ones, False).shape == (1, 2, 2, 1)


def test_none_op_is_zero_with_stride():
    x = jnp.ones((1, 4, 4, 3))
    out = ops.make_op("none", 3, 2).apply({}, x, False)
    assert out.shape == (1, 2, 2, 3) and not np.any(out)


def test_conv_7x1_1x7_shapes():
    x = jnp.ones((1, 8, 8, 3))
    variables, out = _init_apply(ops.make_op("conv_7x1_1x7", 3, 2), x)
    assert out.shape == (1, 4, 4, 3)
    kernels = [v["kernel"].shape for k, v in variables["params"].items() if k.startswith("Conv")]
    assert kernels == [(1, 7, 3, 3), (7, 1, 3, 3)]


def test_unknown_op_and_impl_fail_with_choices():
    with pytest.raises(ValueError, match="valid ops"):
        ops.make_op("conv_9x9", 4, 1)
    with pytest.raises(ValueError, match="valid"):
        ops.resolve_impl("cuda")


def test_depthwise_init_is_pytorch_uniform():
    k = ops.DepthwiseConv(3).init(jax.random.key(0), jnp.ones((1, 4, 4, 4096)))["params"]["kernel"]
    bound = 1 / 3.0  # 1/sqrt(fan_in), fan_in = 3*3*1
    assert float(jnp.max(jnp.abs(k))) <= bound
    np.testing.assert_allclose(float(jnp.std(k)), bound / np.sqrt(3), rtol=0.02)


@pytest.mark.parametrize("k,stride,dilation,size", [(3, 1, 1, 8), (3, 2, 1, 8), (5, 2, 2, 9), (7, 2, 1, 7), (3, 1, 2, 8)])
def test_depthwise_gradients_match_xla(k, stride, dilation, size):
    """The hand-written VJP of the shifted depthwise conv equals XLA's autodiff."""
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    kernel = jax.random.normal(jax.random.key(2), (k, k, 1, 3))
    pad = dilation * (k - 1) // 2
    w = jax.random.normal(jax.random.key(3), ops.depthwise_conv(x, kernel, stride, pad, dilation, "xla").shape)

    def loss(impl):
        return jax.jit(jax.grad(lambda x, kk: jnp.sum(w * ops.depthwise_conv(x, kk, stride, pad, dilation, impl)),
                                (0, 1)))

    for a, b in zip(loss("shifted")(x, kernel), loss("xla")(x, kernel)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_shifted_equals_xla(stride):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    w = jax.random.normal(jax.random.key(1), (2, 8 // stride, 8 // stride, 3))
    f = {impl: jax.value_and_grad(lambda x, impl=impl: jnp.sum(w * ops.max_pool_3x3(x, stride, impl)))
         for impl in ("shifted", "xla")}
    (va, ga), (vb, gb) = f["shifted"](x), f["xla"](x)
    np.testing.assert_allclose(va, vb, rtol=1e-5)
    np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-6)
