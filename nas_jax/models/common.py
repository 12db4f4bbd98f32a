"""Building blocks shared by every model: input normalisation, PyTorch-style
initialisers and BatchNorm with PyTorch semantics.

docs/protocol.md §a.2 (normalisation inside the model, G1), §b.7 (initialisation, never
Flax defaults silently) and G4 (BN momentum 0.1 in PyTorch terms, eps 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.errors import UserError

# --------------------------------------------------------------------------
# Initialisers (docs/protocol.md §b.7)
# --------------------------------------------------------------------------


def _fan_in(shape: Sequence[int]) -> int:
    """Fan-in of a Flax kernel: HWIO for convolutions, (in, out) for dense."""
    fan = 1
    for d in shape[:-1]:
        fan *= d
    return fan


def _fan_out(shape: Sequence[int]) -> int:
    """Fan-out as PyTorch computes it: out_channels * receptive field."""
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-1] * receptive


def torch_default_kernel_init(key, shape, dtype=jnp.float32):
    """PyTorch's default conv/linear init (Kaiming-uniform, a=sqrt(5)):
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Used by the DARTS family (§b.7)."""
    bound = 1.0 / jnp.sqrt(_fan_in(shape))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias_init(fan_in: int):
    """PyTorch's default linear/conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / jnp.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
    """He-normal, mode fan_out, ReLU gain (torchvision ResNet/VGG convs)."""
    std = jnp.sqrt(2.0 / _fan_out(shape))
    return std * jax.random.normal(key, shape, dtype)


def kaiming_normal_fan_in(key, shape, dtype=jnp.float32):
    """He-normal, mode fan_in, ReLU gain (torchvision DenseNet convs)."""
    std = jnp.sqrt(2.0 / _fan_in(shape))
    return std * jax.random.normal(key, shape, dtype)


def normal_init(stddev: float):
    """N(0, stddev^2), e.g. VGG linear layers N(0, 0.01)."""
    return nn.initializers.normal(stddev)


# --------------------------------------------------------------------------
# Mixed precision: ``arch.dtype`` is the compute dtype of activations
# --------------------------------------------------------------------------

DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str):
    """The modules' ``dtype`` for ``arch.dtype``: None for 'float32' (Flax infers it from inputs and
    parameters, so float32 models are exactly as before and float64 checks stay float64), jnp.bfloat16 for
    'bfloat16'. Parameters are float32 either way (``param_dtype``)."""
    if name not in DTYPES:
        raise UserError(f"unknown arch.dtype {name!r}; valid: {DTYPES} (e.g. --config.arch.dtype=bfloat16).")
    return None if name == "float32" else jnp.bfloat16


def as_compute(x, dtype):
    """``x`` cast to the compute dtype (None: unchanged)."""
    return x if dtype is None else x.astype(dtype)


def as_output(x):
    """Logits (and sown features) leave a model in at least float32, so the loss and attacks are unchanged."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# --------------------------------------------------------------------------
# Normalisation and BatchNorm
# --------------------------------------------------------------------------


class Normalize(nn.Module):
    """First step of every model: (x - mean) / std in pixel space [0, 1] (G1), computed in the input's dtype
    and then cast to the compute ``dtype`` (None: kept)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return as_compute((x - mean) / std, self.dtype)


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` with PyTorch's running statistics (G4, the authors' ``nn.BatchNorm2d``).

    Train mode normalises with the batch statistics and updates ``mean ← m·mean + (1−m)·μ_B`` and
    ``var ← m·var + (1−m)·σ²_B·n/(n−1)`` (the *unbiased* variance; Flax's is biased), ``m = 0.9`` (PyTorch's 0.1).
    Same variables and class name as Flax's module, so auto-names, parameter counts and checkpoints are unchanged.
    Statistics and normalisation in at least float32 (running statistics float32), output cast to ``dtype``.
    """

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        if mask is not None or self.axis_name is not None or self.axis != -1:
            raise NotImplementedError("nas_jax BatchNorm supports the channel-last axis only, without masks or "
                                      "axis_name (jit over a sharded batch reduces across devices already).")
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        features = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,))
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # at least float32 (float64 stays)
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)  # biased: what the batch is normalised with
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                keep = ra_mean.value.dtype  # the running statistics stay float32 whatever the input dtype
                ra_mean.value = (self.momentum * ra_mean.value + (1 - self.momentum) * mean).astype(keep)
                ra_var.value = (self.momentum * ra_var.value + (1 - self.momentum) * unbiased).astype(keep)
        mul = jax.lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            mul = mul * self.param("scale", self.scale_init, (features,), self.param_dtype)
        y = (x - mean) * mul
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (features,), self.param_dtype)
        return y.astype(self.dtype or jnp.result_type(x, jnp.float32))


def batch_norm(train: bool, affine: bool = True, name: str | None = None, **kwargs) -> nn.BatchNorm:
    """BatchNorm with PyTorch semantics (G4): running-stat momentum 0.1, eps 1e-5, unbiased running
    variance (:class:`BatchNorm`).

    ``affine=False`` drops scale and bias (the DARTS supernet, §b.5).
    """
    return BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        use_scale=affine,
        use_bias=affine,
        name=name,
        **kwargs,
    )


def global_avg_pool(x):
    """NHWC -> NC mean over the spatial axes."""
    return jnp.mean(x, axis=(1, 2))


def scale_channels(channels: int, multiplier: float) -> int:
    """A channel count scaled by a width multiplier: round half up, at least 1.

    Used by the manual models' ``width_multiplier`` (tiny test variants, §c.3).
    """
    return max(1, int(channels * multiplier + 0.5))
