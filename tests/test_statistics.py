"""Study statistics (issue 14, item 4): Student-t intervals, the family gap's bootstrap CI and permutation
p-value, and the accuracy-adjusted gap, each against a hand computation or a synthetic truth."""

import itertools

import numpy as np
import pytest

from nas_jax.report.statistics import accuracy_adjusted_gap, family_gap, mean_ci


def test_mean_ci_is_the_student_t_interval():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2  # t_{0.975, 3}
    assert ci.value == 2.5 and ci.n == 4
    assert (ci.low, ci.high) == pytest.approx((2.5 - half, 2.5 + half))
    one = mean_ci([0.7, None, float("nan")])
    assert one.value == 0.7 and one.n == 1 and np.isnan(one.low)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


def test_permutation_p_value_equals_exact_enumeration():
    """3 NAS and 3 manual models: the p-value is the two-sided exact test over all 20 label assignments."""
    values = {"a": [0.9, 0.8], "b": [0.7], "c": [0.85], "d": [0.6, 0.5], "e": [0.75], "f": [0.4]}
    families = {m: "nas" if m in "abc" else "manual" for m in values}
    result = family_gap(values, families, n_boot=200)
    means = {m: np.mean(v) for m, v in values.items()}
    observed = np.mean([means[m] for m in "abc"]) - np.mean([means[m] for m in "def"])
    null = [np.mean([means[m] for m in nas]) - np.mean([means[m] for m in values if m not in nas])
            for nas in itertools.combinations(values, 3)]
    p_greater, p_less = np.mean(np.array(null) >= observed - 1e-12), np.mean(np.array(null) <= observed + 1e-12)
    assert result.value == pytest.approx(observed)
    assert result.p_value == pytest.approx(min(1.0, 2 * min(p_greater, p_less)))
    assert result.n == 8  # seeds over all models
    single = family_gap({"a": [0.9, 0.8], "d": [0.6, 0.5]}, {"a": "nas", "d": "manual"}, n_boot=200)
    assert single.value == pytest.approx(0.3) and np.isnan(single.p_value)  # no label permutation exists


def test_bootstrap_interval_covers_a_known_gap_and_zero_under_the_null():
    rng = np.random.default_rng(0)
    gap_values, null_values, families = {}, {}, {}
    for i in range(16):
        fam = "nas" if i < 8 else "manual"
        families[f"m{i}"] = fam
        base = 0.5 + rng.normal(0, 0.02)  # a per-model effect
        gap_values[f"m{i}"] = list(base + (0.2 if fam == "nas" else 0.0) + rng.normal(0, 0.03, 3))
        null_values[f"m{i}"] = list(base + rng.normal(0, 0.03, 3))
    gap = family_gap(gap_values, families)
    assert gap.low < 0.2 < gap.high and gap.low > 0 and gap.p_value < 0.01
    null = family_gap(null_values, families)
    assert null.low < 0 < null.high and null.p_value > 0.05


def test_accuracy_adjusted_gap_removes_the_accuracy_confound():
    """metric = 1 − 2·accuracy + 0.1·[NAS]: NAS models are 0.2 more accurate, so the raw gap is −0.3 while the
    gap at matched accuracy is +0.1."""
    rng = np.random.default_rng(1)
    values, accs, families = {}, {}, {}
    for i in range(12):
        fam = "nas" if i < 6 else "manual"
        acc = (0.9 if fam == "nas" else 0.7) + rng.uniform(-0.05, 0.05, 2)
        values[f"m{i}"] = list(1 - 2 * acc + (0.1 if fam == "nas" else 0) + rng.normal(0, 0.005, 2))
        accs[f"m{i}"], families[f"m{i}"] = list(acc), fam
    raw = family_gap(values, families, n_boot=300)
    adjusted = accuracy_adjusted_gap(values, accs, families, n_boot=300)
    acc_gap = np.mean([np.mean(accs[f"m{i}"]) for i in range(6)]) - np.mean([np.mean(accs[f"m{i}"]) for i in range(6, 12)])
    assert raw.value == pytest.approx(0.1 - 2 * acc_gap, abs=0.01) and raw.high < 0
    assert adjusted.value == pytest.approx(0.1, abs=0.01) and adjusted.low < 0.1 < adjusted.high
    with pytest.raises(ValueError, match="pair them per seed"):
        accuracy_adjusted_gap(values, {**accs, "m0": [0.9]}, families)


def test_bad_family_input_is_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="no family for models"):
        family_gap({"a": [1.0], "b": [0.5]}, {"a": "nas"})
    with pytest.raises(ValueError, match="valid"):
        family_gap({"a": [1.0], "b": [0.5]}, {"a": "nas", "b": "handmade"})
    with pytest.raises(ValueError, match="manual family has no model"):
        family_gap({"a": [1.0], "b": [0.5]}, {"a": "nas", "b": "nas"})


def test_remark_verdict_needs_the_whole_interval_on_the_papers_side():
    from nas_jax.report.statistics import Interval
    from nas_jax.report.study import verdict

    assert verdict(Interval(0.4, 0.1, 0.7, 8), +1) == "holds"
    assert verdict(Interval(-0.4, -0.7, -0.1, 8), -1) == "holds"  # the paper says NAS lower: a negative gap
    assert verdict(Interval(-0.97, -2.39, 0.44, 8), -1).startswith("inconclusive")
    assert verdict(Interval(0.5, 0.2, 0.9, 8), -1) == "does not hold"
    assert verdict(Interval(0.5, float("nan"), float("nan"), 1), +1).startswith("inconclusive")
