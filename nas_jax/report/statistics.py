"""Statistics of the study over seeds and architectures: the evidence behind the paper's Remarks 1-5
(docs/statistics.md has the design in words).

The paper compares the NAS and manual families by eye on one run per model (§3.2, Remark 1). Here the unit of
analysis is the architecture: its seeds (and inputs) are repeated measures, averaged first, and the families are
compared over per-architecture means (:func:`family_gap`: Welch's interval, clipped to the gap's range, and a
permutation p; a bootstrap interval over 8 + 8 architectures under-covers: under no gap it excluded 0 while
p = 0.099). :func:`mean_ci` gives one architecture's interval over seeds, :func:`min_achievable_p` the floor of
the permutation p (1/3 with 2 + 2), :func:`holm` the adjustment across remarks, :func:`variance_components` and
:func:`architectures_needed` the power analysis, :func:`accuracy_adjusted_gap` the gap at matched clean accuracy
(ANCOVA), :func:`verdict` the rules, and :func:`proportion_difference` two trained models over their inputs
(never their families). Inputs are plain dicts ``{model: [value per seed]}`` and ``{model: 'nas' | 'manual'}``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

FAMILIES = ("nas", "manual")
ALPHA = 0.05  # the significance level of every verdict
MIN_MODELS_ADJUSTED = 3  # architectures per family for the accuracy-adjusted gap (3 parameters over ≥ 6 points)


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


def mean_ci(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float | None] | None = None,
            n_inputs: int | None = None) -> Interval:
    """Mean over seeds and its interval: mean ± t_{(1+c)/2, n−1} · s / √n, intersected with ``bounds`` (the metric's
    range; ``hi`` None for [lo, ∞)), which covers at least as often (a logit-scale interval stretched ASR 0 and 0.01
    to [0.00, 1.00]). One seed: no interval, except a proportion (``bounds`` (0, 1)) over ``n_inputs``: Wilson's."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one finite value.")
    mean = float(x.mean())
    if x.size == 1:
        if bounds == (0.0, 1.0) and n_inputs:
            return Interval(mean, *_wilson(round(mean * n_inputs), n_inputs, confidence), 1)
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    low, high = _clip(mean - half, mean + half, bounds)
    return Interval(mean, float(low), float(high), int(x.size))


def gap_bounds(bounds: tuple[float, float | None] | None) -> tuple[float, float] | None:
    """The range of a difference of two means of a metric with range ``bounds``: [lo − hi, hi − lo] (None for a
    metric unbounded on either side)."""
    return None if bounds is None or bounds[1] is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])


def min_achievable_p(k: int, m: int) -> float:
    """The smallest two-sided p-value a permutation test of family labels can give with ``k`` NAS and ``m``
    manual architectures: 2 / C(k + m, k) (the observed split and its mirror), at most 1. 1.0 when a family
    has fewer than two architectures (no test)."""
    if k < 2 or m < 2:
        return 1.0
    return min(1.0, 2.0 / math.comb(k + m, k))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error across the tests in ``p_values``; NaN kept)."""
    finite = sorted((p, key) for key, p in p_values.items() if np.isfinite(p))
    out, running = {key: math.nan for key in p_values}, 0.0
    for rank, (p, key) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        out[key] = running
    return out


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


def variance_components(values: Mapping[str, Sequence[float]], families: Mapping[str, str]) -> tuple[float, float]:
    """(between-architecture SD within a family, seed SD within an architecture), pooled over both families;
    NaN where the data cannot tell (one architecture per family, or one seed everywhere)."""
    groups = _split(values, families)
    within = [x for xs in groups.values() for x in xs if len(x) > 1]
    seed_var = (sum(((x - x.mean()) ** 2).sum() for x in within) / sum(len(x) - 1 for x in within)
                if within else math.nan)
    seed_sd = math.sqrt(seed_var) if np.isfinite(seed_var) else math.nan
    spread = [m for m in _arch_means(groups).values() if len(m) > 1]
    if not spread:
        return math.nan, seed_sd
    mean_var = sum(((m - m.mean()) ** 2).sum() for m in spread) / sum(len(m) - 1 for m in spread)
    seeds = np.mean([len(x) for xs in groups.values() for x in xs])
    between_var = max(mean_var - (seed_var / seeds if np.isfinite(seed_var) else 0.0), 0.0)
    return math.sqrt(between_var), seed_sd


def architectures_needed(gap: float, between_sd: float, seed_sd: float, seeds: int, *, alpha: float = ALPHA,
                         power: float = 0.8, max_k: int = 500) -> int | None:
    """Architectures per family for a two-sided two-sample t-test of a family gap of size ``gap`` to reach
    ``power`` at ``alpha``, the per-architecture mean varying by ``between_sd``² + ``seed_sd``² / ``seeds``
    (noncentral t); never fewer than the permutation test needs (:func:`min_achievable_p` < ``alpha``). None
    when more than ``max_k`` would be needed or the variance is unknown."""
    var = between_sd ** 2 + (0.0 if math.isnan(seed_sd) else seed_sd ** 2 / seeds)
    if not np.isfinite(var) or gap == 0:
        return None
    if var == 0:
        return next(k for k in range(2, max_k) if min_achievable_p(k, k) < alpha)
    for k in range(2, max_k + 1):
        if min_achievable_p(k, k) >= alpha:
            continue
        df, ncp = 2 * k - 2, abs(gap) / math.sqrt(2 * var / k)
        crit = stats.t.ppf(1 - alpha / 2, df)
        achieved = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
        if not np.isfinite(achieved):  # scipy's noncentral t fails far in the tail: the normal approximation
            achieved = stats.norm.sf(crit - ncp) + stats.norm.cdf(-crit - ncp)
        if achieved >= power:
            return k
    return None


def _arch_means(groups: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Per family, the per-architecture means over seeds (the unit of analysis)."""
    return {fam: np.array([x.mean(axis=0) for x in models]) for fam, models in groups.items()}


def _clip(low: float, high: float, bounds: tuple[float, float | None] | None) -> tuple[float, float]:
    """[low, high] intersected with ``bounds`` (``hi`` None for [lo, ∞); a NaN interval stays NaN)."""
    if bounds is None or math.isnan(low):
        return low, high
    return max(low, bounds[0]), high if bounds[1] is None else min(high, bounds[1])


def family_gap(values: Mapping[str, Sequence[float]], families: Mapping[str, str], *, confidence: float = 0.95,
               n_perm: int = 9999, seed: int = 0, bounds: tuple[float, float] | None = None) -> Interval:
    """NAS − manual gap of the family means of per-architecture means, Welch's t interval over architectures
    (clipped to :func:`gap_bounds` of the metric's ``bounds``) and the permutation p-value."""
    means = _arch_means(_split(values, families))
    nas, manual = means["nas"], means["manual"]
    gap = float(nas.mean() - manual.mean())
    low = high = p_value = math.nan  # Welch's interval and the permutation test need two architectures per family
    if len(nas) > 1 and len(manual) > 1:
        if nas.std() > 0 or manual.std() > 0:
            ci = stats.ttest_ind(nas, manual, equal_var=False).confidence_interval(confidence)
            low, high = _clip(float(ci.low), float(ci.high), gap_bounds(bounds))
        p_value = float(stats.permutation_test((nas, manual), lambda a, b: np.mean(a) - np.mean(b),
                                               permutation_type="independent", alternative="two-sided",
                                               n_resamples=n_perm, random_state=seed).pvalue)
    return Interval(gap, low, high, len(nas) + len(manual), p_value)


def _ancova_gap(metric: np.ndarray, accuracy: np.ndarray, is_nas: np.ndarray) -> float:
    design = np.column_stack([np.ones_like(accuracy), accuracy, is_nas])
    coef, _, rank, _ = np.linalg.lstsq(design, metric, rcond=None)
    return float(coef[2]) if rank == 3 else math.nan  # accuracy collinear with the family: no adjusted gap


def accuracy_adjusted_gap(values: Mapping[str, Sequence[float]], accuracies: Mapping[str, Sequence[float]],
                          families: Mapping[str, str], *, confidence: float = 0.95, n_boot: int = 2000,
                          seed: int = 0, bounds: tuple[float, float] | None = None) -> Interval:
    """The NAS − manual gap at equal clean accuracy: the family coefficient of metric ~ 1 + accuracy + [NAS] over
    per-architecture means (values and accuracies paired per seed), with a bootstrap interval over architectures
    clipped to :func:`gap_bounds`. ValueError with fewer than :data:`MIN_MODELS_ADJUSTED` architectures per family."""
    pairs = {}
    for model, vals in values.items():
        acc = accuracies.get(model)
        if acc is None or len(acc) != len(vals):
            raise ValueError(f"model {model!r}: {len(vals)} metric values but "
                             f"{'no' if acc is None else len(acc)} accuracies; pair them per seed.")
        pairs[model] = [None if v is None or a is None else (v, a) for v, a in zip(vals, acc, strict=True)]
    means = _arch_means(_split(pairs, families))  # (metric, accuracy) per architecture
    if min(len(m) for m in means.values()) < MIN_MODELS_ADJUSTED:
        raise ValueError(f"the accuracy-adjusted gap needs at least {MIN_MODELS_ADJUSTED} architectures per family "
                         f"(have {len(means['nas'])} NAS, {len(means['manual'])} manual).")

    def fit(nas: np.ndarray, manual: np.ndarray) -> float:
        rows = np.concatenate([nas, manual])
        return _ancova_gap(rows[:, 0], rows[:, 1], np.r_[np.ones(len(nas)), np.zeros(len(manual))])

    gap = fit(means["nas"], means["manual"])
    rng = np.random.default_rng(seed)
    boots = np.array([fit(*(m[rng.integers(0, len(m), len(m))] for m in (means["nas"], means["manual"])))
                      for _ in range(n_boot)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = np.nanquantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2])
    low, high = _clip(float(low), float(high), gap_bounds(bounds))
    return Interval(gap, low, high, sum(len(m) for m in means.values()))


def _wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    ci = stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def proportion_difference(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> Interval:
    """p1 − p2 of two independent proportions k1/n1 and k2/n2 (two models' ASR over their own inputs) with
    Newcombe's hybrid score interval (Newcombe 1998, method 10: the two Wilson intervals combined; it stays in
    [−1, 1] and keeps its coverage near 0 and 1, where the Wald interval fails) and the two-sided p of Fisher's
    exact test (:func:`scipy.stats.fisher_exact`)."""
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2 and n1 > 0 and n2 > 0):
        raise ValueError(f"need 0 <= k <= n and n > 0 for both proportions (got {k1}/{n1}, {k2}/{n2}).")
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = _wilson(k1, n1, confidence), _wilson(k2, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    p = float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
    return Interval(d, max(low, -1.0), min(high, 1.0), n1 + n2, p)


def rank_correlation(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> Interval:
    """Spearman's ρ of paired values (e.g. a property at initialisation and the ASR over genotypes) with the
    Fisher-z interval of Bonett and Wright (2000), tanh(atanh ρ ± z·√((1 + ρ²/2)/(n − 3))), which stays inside
    [−1, 1], and the two-sided p of :func:`scipy.stats.spearmanr`. Pairs with a missing value are dropped; fewer
    than 4 pairs give no interval."""
    pairs = np.asarray([(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None
                        and np.isfinite(a) and np.isfinite(b)], np.float64).reshape(-1, 2)
    n = len(pairs)
    if n < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return Interval(math.nan, math.nan, math.nan, n)
    result = stats.spearmanr(pairs[:, 0], pairs[:, 1])
    rho = float(result.statistic)
    if n < 4 or abs(rho) > 1 - 1e-12:  # at the edge of the range atanh diverges: no interval
        return Interval(rho, math.nan, math.nan, n, float(result.pvalue))
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt((1 + rho**2 / 2) / (n - 3))
    z = math.atanh(rho)
    return Interval(rho, math.tanh(z - half), math.tanh(z + half), n, float(result.pvalue))


def percentile_in(value: float, reference: Sequence[float], confidence: float = 0.95) -> Interval:
    """Where ``value`` (e.g. a NAS cell's ASR) falls in a sample ``reference`` (random cells of the space): the
    mid-rank share of the reference below it, (#below + #equal/2)/n, with Wilson's interval over the n reference
    values (the share of the space's cells below ``value``; ``value`` itself taken as measured)."""
    ref = np.asarray([r for r in reference if r is not None and np.isfinite(r)], np.float64)
    if ref.size == 0 or value is None or not np.isfinite(value):
        return Interval(math.nan, math.nan, math.nan, int(ref.size))
    n = ref.size
    share = float((np.sum(ref < value) + 0.5 * np.sum(ref == value)) / n)
    z = float(stats.norm.ppf(0.5 + confidence / 2))  # Wilson's score interval, closed form (share may be k + 1/2)
    centre, half = (share + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(
        share * (1 - share) / n + z * z / (4 * n * n))
    return Interval(share, max(0.0, centre - half), min(1.0, centre + half), int(n))


def verdict(gap: Interval, claim: int, *, n_nas: int, n_manual: int, p_adjusted: float, alpha: float = ALPHA,
            paper_gap: float | None = None) -> str:
    """The verdict on the paper's claim (``claim`` +1: NAS higher, −1: NAS lower) from the family gap: "insufficient
    models (...)" when the permutation test cannot reach ``alpha`` (:func:`min_achievable_p`); "holds" when the Holm
    p is below ``alpha`` and the interval excludes 0 on the paper's side; "does not hold" when it excludes 0 on the
    other side or lies below ``paper_gap``; else "inconclusive (...)", saying what would settle it.
    """
    min_p = min_achievable_p(n_nas, n_manual)
    if min_p >= alpha:
        return (f"insufficient models ({n_nas} NAS, {n_manual} manual; smallest achievable p = {min_p:.3g} ≥ "
                f"{alpha:g}: at least 4 + 4 architectures can reach it)")
    if math.isnan(gap.low):
        return "inconclusive (no interval)"
    low, high = sorted((claim * gap.low, claim * gap.high))
    if low > 0 and p_adjusted < alpha:
        return "holds"
    if high < 0:
        return "does not hold (the interval excludes 0 on the other side)"
    if paper_gap is not None and high < paper_gap:
        return f"does not hold at the paper's size (the interval excludes gaps ≥ {paper_gap:g})"
    return (f"inconclusive (Holm-adjusted p = {p_adjusted:.3g}, interval [{gap.low:.3g}, {gap.high:.3g}]): more "
            "architectures or seeds would narrow it")
