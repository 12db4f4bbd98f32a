"""Label-only membership inference by boundary distance (paper §3.2 Figure 10, Table 4; docs/protocol.md §e.6).

Choquette-Choo, Tramèr, Carlini & Papernot, "Label-Only Membership Inference Attacks" (ICML 2021): members tend
to lie farther from the boundary. An input's score is the distance to the closest label-changing point
HopSkipJump finds (:mod:`nas_jax.attacks.hopskipjump`; L2, or L∞ of the same point as the artifact's option);
a misclassified input scores 0 [library]. The AUC takes members as positive and larger distance as "member";
the raw value is reported beside max(AUC, 1 − AUC) [artifact], and the baseline scores correct inputs 1.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from nas_jax.attacks.hopskipjump import HSJResult
from nas_jax.data import Dataset

DISTANCES = ("l2", "linf")


def sample_members(dataset: Dataset, n_members: int, n_nonmembers: int, seed: int) -> dict[str, np.ndarray]:
    """``n_members`` random training images (not augmented) and ``n_nonmembers`` random test images (G5: the same
    draw for every model). Returns images (uint8), true labels and is_member, members first."""
    if not 0 < n_members <= len(dataset.y_train) or not 0 < n_nonmembers <= len(dataset.y_test):
        raise ValueError(f"need 1..{len(dataset.y_train)} members and 1..{len(dataset.y_test)} non-members, got "
                         f"{n_members} and {n_nonmembers}; lower membership.n_members / n_nonmembers.")
    rng = np.random.default_rng([seed, 30])
    tr = rng.permutation(len(dataset.y_train))[:n_members]
    te = rng.permutation(len(dataset.y_test))[:n_nonmembers]
    return {"images": np.concatenate([dataset.x_train[tr], dataset.x_test[te]]),
            "labels": np.concatenate([dataset.y_train[tr], dataset.y_test[te]]).astype(np.int32),
            "is_member": np.concatenate([np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]),
            "indices": np.concatenate([tr, te])}


def boundary_scores(result: HSJResult | dict, correct: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Membership scores: the HopSkipJump distance (``l2`` or ``linf``; from an :class:`HSJResult` or a dict with
    ``distance_l2``/``distance_linf``), 0 for misclassified inputs."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {DISTANCES}.")
    field = f"distance_{distance}"
    d = np.asarray(result[field] if isinstance(result, dict) else getattr(result, field), np.float64)
    return np.where(correct, d, 0.0)


def membership_auc(is_member: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC with members positive and larger score = member (raw), and max(AUC, 1 − AUC) [artifact]."""
    is_member = np.asarray(is_member, bool)
    if is_member.all() or not is_member.any():
        raise ValueError("the AUC needs both members and non-members.")
    auc = float(roc_auc_score(is_member, scores))
    return {"auc": auc, "auc_max": max(auc, 1.0 - auc)}


def roc(is_member: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of thresholding ``scores`` (members positive)."""
    fpr, tpr, _ = roc_curve(np.asarray(is_member, bool), scores)
    return fpr, tpr


def baseline_auc(is_member: np.ndarray, correct: np.ndarray) -> float:
    """AUC of the gap attack: predict "member" when the model classifies the input correctly."""
    return membership_auc(is_member, np.asarray(correct, np.float64))["auc"]

