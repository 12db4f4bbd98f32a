"""Why NAS models are vulnerable (§4, §5.1, §5.3): loss contours, per-example gradient variance, cell
structure and NTK trainability, as compiled, vmapped JAX studies (docs/protocol.md §c.4, §f.1–f.3)."""

from nas_jax.analysis.grad_variance import calibrate_batch_stats, gradient_variance, per_example_grads
from nas_jax.analysis.landscape import (
    Contour,
    filter_normalized_directions,
    first_conv_directions,
    input_contour,
    parameter_contour,
    smoothness,
)
from nas_jax.analysis.ntk import asr_correlation, condition_number, ntk_matrix

__all__ = [
    "Contour",
    "asr_correlation",
    "calibrate_batch_stats",
    "condition_number",
    "filter_normalized_directions",
    "first_conv_directions",
    "gradient_variance",
    "input_contour",
    "ntk_matrix",
    "parameter_contour",
    "per_example_grads",
    "smoothness",
]
