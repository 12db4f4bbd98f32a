"""Study statistics: Student-t intervals, the family gap's bootstrap CI and permutation
p-value, and the accuracy-adjusted gap, each against a hand computation or a synthetic truth."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scipy import stats

from nas_jax.report import statistics
from nas_jax.report.statistics import accuracy_adjusted_gap, family_gap, mean_ci
from nas_jax.tasks import study_metrics, study_sections


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
    result = family_gap(values, families)
    means = {m: np.mean(v) for m, v in values.items()}
    observed = np.mean([means[m] for m in "abc"]) - np.mean([means[m] for m in "def"])
    null = [np.mean([means[m] for m in nas]) - np.mean([means[m] for m in values if m not in nas])
            for nas in itertools.combinations(values, 3)]
    p_greater, p_less = np.mean(np.array(null) >= observed - 1e-12), np.mean(np.array(null) <= observed + 1e-12)
    assert result.value == pytest.approx(observed)
    assert result.p_value == pytest.approx(min(1.0, 2 * min(p_greater, p_less)))
    assert result.n == 6  # architectures, the unit of analysis
    single = family_gap({"a": [0.9, 0.8], "d": [0.6, 0.5]}, {"a": "nas", "d": "manual"})
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
    raw = family_gap(values, families)
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


def test_verdict_rules_need_the_power_the_p_value_and_the_interval():
    from nas_jax.report.statistics import Interval, min_achievable_p, verdict

    assert min_achievable_p(2, 2) == pytest.approx(1 / 3) and min_achievable_p(4, 4) == pytest.approx(2 / 70)
    assert min_achievable_p(1, 5) == 1.0
    rule = dict(n_nas=6, n_manual=6, p_adjusted=0.01)
    assert verdict(Interval(0.4, 0.1, 0.7, 8), +1, **rule) == "holds"
    assert verdict(Interval(-0.4, -0.7, -0.1, 8), -1, **rule) == "holds"  # the paper says NAS lower: a negative gap
    assert verdict(Interval(0.4, 0.1, 0.7, 8), +1, **{**rule, "p_adjusted": 0.2}).startswith("inconclusive")
    assert verdict(Interval(-0.97, -2.39, 0.44, 8), -1, **rule).startswith("inconclusive")
    assert verdict(Interval(0.5, 0.2, 0.9, 8), -1, **rule).startswith("does not hold (the interval excludes 0")
    assert verdict(Interval(0.01, -0.02, 0.04, 8), +1, **rule, paper_gap=0.1).startswith("does not hold at the paper")
    assert verdict(Interval(0.5, float("nan"), float("nan"), 1), +1, **rule).startswith("inconclusive")
    # whatever the data, 2 + 2 architectures cannot reach p < 0.05
    small = verdict(Interval(0.4, 0.3, 0.5, 4), +1, n_nas=2, n_manual=2, p_adjusted=0.0)
    assert small.startswith("insufficient models (2 NAS, 2 manual; smallest achievable p = 0.333")


def test_holm_adjusts_step_down_and_keeps_nan():
    from nas_jax.report.statistics import holm

    out = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")})
    assert out["a"] == pytest.approx(0.03) and out["c"] == pytest.approx(0.06) and out["b"] == pytest.approx(0.06)
    assert np.isnan(out["d"])


def test_bounded_intervals_stay_inside_the_range():
    from nas_jax.report.statistics import gap_bounds

    two = mean_ci([0.97, 1.0], bounds=(0.0, 1.0))  # the Student-t interval would reach 1.005 and beyond
    assert 0.0 <= two.low <= two.value <= two.high <= 1.0
    one = mean_ci([0.9], bounds=(0.0, 1.0), n_inputs=100)  # one seed: the Wilson interval over inputs
    assert one.low == pytest.approx(0.8256, abs=1e-3) and one.high == pytest.approx(0.9448, abs=1e-3)
    positive = mean_ci([0.05, 0.9, 0.4], bounds=(0.0, None))
    assert positive.low == 0.0 < positive.value  # the t interval reaches below 0: truncated at the bound
    near = mean_ci([0.0, 0.01], bounds=(0.0, 1.0))  # at a bound, the interval stays near the data
    assert near.low == 0.0 and near.high == pytest.approx(0.005 + 12.7062 * np.std([0, 0.01], ddof=1) / np.sqrt(2), rel=1e-3)
    values = {"a": [1.0, 0.9], "b": [0.95], "c": [1.0], "d": [0.0], "e": [0.1, 0.0], "f": [0.05]}
    fam = {m: "nas" if m in "abc" else "manual" for m in values}
    gap = family_gap(values, fam, bounds=(0.0, 1.0))
    assert -1.0 <= gap.low <= gap.value <= gap.high <= 1.0 and gap_bounds((0.0, 1.0)) == (-1.0, 1.0)


def _synthetic_study(tmp_path, n_nas: int, n_manual: int, gap: float, seeds=(0, 1, 2), seed: int = 0):
    """pgd and train records of ``n_nas`` + ``n_manual`` zoo architectures: ASR = base + gap·[NAS] + noise."""
    import json

    nas = ["darts", "snas", "enas", "pdarts", "pc_darts", "amoebanet"][:n_nas]
    manual = ["resnet", "vgg", "densenet", "dla", "bit", "wideresnet"][:n_manual]
    rng = np.random.default_rng(seed)
    lines = []
    for model in nas + manual:
        family = "nas" if model in nas else "manual"
        base = 0.5 + rng.normal(0, 0.03)  # each architecture its own level
        for s in seeds:
            asr = float(np.clip(base + (gap if family == "nas" else 0.0) + rng.normal(0, 0.02), 0, 1))
            common = {"model": model, "seed": s, "dataset": "digits", "preset": "quick", "setting": {"family": family}}
            lines.append({**common, "task": "pgd", "n": 100, "metrics": {
                "clean_accuracy": 0.95, "asr_most_likely": asr, "asr_least_likely": asr / 2}})
            lines.append({**common, "task": "train", "n": 360, "metrics": {"test_accuracy": float(0.9 + rng.normal(0, 0.01))}})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    from nas_jax.report.study import write_report

    write_report(tmp_path, study_metrics(), command="test", sections=study_sections())
    return json.loads((tmp_path / "report.json").read_text())


def _entry(report, key):
    return next(e for e in report["metrics"] if e["metric"] == key)


def test_a_real_gap_with_six_and_six_architectures_holds(tmp_path):
    report = _synthetic_study(tmp_path, 6, 6, gap=0.2)
    pgd = _entry(report, "pgd_m")
    assert pgd["verdict"] == "holds" and pgd["p"] < 0.05 and pgd["min_achievable_p"] < 0.05
    assert pgd["n_models"] == {"nas": 6, "manual": 6} and pgd["n_seeds"] == 3
    assert 0 < pgd["ci"][0] <= pgd["estimate"] <= pgd["ci"][1] <= 1
    assert pgd["power"]["gap_source"] == "artifact" and pgd["power"]["architectures_per_family"]["3"] >= 4
    assert report["header"]["seeds"] == [0, 1, 2] and report["header"]["inputs_per_attack"] == {"pgd": [100]}
    text = (tmp_path / "report.md").read_text()
    assert "6 NAS (darts" in text and "inputs per attack: pgd 100" in text and "written" in text


def test_architectures_needed_matches_the_textbook_sample_size():
    """Two-sample t-test, two-sided α = 0.05, power 0.8: 17 per group at d = 1, 64 at d = 0.5 (Cohen's tables);
    seeds shrink only the seed part of the variance; never fewer than the 4 the permutation test needs."""
    from nas_jax.report.statistics import architectures_needed, variance_components

    assert architectures_needed(1.0, 1.0, float("nan"), 1) == 17
    assert architectures_needed(0.5, 1.0, float("nan"), 1) == 64
    assert architectures_needed(1.0, 0.0, 1.0, 1) == 17 and architectures_needed(1.0, 0.0, 1.0, 4) == 6
    assert architectures_needed(0.1, 0.0, 0.0, 3) == 4
    values = {"a": [1.0, 3.0], "b": [5.0, 7.0], "c": [2.0, 4.0], "d": [6.0, 8.0]}  # seed SD √2, means 2/6 and 3/7
    between, seed_sd = variance_components(values, {"a": "nas", "b": "nas", "c": "manual", "d": "manual"})
    assert seed_sd == pytest.approx(np.sqrt(2)) and between == pytest.approx(np.sqrt(8 - 2 / 2))


def test_the_same_gap_with_two_and_two_is_insufficient(tmp_path):
    report = _synthetic_study(tmp_path, 2, 2, gap=0.2)
    pgd = _entry(report, "pgd_m")
    assert pgd["verdict"].startswith("insufficient models (2 NAS, 2 manual")
    assert pgd["min_achievable_p"] == pytest.approx(1 / 3)
    assert next(r for r in report["remarks"] if r["remark"] == 1)["verdict"].startswith("insufficient")


def test_no_gap_never_holds(tmp_path):
    for seed in range(3):
        report = _synthetic_study(tmp_path, 6, 6, gap=0.0, seed=seed)
        assert _entry(report, "pgd_m")["verdict"] != "holds"


def test_the_gap_figure_uses_the_tables_sign_and_the_legends_colours(tmp_path, monkeypatch):
    """The paper claims ACE lower for NAS: a negative gap is drawn left of 0, as the table prints it, in the
    colour the legend gives its verdict."""
    from nas_jax.report import plots
    from nas_jax.report.statistics import Interval
    from nas_jax.report.study import VERDICT_COLORS, gap_figure

    captured = {}
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: captured.setdefault("fig", fig) and save(fig, path))
    ace = next(m for m in study_metrics() if m.key == "ace")
    entry = {"metric": ace, "gap": Interval(-0.3, -0.5, -0.1, 12), "verdict": "holds"}
    assert gap_figure({"metrics": [entry]}, tmp_path / "gaps.png").exists()
    ax = captured["fig"].axes[0]
    line, point = ax.lines[:2]
    assert list(line.get_xdata()) == [-0.5, -0.1] and list(point.get_xdata()) == [-0.3]
    legend = {t.get_text(): h.get_color() for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles,
                                                           strict=True)}
    assert point.get_color() == legend["holds"] == VERDICT_COLORS["holds"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["darts", "snas", "enas", "resnet", "vgg", "dla"]), st.integers(0, 2),
                          st.floats(0, 1), st.floats(-1, 1)), min_size=1, max_size=24))
def test_every_interval_of_report_json_lies_inside_its_range(rows):
    """Random records (any models, seeds, ASRs in [0, 1], CADs in [−1, 1]): every estimate and interval of
    report.json lies inside the range it states."""
    from nas_jax.report.study import analyse, report_json

    records = []
    for model, seed, asr, cad in rows:
        common = {"model": model, "seed": seed, "dataset": "digits", "setting": {"family": None}}
        records.append({**common, "task": "pgd", "n": 50, "metrics": {"clean_accuracy": 0.9, "asr_most_likely": asr,
                                                                      "asr_least_likely": asr}})
        records.append({**common, "task": "poison", "n": 50, "setting": {"fraction": 0.4}, "metrics": {"cad": cad}})
    report = report_json(analyse(records, study_metrics()), {})
    for entry in report["metrics"] + report["per_model"] + report["pairs"]:
        if entry["range"] is None:
            continue
        lo, hi = entry["range"]
        for v in [entry["estimate"], *entry["ci"]]:
            assert v is None or lo - 1e-12 <= v <= hi + 1e-12, entry


def test_a_difference_of_two_proportions_is_newcombes_interval_and_fishers_p():
    """Newcombe (1998), Table II, example (a): 56/70 − 48/80 = 0.2, hybrid score interval [0.0524, 0.3339]; the
    interval stays inside [−1, 1] at the extremes; Fisher's p against scipy's 2x2 table."""
    from scipy import stats

    from nas_jax.report.statistics import proportion_difference

    d = proportion_difference(56, 70, 48, 80)
    assert d.value == pytest.approx(0.2) and d.low == pytest.approx(0.0524, abs=1e-4)
    assert d.high == pytest.approx(0.3339, abs=1e-4)
    assert d.p_value == pytest.approx(stats.fisher_exact([[56, 14], [48, 32]]).pvalue)
    top = proportion_difference(100, 100, 0, 100)
    assert top.high == 1.0 and 0.9 < top.low < 1.0
    with pytest.raises(ValueError, match="0 <= k <= n"):
        proportion_difference(5, 4, 1, 10)


def test_one_seed_reports_each_pair_over_inputs_and_a_wilson_interval_per_model(tmp_path):
    """One seed supports only statements about the trained networks: every NAS × manual pair over inputs with
    Newcombe's interval, and each model's ASR with the Wilson interval over its inputs; the family gap stays
    insufficient."""
    report = _synthetic_study(tmp_path, 2, 2, gap=0.3, seeds=(0,))
    pairs = [p for p in report["pairs"] if p["metric"] == "pgd_m"]
    assert {(p["nas"], p["manual"]) for p in pairs} == {(a, b) for a in ("darts", "snas") for b in ("resnet", "vgg")}
    for p in pairs:
        assert p["seed"] == 0 and p["n_inputs"] == {"nas": 100, "manual": 100}
        assert p["ci"][0] > 0 and p["p"] < 0.05 and p["finding"] == "in the paper's direction"
    darts = next(e for e in report["per_model"] if e["metric"] == "pgd_m" and e["model"] == "darts")
    assert darts["n_seeds"] == 1 and 0 < darts["ci"][0] < darts["estimate"] < darts["ci"][1] < 1
    assert _entry(report, "pgd_m")["verdict"].startswith("insufficient")
    assert "Model pairs over inputs" in (tmp_path / "report.md").read_text()


def test_rank_correlation_is_spearmans_rho_with_an_interval_that_covers_and_stays_in_range():
    """ρ and p as scipy gives them; the Fisher-z interval covers the population Spearman ρ of a bivariate normal,
    (6/π)·asin(r/2), about 95% of the time; it never leaves [−1, 1]."""
    rng = np.random.default_rng(0)
    r, n = 0.6, 60
    truth = 6 / np.pi * np.arcsin(r / 2)
    cov = [[1, r], [r, 1]]
    covered = 0
    for _ in range(400):
        x, y = rng.multivariate_normal([0, 0], cov, n).T
        ci = statistics.rank_correlation(x, y)
        want = stats.spearmanr(x, y)
        assert ci.value == pytest.approx(want.statistic) and ci.p_value == pytest.approx(want.pvalue)
        assert -1 <= ci.low <= ci.value <= ci.high <= 1
        covered += ci.low <= truth <= ci.high
    assert 0.91 <= covered / 400 <= 0.985
    perfect = statistics.rank_correlation([1, 2, 3, 4, 5], [2, 4, 8, 16, 32])
    assert perfect.value == pytest.approx(1.0) and np.isnan(perfect.low)  # no interval at the edge of the range
    assert statistics.rank_correlation([1, None, 3, 4, 5, 6], [3, 1, None, 2, 5, 4]).n == 4  # missing pairs dropped


def test_percentile_in_a_reference_is_the_mid_rank_share_with_wilsons_interval():
    ref = np.arange(100.0)
    ci = statistics.percentile_in(49.5, ref)
    want = stats.binomtest(50, 100).proportion_ci(0.95, method="wilson")
    assert ci.value == 0.5 and ci.n == 100
    assert (ci.low, ci.high) == (pytest.approx(want.low), pytest.approx(want.high))
    assert statistics.percentile_in(10.0, ref).value == pytest.approx(10.5 / 100)  # a tie counts half
    top = statistics.percentile_in(1e9, ref)
    assert top.value == 1.0 and top.high == 1.0 and 0.95 < top.low < 1.0
    assert np.isnan(statistics.percentile_in(float("nan"), ref).value)
