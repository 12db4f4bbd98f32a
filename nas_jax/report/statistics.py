"""Statistics of the study over seeds and models: the evidence behind the paper's Remarks 1-5.

The paper reports one run per model and compares the NAS and manual families by eye
(§3.2, Remark 1). A reproduction at any scale needs error bars and a test:

- :func:`mean_ci`: a per-model metric over seeds, mean ± the Student-t 95% half-width.
- :func:`family_gap`: the NAS − manual gap of the family means of the per-model means, with a
  hierarchical bootstrap CI (models resampled within each family, then seeds within each
  model) and a two-sided permutation-test p-value (family labels permuted over models,
  :func:`scipy.stats.permutation_test`).
- :func:`accuracy_adjusted_gap`: the gap at matched clean accuracy. At reduced scale NAS
  cells often train to a higher accuracy, and accuracy confounds vulnerability; a linear
  fit ``metric ~ a + b·accuracy + gap·[NAS]`` (ANCOVA, one point per model and seed) gives
  the family gap at equal accuracy, with the same hierarchical bootstrap CI.

All inputs are plain dicts ``{model: [value per seed]}`` and ``{model: 'nas' | 'manual'}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

FAMILIES = ("nas", "manual")


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval: ``low ≤ value ≤ high`` (NaN bounds where n is too small)."""

    value: float
    low: float
    high: float
    n: int
    p_value: float = math.nan

    def format(self, fmt: str = ".3f") -> str:
        if math.isnan(self.low):
            return f"{self.value:{fmt}} (n={self.n})"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}] (n={self.n})"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and the Student-t interval mean ± t_{(1+c)/2, n−1} · s / √n (s: the n−1 standard deviation)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one finite value.")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def _split(values: Mapping[str, Sequence], families: Mapping[str, str]) -> dict[str, list[np.ndarray]]:
    """Per family, one array per model of its finite rows (a value per seed, or (value, accuracy) pairs)."""
    unknown = sorted(set(values) - set(families))
    if unknown:
        raise ValueError(f"no family for models {unknown}; give each model 'nas' or 'manual'.")
    groups: dict[str, list[np.ndarray]] = {f: [] for f in FAMILIES}
    for model, vals in values.items():
        fam = families[model]
        if fam not in groups:
            raise ValueError(f"model {model!r} has family {fam!r}; valid: {FAMILIES}.")
        x = np.asarray([v for v in vals if v is not None and np.all(np.isfinite(np.asarray(v, np.float64)))],
                       np.float64)
        if x.size:
            groups[fam].append(x)
    for fam in FAMILIES:
        if not groups[fam]:
            raise ValueError(f"the {fam} family has no model with a value; the gap needs both families.")
    return groups


def _gap_of(groups: dict[str, list[np.ndarray]]) -> float:
    return float(np.mean([x.mean() for x in groups["nas"]]) - np.mean([x.mean() for x in groups["manual"]]))


def _resample(groups: dict[str, list[np.ndarray]], rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Models with replacement within each family, then seeds with replacement within each model."""
    out = {}
    for fam, models in groups.items():
        picks = rng.integers(0, len(models), len(models))
        out[fam] = [models[i][rng.integers(0, len(models[i]), len(models[i]))] for i in picks]
    return out


def family_gap(values: Mapping[str, Sequence[float]], families: Mapping[str, str], *, confidence: float = 0.95,
               n_boot: int = 2000, n_perm: int = 9999, seed: int = 0) -> Interval:
    """NAS − manual gap of family means (of per-model means over seeds), bootstrap CI and permutation p-value."""
    groups = _split(values, families)
    rng = np.random.default_rng(seed)
    gap = _gap_of(groups)
    boots = np.array([_gap_of(_resample(groups, rng)) for _ in range(n_boot)])
    low, high = np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2])
    if np.ptp(boots) == 0:  # one value per family (one model, one seed): nothing to resample, no interval
        low = high = math.nan
    nas = np.array([x.mean() for x in groups["nas"]])
    manual = np.array([x.mean() for x in groups["manual"]])
    p_value = math.nan  # a permutation of family labels needs two models in each family
    if len(nas) > 1 and len(manual) > 1:
        p_value = float(stats.permutation_test((nas, manual), lambda a, b: np.mean(a) - np.mean(b),
                                               permutation_type="independent", alternative="two-sided",
                                               n_resamples=n_perm, random_state=seed).pvalue)
    n = sum(len(x) for xs in groups.values() for x in xs)
    return Interval(gap, float(low), float(high), n, p_value)


def _ancova_gap(metric: np.ndarray, accuracy: np.ndarray, is_nas: np.ndarray) -> float:
    design = np.column_stack([np.ones_like(accuracy), accuracy, is_nas])
    coef, _, rank, _ = np.linalg.lstsq(design, metric, rcond=None)
    return float(coef[2]) if rank == 3 else math.nan  # accuracy collinear with the family: no adjusted gap


def accuracy_adjusted_gap(values: Mapping[str, Sequence[float]], accuracies: Mapping[str, Sequence[float]],
                          families: Mapping[str, str], *, confidence: float = 0.95, n_boot: int = 2000,
                          seed: int = 0) -> Interval:
    """The NAS − manual gap at equal clean accuracy: the family coefficient of metric ~ 1 + accuracy + [NAS].

    ``values[m]`` and ``accuracies[m]`` are paired per seed. The CI resamples models within
    families and seeds within models, as :func:`family_gap` does.
    """
    pairs = {}
    for model, vals in values.items():
        acc = accuracies.get(model)
        if acc is None or len(acc) != len(vals):
            raise ValueError(f"model {model!r}: {len(vals)} metric values but "
                             f"{'no' if acc is None else len(acc)} accuracies; pair them per seed.")
        pairs[model] = [None if v is None or a is None else (v, a) for v, a in zip(vals, acc, strict=True)]
    groups = _split(pairs, families)  # (value, accuracy) rows per model

    def fit(sample: dict[str, list[np.ndarray]]) -> float:
        rows = np.concatenate([p for ps in sample.values() for p in ps])
        nas = np.concatenate([np.full(len(p), float(fam == "nas")) for fam, ps in sample.items() for p in ps])
        return _ancova_gap(rows[:, 0], rows[:, 1], nas)

    rng = np.random.default_rng(seed)
    gap = fit(groups)
    boots = [fit(_resample(groups, rng)) for _ in range(n_boot)]
    low, high = np.nanquantile(np.asarray(boots), [0.5 - confidence / 2, 0.5 + confidence / 2])
    n = sum(len(p) for ps in groups.values() for p in ps)
    return Interval(gap, float(low), float(high), n)
