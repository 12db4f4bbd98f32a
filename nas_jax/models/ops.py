"""The DARTS operation set for evaluation networks (docs/protocol.md §b.1).

Convolutions have no bias, PyTorch's default initialisation (§b.7) and explicit symmetric padding. On CPU a
depthwise k×k convolution is k² shifted multiply-adds and a pointwise one a matrix product (several times faster
on XLA:CPU than its grouped convolution); on GPU/TPU the XLA convolution; equal by tests/test_ops.py.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.models.common import as_compute, batch_norm, torch_default_kernel_init

CONV_IMPLS = ("auto", "xla", "shifted")


def resolve_impl(impl: str) -> str:
    """'auto' -> 'shifted' on CPU, 'xla' elsewhere."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {impl!r}; valid: {CONV_IMPLS}.")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "xla"
    return impl


def _out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _taps(xp, k: int, stride: int, dilation: int, h_out: int, w_out: int):
    """Yield ((i, j), strided window) for every tap of a k×k kernel over padded ``xp``. ``lax`` calls, not
    ``jnp`` indexing: the same slices, traced several times faster (tracing is ~15 % of a DARTS step's compile)."""
    n, _, _, ch = xp.shape
    for i in range(k):
        for j in range(k):
            r, c = i * dilation, j * dilation
            yield (i, j), jax.lax.slice(xp, (0, r, c, 0), (n, r + stride * (h_out - 1) + 1,
                                                           c + stride * (w_out - 1) + 1, ch), (1, stride, stride, 1))


def _correlate(xp, kernel, stride: int, dilation: int, h_out: int, w_out: int):
    """Depthwise correlation of padded ``xp`` as k² shifted multiply-adds (one fused loop)."""
    k = kernel.shape[0]
    per_tap = kernel.reshape(k * k, kernel.shape[-1])
    out = None
    for (i, j), window in _taps(xp, k, stride, dilation, h_out, w_out):
        tap = jax.lax.broadcast_in_dim(jax.lax.index_in_dim(per_tap, i * k + j, 0, False), window.shape, (3,))
        term = jax.lax.mul(window, tap)
        out = term if out is None else jax.lax.add(out, term)
    return out


def _pad_hw(x, lo: int, hi: int, interior: int = 0, value=0.0):
    cfg = ((0, 0, 0), (lo, hi, interior), (lo, hi, interior), (0, 0, 0))
    return jax.lax.pad(x, jnp.asarray(value, x.dtype), cfg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_shifted(x, kernel, stride: int, pad: int, dilation: int):
    k = kernel.shape[0]
    h_out = _out_size(x.shape[1], k, stride, pad, dilation)
    w_out = _out_size(x.shape[2], k, stride, pad, dilation)
    return _correlate(_pad_hw(x, pad, pad), kernel, stride, dilation, h_out, w_out)


def _depthwise_fwd(x, kernel, stride, pad, dilation):
    return _depthwise_shifted(x, kernel, stride, pad, dilation), (x, kernel)


def _depthwise_bwd(stride, pad, dilation, residuals, g):
    """Hand-written VJP: both gradients are again shifted multiply-adds, which
    XLA:CPU fuses, unlike the pad/slice chains that autodiff produces."""
    x, kernel = residuals
    k, (h, w), (h_out, w_out) = kernel.shape[0], x.shape[1:3], g.shape[1:3]
    xp = _pad_hw(x, pad, pad)
    g_kernel = jnp.stack([jnp.sum(win * g, axis=(0, 1, 2)) for _, win in _taps(xp, k, stride, dilation, h_out, w_out)])
    g_kernel = g_kernel.reshape(kernel.shape)
    # dx = correlation of the zero-upsampled, padded g with the flipped kernel.
    lo = (k - 1) * dilation - pad
    hi_h = h + (k - 1) * dilation - lo - ((h_out - 1) * stride + 1)
    hi_w = w + (k - 1) * dilation - lo - ((w_out - 1) * stride + 1)
    gp = jax.lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (lo, hi_h, stride - 1), (lo, hi_w, stride - 1), (0, 0, 0)))
    g_x = _correlate(gp, kernel[::-1, ::-1], 1, dilation, h, w)
    return g_x, g_kernel


_depthwise_shifted.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv(x, kernel, stride: int, pad: int, dilation: int, impl: str):
    """Depthwise conv; ``kernel`` is HWIO with I = 1 and O = channels."""
    if resolve_impl(impl) == "xla":
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(stride, stride),
            padding=((pad, pad), (pad, pad)),
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )
    return _depthwise_shifted(x, kernel, stride, pad, dilation)


def max_pool_3x3(x, stride: int, impl: str):
    """3×3 max pool, pad 1 with -inf. On CPU a max over 9 shifted windows:
    XLA:CPU's select-and-scatter gradient of reduce_window is ~10x slower."""
    if resolve_impl(impl) == "xla":
        return nn.max_pool(x, (3, 3), (stride, stride), ((1, 1), (1, 1)))
    h_out, w_out = _out_size(x.shape[1], 3, stride, 1, 1), _out_size(x.shape[2], 3, stride, 1, 1)
    xp = _pad_hw(x, 1, 1, value=-jnp.inf)
    out = None
    for _, window in _taps(xp, 3, stride, 1, h_out, w_out):
        out = window if out is None else jnp.maximum(out, window)
    return out


def pointwise_conv(x, kernel, stride: int, impl: str):
    """1×1 conv; ``kernel`` is HWIO with H = W = 1."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    if resolve_impl(impl) == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.dot(x, kernel[0, 0])


class DepthwiseConv(nn.Module):
    """Depthwise k×k conv; float32 kernel, computed in ``dtype`` (None: the input's)."""

    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", torch_default_kernel_init, (self.kernel_size, self.kernel_size, 1, c))
        x, kernel = as_compute(x, self.dtype), as_compute(kernel, self.dtype)
        return depthwise_conv(x, kernel, self.stride, self.padding, self.dilation, self.impl)


class PointwiseConv(nn.Module):
    """1×1 conv; float32 kernel, computed in ``dtype`` (None: the input's)."""

    features: int
    stride: int = 1
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", torch_default_kernel_init, (1, 1, x.shape[-1], self.features))
        x, kernel = as_compute(x, self.dtype), as_compute(kernel, self.dtype)
        return pointwise_conv(x, kernel, self.stride, self.impl)


def conv(features: int, kernel: tuple[int, int], stride=(1, 1), padding=((0, 0), (0, 0)), name=None,
         dtype=None) -> nn.Conv:
    """A plain bias-free convolution with PyTorch default init (stem, 1×7/7×1); ``dtype`` the compute dtype."""
    return nn.Conv(features, kernel, strides=stride, padding=padding, use_bias=False,
                   kernel_init=torch_default_kernel_init, name=name, dtype=dtype)


# --------------------------------------------------------------------------
# Composite ops
# --------------------------------------------------------------------------


class ReLUConvBN(nn.Module):
    """ReLU -> 1×1 conv -> BN (cell preprocessing, §b.2)."""

    features: int
    affine: bool = True
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = PointwiseConv(self.features, impl=self.impl, dtype=self.dtype)(nn.relu(x))
        return batch_norm(train, self.affine, dtype=self.dtype)(x)


class FactorizedReduce(nn.Module):
    """ReLU -> two 1×1 stride-2 convs on x and x[:, 1:, 1:] -> concat -> BN."""

    features: int
    affine: bool = True
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"FactorizedReduce needs even height and width, got {x.shape[1:3]}.")
        x = nn.relu(x)
        half = self.features // 2
        a = PointwiseConv(half, stride=2, impl=self.impl, dtype=self.dtype)(x)
        b = PointwiseConv(self.features - half, stride=2, impl=self.impl, dtype=self.dtype)(x[:, 1:, 1:, :])
        return batch_norm(train, self.affine, dtype=self.dtype)(jnp.concatenate([a, b], axis=-1))


class _DepthwiseSeparable(nn.Module):
    """Fields of SepConv and DilConv and their [ReLU -> depthwise k×k -> pointwise -> BN] block (§b.1)."""

    features: int
    kernel_size: int
    stride: int
    affine: bool = True
    impl: str = "auto"
    dtype: Any = None

    def block(self, x, train: bool, stride: int, pad: int, dilation: int):
        """One block; called from the subclass's compact ``__call__``, so its submodules are the caller's."""
        x = DepthwiseConv(self.kernel_size, stride, pad, dilation, impl=self.impl, dtype=self.dtype)(nn.relu(x))
        x = PointwiseConv(self.features, impl=self.impl, dtype=self.dtype)(x)
        return batch_norm(train, self.affine, dtype=self.dtype)(x)


class SepConv(_DepthwiseSeparable):
    """Two stacked [ReLU -> depthwise k×k -> pointwise -> BN] blocks (§b.1)."""

    @nn.compact
    def __call__(self, x, train: bool):
        pad = (self.kernel_size - 1) // 2
        return self.block(self.block(x, train, self.stride, pad, 1), train, 1, pad, 1)


class DilConv(_DepthwiseSeparable):
    """ReLU -> dilated depthwise k×k (dilation 2) -> pointwise -> BN (§b.1)."""

    @nn.compact
    def __call__(self, x, train: bool):
        return self.block(x, train, self.stride, self.kernel_size - 1, 2)  # dilation 2: pad 2 for 3×3, 4 for 5×5


class Conv7x1_1x7(nn.Module):
    """ReLU -> conv 1×7 (stride (1, s)) -> conv 7×1 (stride (s, 1)) -> BN (§b.1)."""

    features: int
    stride: int
    affine: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(x)
        x = conv(self.features, (1, 7), (1, self.stride), ((0, 0), (3, 3)), dtype=self.dtype)(x)
        x = conv(self.features, (7, 1), (self.stride, 1), ((3, 3), (0, 0)), dtype=self.dtype)(x)
        return batch_norm(train, self.affine, dtype=self.dtype)(x)


class Pool(nn.Module):
    """3×3 max/avg pool, pad 1; avg excludes padding. No BN in eval networks;
    ``bn=True`` appends BN(affine=False) as the DARTS supernet does (§b.5)."""

    kind: str
    stride: int
    bn: bool = False
    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        if self.kind == "max":
            x = max_pool_3x3(x, self.stride, self.impl)
        else:
            x = nn.avg_pool(x, (3, 3), (self.stride, self.stride), ((1, 1), (1, 1)), count_include_pad=False)
        return batch_norm(train, affine=False, dtype=self.dtype)(x) if self.bn else x


class Zero(nn.Module):
    stride: int

    def __call__(self, x, train: bool):
        return x[:, :: self.stride, :: self.stride, :] * 0.0


class Identity(nn.Module):
    def __call__(self, x, train: bool):
        return x


def make_op(name: str, features: int, stride: int, affine: bool = True, pool_bn: bool = False,
            impl: str = "auto", module_name: str | None = None, dtype: Any = None) -> nn.Module:
    """Instantiate one op of the search space by its genotype name; ``dtype`` is the compute dtype
    (None: inferred, i.e. float32 models unchanged)."""
    kw = {"name": module_name}
    dkw = {"dtype": dtype}
    if name == "none":
        return Zero(stride, **kw)
    if name == "skip_connect":
        return Identity(**kw) if stride == 1 else FactorizedReduce(features, affine, impl, **kw, **dkw)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return Pool(name[:3], stride, pool_bn, impl, **kw, **dkw)
    if name.startswith("sep_conv_"):
        return SepConv(features, int(name[-1]), stride, affine, impl, **kw, **dkw)
    if name.startswith("dil_conv_"):
        return DilConv(features, int(name[-1]), stride, affine, impl, **kw, **dkw)
    if name == "conv_7x1_1x7":
        return Conv7x1_1x7(features, stride, affine, **kw, **dkw)
    raise ValueError(f"unknown op {name!r}; valid ops: {OP_NAMES}.")


OP_NAMES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
            "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7")
