"""Condition number of the empirical neural tangent kernel at initialisation (§5.3 "Other trainability
metrics"; the TE-NAS trainability measure the paper cites as [10]) — beyond the paper.

Θ = Σ_v J_v J_vᵀ on a batch of n inputs, where row i of J_v is ∂⟨v, f_θ(x_i)⟩/∂θ (eval mode, all trainable
parameters). Kernels:

* ``logit_sum`` (TE-NAS, default): one projection v = 1, i.e. the gradient of the summed logits;
* ``trace``: v runs over the C unit vectors, Θ = Σ_c Θ_c (the class-traced NTK).

Each J_v is the stacked per-example VJP of :func:`~nas_jax.analysis.grad_variance.per_example_grads`
(``lax.map(grad, batch_size=chunk)``, memory n × |θ|); the C projections of ``trace`` are accumulated in a
``lax.scan``. κ = λ_max / λ_min of the symmetric n × n Θ (eigenvalues in float64). A higher κ means harder
training; TE-NAS finds it correlated with lower accuracy. :func:`asr_correlation` relates κ to the PGD attack
success rates recorded in the same workdir.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from nas_jax.analysis.grad_variance import flat_rows, per_example_grads

KERNELS = ("logit_sum", "trace")
ASR_TASK = "pgd"  # the task whose records asr_correlation reads (its asr_most_likely, asr_least_likely)


def projections(kernel: str, num_classes: int) -> np.ndarray:
    if kernel == "logit_sum":
        return np.ones((1, num_classes), np.float32)
    if kernel == "trace":
        return np.eye(num_classes, dtype=np.float32)
    raise ValueError(f"unknown NTK kernel {kernel!r}; valid: {KERNELS}.")


def projected_output(apply_fn, variables, x, v):
    """⟨v, f_θ(x)⟩ of one example in eval mode: its gradient is a row of J_v."""
    return apply_fn(variables, x[None], train=False)[0] @ v


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _ntk(apply_fn, variables, x, vs, chunk: int):
    def body(theta, v):
        j = flat_rows(per_example_grads(apply_fn, variables, x, jnp.broadcast_to(v, (x.shape[0], *v.shape)),
                                        chunk=chunk, loss=projected_output))
        return theta + jnp.matmul(j, j.T, precision=jax.lax.Precision.HIGHEST), None

    theta, _ = jax.lax.scan(body, jnp.zeros((x.shape[0], x.shape[0]), jnp.float32), vs)
    return theta


def ntk_matrix(apply_fn, variables, x, *, num_classes: int, kernel: str = "logit_sum", chunk: int = 16) -> np.ndarray:
    """The n × n empirical NTK of ``apply_fn(variables, ·, train=False)`` on float images ``x``."""
    vs = jnp.asarray(projections(kernel, num_classes))
    return np.asarray(_ntk(apply_fn, variables, jnp.asarray(x, jnp.float32), vs, min(chunk, len(x))), np.float64)


def condition_number(theta: np.ndarray) -> dict[str, float]:
    """κ = λ_max / λ_min of a symmetric PSD kernel (inf when λ_min <= 0: the kernel is singular)."""
    eig = np.linalg.eigvalsh((theta + theta.T) / 2)
    lo, hi = float(eig[0]), float(eig[-1])
    return {"cond": hi / lo if lo > 0 else float("inf"), "lambda_max": hi, "lambda_min": lo,
            "trace": float(eig.sum())}


def asr_correlation(cond_by_model: dict[str, float], pgd_records: list[dict], dataset: str) -> dict:
    """Pearson and Spearman correlations of log10 κ with the PGD ASRs of the same models and dataset.

    ``pgd_records``: :data:`ASR_TASK` records (the latest per model wins). Models without a PGD record, or
    with an infinite κ, are left out; fewer than 3 models give ``None`` correlations.
    """
    asr: dict[str, dict] = {}
    for rec in pgd_records:
        if rec.get("dataset") == dataset:
            asr[rec["model"]] = rec["metrics"]
    models = [m for m in cond_by_model if m in asr and np.isfinite(cond_by_model[m]) and cond_by_model[m] > 0]
    out: dict = {"models": models, "n_models": len(models)}
    log_cond = np.log10([cond_by_model[m] for m in models])
    for mode in ("most_likely", "least_likely"):
        ys = np.array([asr[m].get(f"asr_{mode}", np.nan) for m in models], np.float64)
        ok = np.isfinite(ys)
        if ok.sum() >= 3 and np.ptp(log_cond[ok]) > 0 and np.ptp(ys[ok]) > 0:
            out[f"pearson_{mode}"] = float(stats.pearsonr(log_cond[ok], ys[ok])[0])
            out[f"spearman_{mode}"] = float(stats.spearmanr(log_cond[ok], ys[ok])[0])
        else:
            out[f"pearson_{mode}"] = out[f"spearman_{mode}"] = None
    return out
