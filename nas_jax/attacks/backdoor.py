"""Backdoor injection: TrojanNN and the BadNet baseline (paper §2 Eqn 7, §3.2 "Backdoor injection",
Figures 7–8, Table 5; docs/protocol.md §e.4, Appendix A item 10).

Pieces, each a pure function:

* **Trigger geometry** — a ``size``×``size`` patch (3×3 [paper]) at the top-left corner (rows 0–2, columns
  0–2, all channels) [artifact]; :func:`trigger_mask` is the mask M. Stamping (:func:`stamp`) blends the mark
  m into an image x with transparency a: x' = x + (1 − a)·M ⊙ (m − x), i.e. 30% mark and 70% image at
  a = 0.7 [paper]; a = 0 is an opaque patch (BadNet), a = 1 leaves x unchanged. The same function stamps the
  training stream and the evaluation inputs (identical offset and blending, Appendix A item 10).
* **Neuron selection** on the penultimate layer (the pooled feature vector every zoo model sows as
  ``intermediates/features``, consumed by the Dense layer named ``classifier``):
  ``strongest_connected`` [library: TrojanNN; the paper's default] keeps the n units j with the largest
  Σ_k |W[j, k]| of the classifier kernel W (shape features × outputs); ``least_activated`` [artifact] keeps
  the n units with the lowest mean eval-mode activation over the training set. Ties go to the lower index.
* **Trigger optimisation** (:func:`optimize_trigger`) — starting from a white mark, sign-gradient steps of
  0.015 for at most 20 iterations (Table 5) on the mark pixels inside M, minimising ‖h_S(m ⊙ M) − v‖₂ on
  the trigger-only image (zeros outside M), v = 10, stopping once the objective is below 5 [artifact]; the
  mark stays in the box [0, 1]. Runs in eval mode (G2).
* **Poisoning stream** (:func:`poison_transform`) — a ``batch_transform`` for
  :func:`nas_jax.train.trainer.make_train_step`: inside the compiled step, each augmented batch of B gets
  k stamped copies of its first k examples relabelled to the target, **appended** [artifact], with
  k = ⌊rB⌋ + Bernoulli(rB − ⌊rB⌋) for the poison rate r (E[k] = rB; r = 0.01 and B = 96 give k ∈ {0, 1}).
  Shapes are static: the step always appends ⌈rB⌉ rows; rows beyond k are unstamped copies with their own
  labels (clean duplicates), so the batch holds exactly k poisoned rows.
* **Metrics** (:func:`backdoor_metrics`) — ``asr``: the fraction of all stamped inputs classified as the target,
  target-class inputs included (docs/protocol.md §e.4's default [artifact]); ``asr_excluding_target``: the same over
  the inputs whose true class is not the target [library]; CAD: clean accuracy of the victim minus that of the
  trojaned model on the same inputs.
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

    Iteration i = 1..``iterations`` computes the objective, stops if it is below ``threshold``, else sets
    m ← clip(m − step·sign(∇_m obj) ⊙ M, 0, 1). Returns the mark and {'objective_initial',
    'objective_final', 'steps'}. One compiled loop per ``apply_fn`` and shape (the numbers are traced).
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
