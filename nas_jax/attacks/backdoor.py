"""Backdoor injection: TrojanNN and the BadNet baseline (paper §2 Eqn 7, §3.2 "Backdoor injection",
Figures 7–8, Table 5; docs/protocol.md §e.4, Appendix A item 10).

* **Trigger** — a ``size``×``size`` patch (3×3 [paper]) at the top-left corner [artifact] (mask M,
  :func:`trigger_mask`); :func:`stamp` blends mark m in with transparency a: x' = x + (1 − a)·M ⊙ (m − x)
  (a = 0.7 [paper]; a = 0: an opaque BadNet patch), the same for training and evaluation (Appendix A item 10).
* **Neuron selection** on the pooled features every zoo model sows (``intermediates/features``, input of the
  Dense ``classifier``): ``strongest_connected`` [library: TrojanNN; paper default], the n units with the largest
  Σ_k |W[j, k]|, or ``least_activated`` [artifact], the n lowest mean activations; ties to the lower index.
* **Trigger optimisation** (:func:`optimize_trigger`) — from a white mark, sign-gradient steps of 0.015, at most
  20 (Table 5), on the pixels in M minimising ‖h_S(m ⊙ M) − v‖₂ (v = 10) until below 5 [artifact]; eval mode (G2).
* **Poisoning** (:func:`poison_transform`) — a ``batch_transform`` for :func:`nas_jax.train.trainer.make_train_step`
  that **appends** [artifact] k stamped copies of a batch's first k examples, relabelled to the target,
  k = ⌊rB⌋ + Bernoulli(rB − ⌊rB⌋); the step always appends ⌈rB⌉ rows, those beyond k clean duplicates.
* **Metrics** (:func:`backdoor_metrics`) — ``asr`` over all stamped inputs (docs/protocol.md §e.4 [artifact]),
  ``asr_excluding_target`` [library], and CAD = victim minus trojaned clean accuracy on the same inputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.data import to_float

ATTACKS = ("trojannn", "badnet")
NEURON_STRATEGIES = ("strongest_connected", "least_activated")


# ----------------------------------------------------------------------------
# Trigger geometry and stamping
# ----------------------------------------------------------------------------


def trigger_mask(image_shape: tuple[int, int, int], size: int = 3, row: int = 0, col: int = 0) -> np.ndarray:
    """The mask M (H, W, 1) of a ``size``×``size`` patch whose top-left pixel is (``row``, ``col``)."""
    h, w = image_shape[:2]
    if size < 1 or row < 0 or col < 0 or row + size > h or col + size > w:
        raise ValueError(f"a {size}x{size} trigger at ({row}, {col}) does not fit a {h}x{w} image; "
                         f"choose size >= 1 and 0 <= row <= {h} - size, 0 <= col <= {w} - size.")
    mask = np.zeros((h, w, 1), np.float32)
    mask[row : row + size, col : col + size] = 1.0
    return mask


def white_mark(image_shape: tuple[int, int, int]) -> np.ndarray:
    """The initial mark m: a white image (1.0), of which only the pixels inside M matter [artifact]."""
    return np.ones(image_shape, np.float32)


def stamp(x: jax.Array, mark: jax.Array, mask: jax.Array, transparency: float) -> jax.Array:
    """x' = x + (1 − a)·M ⊙ (m − x) on float images in [0, 1] (any leading batch axes); ``transparency`` may be
    traced.

    Evaluated as (1 − w)·x + w·m with w = (1 − a)·M, which is the same blend but exact in floating point at
    the ends: w = 0 (a = 1, or outside M) returns x bit for bit and w = 1 (a = 0 inside M) returns m.
    """
    if isinstance(transparency, (int, float)) and not 0.0 <= transparency <= 1.0:
        raise ValueError(f"trigger transparency {transparency} must be in [0, 1] (0 = opaque patch).")
    w = (1.0 - transparency) * mask
    return (1.0 - w) * x + w * mark


# ----------------------------------------------------------------------------
# Penultimate features and neuron selection
# ----------------------------------------------------------------------------


def penultimate_features(apply_fn: Callable, variables: dict, x: jax.Array) -> jax.Array:
    """The pooled feature vector (N, D) feeding the classifier, in eval mode (G2).

    ``apply_fn`` is a zoo model's ``model.apply``; every zoo model sows it as ``intermediates/features``.
    """
    _, state = apply_fn(variables, x, train=False, mutable=["intermediates"])
    try:
        (feats,) = state["intermediates"]["features"]
    except KeyError as err:
        raise ValueError("the model does not sow its penultimate features: add "
                         "self.sow('intermediates', 'features', feats) before its classifier layer.") from err
    return feats


def classifier_kernel(variables: dict) -> np.ndarray:
    """The kernel (D, K) of the Dense layer named ``classifier`` that consumes the penultimate features."""
    try:
        return np.asarray(variables["params"]["classifier"]["kernel"])
    except KeyError as err:
        raise ValueError("no params['classifier']['kernel']: name the Dense layer that consumes the penultimate "
                         "features 'classifier' (every zoo model does).") from err


def select_neurons(strategy: str, n: int, *, kernel: np.ndarray | None = None,
                   mean_activation: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` target neurons (ties broken by the lower index).

    ``strongest_connected``: largest Σ_k |kernel[j, k]| (needs ``kernel``, shape D × K);
    ``least_activated``: lowest ``mean_activation[j]`` (shape D).
    """
    if strategy == "strongest_connected":
        if kernel is None:
            raise ValueError("strategy 'strongest_connected' needs kernel= (the classifier kernel, D x K).")
        score = -np.abs(np.asarray(kernel, np.float64)).sum(axis=1)
    elif strategy == "least_activated":
        if mean_activation is None:
            raise ValueError("strategy 'least_activated' needs mean_activation= (mean feature over the train set).")
        score = np.asarray(mean_activation, np.float64)
    else:
        raise ValueError(f"unknown neuron selection {strategy!r}; valid: {NEURON_STRATEGIES}.")
    if not 1 <= n <= score.shape[0]:
        raise ValueError(f"n_neuron={n} must be in [1, {score.shape[0]}] (the penultimate layer's width).")
    return np.argsort(score, kind="stable")[:n].astype(np.int32)


def mean_activation(apply_fn: Callable, variables: dict, x_u8: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Mean eval-mode penultimate activation per unit over uint8 images (for ``least_activated``)."""
    feats = jax.jit(lambda v, x: penultimate_features(apply_fn, v, to_float(x)).sum(0))
    total = sum(np.asarray(feats(variables, x_u8[i : i + batch_size]), np.float64)
                for i in range(0, len(x_u8), batch_size))
    return total / len(x_u8)


# ----------------------------------------------------------------------------
# Trigger optimisation (TrojanNN)
# ----------------------------------------------------------------------------


def trigger_objective(apply_fn: Callable, variables: dict, mark: jax.Array, mask: jax.Array,
                      neurons: jax.Array, target_value: float) -> jax.Array:
    """‖h_S(m ⊙ M) − v‖₂ on the trigger-only image (zeros outside M)."""
    feats = penultimate_features(apply_fn, variables, (mark * mask)[None])[0]
    return jnp.linalg.norm(feats[neurons] - target_value)


def optimize_trigger(apply_fn: Callable, variables: dict, mark: np.ndarray, mask: np.ndarray, neurons: np.ndarray,
                     *, step_size: float = 0.015, iterations: int = 20, target_value: float = 10.0,
                     threshold: float = 5.0) -> tuple[np.ndarray, dict]:
    """Sign-gradient descent on the mark pixels inside M (docs/protocol.md §e.4 step 2), in eval mode.

    Each iteration stops if the objective is below ``threshold``, else m ← clip(m − step·sign(∇_m obj) ⊙ M, 0, 1).
    Returns the mark and {'objective_initial', 'objective_final', 'steps'}; one compiled loop per ``apply_fn``/shape.
    """
    m, obj0, obj, steps = _optimize_trigger(apply_fn, variables, jnp.asarray(mark, jnp.float32),
                                            jnp.asarray(mask, jnp.float32), jnp.asarray(neurons, jnp.int32),
                                            jnp.float32(step_size), jnp.int32(iterations), jnp.float32(target_value),
                                            jnp.float32(threshold))
    return np.asarray(m), {"objective_initial": float(obj0), "objective_final": float(obj), "steps": int(steps)}


@functools.partial(jax.jit, static_argnums=0)
def _optimize_trigger(apply_fn, variables, m0, mask, neurons, step_size, iterations, target_value, threshold):
    def objective(m):
        return trigger_objective(apply_fn, variables, m, mask, neurons, target_value)

    def cond(c):
        i, _, obj, _ = c
        return (i < iterations) & (obj >= threshold)

    def body(c):
        i, m, _, g = c
        m = jnp.clip(m - step_size * jnp.sign(g) * mask, 0.0, 1.0)
        obj, g = jax.value_and_grad(objective)(m)
        return i + 1, m, obj, g

    obj0, g0 = jax.value_and_grad(objective)(m0)
    steps, m, obj, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), m0, obj0, g0))
    return m, obj0, obj, steps


# ----------------------------------------------------------------------------
# The poisoning stream, inside the compiled train step
# ----------------------------------------------------------------------------


def poison_transform(mark: np.ndarray, mask: np.ndarray, transparency: float, target: int, rate: float):
    """A ``batch_transform(key, variables, images, labels) -> (images, labels)`` that appends stamped,
    relabelled copies of the first k examples of each batch (see the module docstring)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"poison rate {rate} must be in [0, 1] (0.01 = one stamped copy per 100 examples).")
    mark_j, mask_j = jnp.asarray(mark, jnp.float32), jnp.asarray(mask, jnp.float32)

    def transform(key, variables, images, labels):
        del variables
        b = images.shape[0]
        k_max = math.ceil(rate * b)
        if k_max == 0:
            return images, labels
        base = math.floor(rate * b)
        k = base + jax.random.bernoulli(key, rate * b - base).astype(jnp.int32)
        poisoned = jnp.arange(k_max) < k
        src = images[:k_max]
        extra = jnp.where(poisoned[:, None, None, None], stamp(src, mark_j, mask_j, transparency), src)
        extra_labels = jnp.where(poisoned, jnp.asarray(target, labels.dtype), labels[:k_max])
        return jnp.concatenate([images, extra]), jnp.concatenate([labels, extra_labels])

    return transform


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


def backdoor_metrics(labels: np.ndarray, pred_victim: np.ndarray, pred_trojan: np.ndarray,
                     pred_triggered: np.ndarray, target: int) -> dict:
    """ASR and CAD on one set of inputs (docs/protocol.md §e.4 step 4).

    ``pred_victim``/``pred_trojan``: predictions of the clean and trojaned models on the clean inputs;
    ``pred_triggered``: the trojaned model on the stamped inputs. ``asr`` counts every stamped input classified
    as ``target`` (target-class inputs included [artifact]); ``asr_excluding_target`` leaves those out [library].
    """
    labels, pred_triggered = np.asarray(labels), np.asarray(pred_triggered)
    others = labels != target
    if not others.any():
        raise ValueError(f"every evaluation input belongs to the target class {target}: the ASR excluding the "
                         "target class is undefined; evaluate on inputs of several classes.")
    hit = pred_triggered == target
    acc_victim = float(np.mean(np.asarray(pred_victim) == labels))
    acc_trojan = float(np.mean(np.asarray(pred_trojan) == labels))
    return {"asr": float(hit.mean()), "asr_excluding_target": float(hit[others].mean()),
            "cad": acc_victim - acc_trojan, "clean_accuracy_victim": acc_victim,
            "clean_accuracy_trojan": acc_trojan}
