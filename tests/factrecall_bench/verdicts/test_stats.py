"""Tests of factrecall_bench.verdicts.stats against textbook worked examples, scipy, and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from factrecall_bench.verdicts import stats
from factrecall_bench.verdicts.stats import OneSampleResult

# ---------------------------------------------------------------------------------------------
# Wilson


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
# (score interval without continuity correction).
NEWCOMBE_WILSON = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("successes", "n", "low", "high"), NEWCOMBE_WILSON)
def test_wilson_matches_newcombe_worked_examples(
    successes: int, n: int, low: float, high: float
) -> None:
    computed_low, computed_high = stats.wilson_interval(successes, n)
    assert computed_low == pytest.approx(low, abs=5e-5)
    assert computed_high == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize("n", [1, 3, 6, 7, 10, 12, 100, 1199, 3000])
def test_wilson_bounds_hold_the_rate_at_none_and_all(n: int) -> None:
    """At 0 or n successes one bound is the rate itself, not a rounding error past it (a report
    plot once failed on a bound 5.6e-17 above a rate of 0)."""
    assert stats.wilson_interval(0, n)[0] == 0.0
    assert stats.wilson_interval(n, n)[1] == 1.0
    for successes in range(0, n + 1, max(1, n // 50)):
        low, high = stats.wilson_interval(successes, n)
        assert low <= successes / n <= high


def test_wilson_with_no_data_is_uninformative() -> None:
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "n", "confidence"), [(5, 3, 0.95), (-1, 3, 0.95),
                                                             (1, 3, 1.0), (1, 3, 0.0)])
def test_wilson_rejects_impossible_input(successes: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        stats.wilson_interval(successes, n, confidence)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), data=st.data(), threshold=st.floats(0.05, 0.95))
def test_wilson_score_p_inverts_the_wilson_interval(
    n: int, data: st.DataObject, threshold: float
) -> None:
    successes = data.draw(st.integers(0, n))
    # One-sided level 0.05 <-> the lower bound of the two-sided 90% interval.
    low, _ = stats.wilson_interval(successes, n, confidence=0.90)
    p_value = stats.wilson_score_p(successes, n, threshold, "greater")
    if abs(low - threshold) > 1e-9:
        assert (p_value < 0.05) == (low > threshold)


# ---------------------------------------------------------------------------------------------
# McNemar


def _paired(a_only: int, b_only: int, both: int, neither: int) -> tuple[list[int], list[int]]:
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return a, b


def test_mcnemar_exact_hand_computed_example() -> None:
    # 2 vs 9 discordant pairs: p = 2 * P(X <= 2 | n = 11, 1/2) = 2 * (1 + 11 + 55) / 2048.
    a, b = _paired(a_only=2, b_only=9, both=30, neither=5)
    result = stats.mcnemar_exact(a, b)
    assert (result.a_only, result.b_only, result.n_pairs) == (2, 9, 46)
    assert result.p_value == pytest.approx(134 / 2048, rel=1e-12)
    assert result.effect == pytest.approx((32 - 39) / 46)
    less = stats.mcnemar_exact(a, b, "less")
    assert less.p_value == pytest.approx(67 / 2048, rel=1e-12)
    assert stats.mcnemar_exact(a, b, "greater").p_value == pytest.approx(1 - 12 / 2048)


def test_mcnemar_close_to_chi_square_on_agresti_approval_table() -> None:
    # Agresti, Categorical Data Analysis: approval of the Prime Minister in two surveys,
    # 794 / 150 / 86 / 570. McNemar's chi-square with continuity correction is 16.82.
    a, b = _paired(a_only=150, b_only=86, both=794, neither=570)
    result = stats.mcnemar_exact(a, b)
    chi_square = (abs(150 - 86) - 1) ** 2 / (150 + 86)
    assert chi_square == pytest.approx(16.82, abs=0.01)
    assert result.p_value == pytest.approx(scipy_stats.chi2.sf(chi_square, 1), rel=0.3)
    assert result.p_value == pytest.approx(scipy_stats.binomtest(86, 236).pvalue)


def test_mcnemar_without_discordant_pairs_has_p_one_and_cannot_reach_any_level() -> None:
    result = stats.mcnemar_exact([1, 0, 1, 1], [1, 0, 1, 1], "greater")
    assert result.p_value == 1.0
    assert result.effect == 0.0
    assert result.min_attainable_p == 1.0
    assert not result.level_reachable(0.05)


def test_mcnemar_min_attainable_p_counts_discordant_pairs() -> None:
    a, b = _paired(a_only=5, b_only=0, both=10, neither=10)
    assert stats.mcnemar_exact(a, b, "greater").min_attainable_p == pytest.approx(1 / 32)
    assert stats.mcnemar_exact(a, b, "two-sided").min_attainable_p == pytest.approx(1 / 16)
    assert stats.mcnemar_exact(a, b, "greater").level_reachable(0.05)
    assert not stats.mcnemar_exact(a, b, "two-sided").level_reachable(0.05)


@pytest.mark.parametrize(("a", "b"), [([1, 0], [1]), ([], []), ([2, 0], [1, 0])])
def test_mcnemar_rejects_bad_vectors(a: list[int], b: list[int]) -> None:
    with pytest.raises(ValueError):
        stats.mcnemar_exact(a, b)


# ---------------------------------------------------------------------------------------------
# Paired bootstrap


def test_paired_bootstrap_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random(300) < 0.7).astype(int)
    b = (rng.random(300) < 0.6).astype(int)
    diff, low, high = stats.paired_bootstrap_diff(a, b, 0.95, n_resamples=20_000, seed=1)
    reference = scipy_stats.bootstrap(
        (a - b,), np.mean, confidence_level=0.95, n_resamples=20_000, method="percentile",
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert low == pytest.approx(reference.low, abs=0.006)
    assert high == pytest.approx(reference.high, abs=0.006)


def test_paired_bootstrap_is_seeded_and_degenerate_without_spread() -> None:
    a, b = [1, 0, 1, 1, 0] * 20, [1, 1, 0, 1, 0] * 20
    assert stats.paired_bootstrap_diff(a, b, seed=5) == stats.paired_bootstrap_diff(a, b, seed=5)
    assert stats.paired_bootstrap_diff([1, 1, 0], [0, 0, -1]) == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Two-sample tests across seeds


def test_mann_whitney_three_vs_three_cannot_reach_five_percent() -> None:
    one_sided = stats.mann_whitney([0.9, 0.8, 0.85], [0.1, 0.2, 0.15], "greater")
    assert one_sided.p_value == pytest.approx(0.05)
    assert one_sided.min_attainable_p == pytest.approx(0.05)
    assert not one_sided.level_reachable(0.05)
    assert one_sided.level_reachable(0.06)
    two_sided = stats.mann_whitney([0.9, 0.8, 0.85], [0.1, 0.2, 0.15])
    assert two_sided.p_value == pytest.approx(0.1)
    assert stats.mann_whitney_min_p(3, 3, "two-sided") == pytest.approx(0.1)
    assert stats.mann_whitney_min_p(5, 5, "greater") == pytest.approx(1 / 252)


def _brute_force_u_p(x: list[float], y: list[float]) -> float:
    """One-sided ("greater") p of U by enumerating every split of the pooled sample."""
    pooled = x + y
    ranks = scipy_stats.rankdata(pooled)
    observed = sum(ranks[: len(x)])
    splits = list(itertools.combinations(range(len(pooled)), len(x)))
    at_least = sum(1 for split in splits if sum(ranks[i] for i in split) >= observed - 1e-9)
    return at_least / len(splits)


@pytest.mark.parametrize(("x", "y"), [
    ([0.7, 0.7, 0.8], [0.6, 0.7, 0.6]),
    ([1.0, 2.0, 2.0, 3.0], [2.0, 1.0, 1.0, 0.0, 1.0]),
    ([0.5, 0.5, 0.6, 0.6, 0.6], [0.5, 0.4, 0.4, 0.5, 0.6]),
])
def test_mann_whitney_with_ties_is_exact(x: list[float], y: list[float]) -> None:
    result = stats.mann_whitney(x, y, "greater")
    assert result.p_value == pytest.approx(_brute_force_u_p(x, y), rel=1e-9)
    exact = scipy_stats.mannwhitneyu(x, y, alternative="greater",
                                     method=scipy_stats.PermutationMethod(n_resamples=10**5))
    assert result.p_value == pytest.approx(exact.pvalue, rel=1e-9)
    assert result.statistic == pytest.approx(exact.statistic)


def test_mann_whitney_with_ties_not_fooled_by_normal_approximation() -> None:
    x, y = [0.9, 0.9, 0.8], [0.1, 0.2, 0.2]
    approximate = scipy_stats.mannwhitneyu(x, y, alternative="greater").pvalue
    assert approximate < 0.05  # scipy's default: below what 3 vs 3 can ever give
    assert stats.mann_whitney(x, y, "greater").p_value == pytest.approx(0.05)


def test_mann_whitney_large_samples_with_ties_match_scipy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 30).tolist(), rng.integers(1, 6, 40).tolist()
    for alternative in ("two-sided", "less", "greater"):
        ours = stats.mann_whitney(x, y, alternative)
        theirs = scipy_stats.mannwhitneyu(x, y, alternative=alternative)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-12)


def test_mann_whitney_all_tied_is_no_evidence() -> None:
    result = stats.mann_whitney([0.5] * 4, [0.5] * 4, "greater")
    assert result.p_value == 1.0


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_scipy(alternative: str) -> None:
    x, y = [0.71, 0.74, 0.69, 0.73], [0.62, 0.70, 0.55]
    ours = stats.welch_t(x, y, alternative)  # type: ignore[arg-type]
    theirs = scipy_stats.ttest_ind(x, y, equal_var=False, alternative=alternative)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-12)
    assert ours.statistic == pytest.approx(theirs.statistic)
    assert ours.df == pytest.approx(theirs.df)
    assert ours.level_reachable(0.05)


def test_welch_degenerate_cases() -> None:
    too_few = stats.welch_t([0.7], [0.1, 0.2])
    assert math.isnan(too_few.p_value) and not too_few.level_reachable(0.05)
    constant_different = stats.welch_t([0.7, 0.7], [0.1, 0.1], "greater")
    assert math.isnan(constant_different.p_value)
    assert not constant_different.level_reachable(0.05)
    assert "zero variance" in constant_different.note
    identical = stats.welch_t([0.5, 0.5, 0.5], [0.5, 0.5])
    assert identical.p_value == 1.0 and identical.statistic == 0.0


def test_mean_diff_interval_matches_scipy_welch_interval() -> None:
    x, y = [0.71, 0.74, 0.69, 0.73], [0.62, 0.70, 0.55]
    diff, low, high = stats.mean_diff_interval(x, y, 0.9)
    reference = scipy_stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.9)
    assert diff == pytest.approx(np.mean(x) - np.mean(y))
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-10)
    assert stats.mean_diff_interval([0.5, 0.5], [0.2, 0.2]) == pytest.approx((0.3, 0.3, 0.3))
    assert all(math.isnan(v) for v in stats.mean_diff_interval([0.5], [0.2, 0.3])[1:])


# ---------------------------------------------------------------------------------------------
# One-sample t over seeds


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_one_sample_t_matches_scipy_without_a_floor(alternative: str) -> None:
    values = [0.2433, 0.25, 0.2067]
    ours = stats.one_sample_t(values, 0.2, alternative)  # type: ignore[arg-type]
    theirs = scipy_stats.ttest_1samp(values, 0.2, alternative=alternative)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-12)
    two_sided = scipy_stats.ttest_1samp(values, 0.2).confidence_interval(0.9)
    assert ours.interval(0.9) == pytest.approx(tuple(two_sided), rel=1e-12)
    assert ours.level_reachable(1e-9) and not ours.sd_floored


def test_one_sample_t_lower_bound_clears_the_threshold_exactly_when_p_is_below_alpha() -> None:
    values = [0.2433, 0.25, 0.2067]
    result = stats.one_sample_t(values, 0.2, "greater")
    assert result.lower_bound(0.95) == pytest.approx(0.194, abs=5e-4)
    for threshold in (0.15, 0.19, 0.194, 0.195, 0.2):
        moved = stats.one_sample_t(values, threshold, "greater")
        assert (moved.p_value < 0.05) == (result.lower_bound(0.95) > threshold)


def test_one_sample_t_bounds_default_to_95_percent_one_sided() -> None:
    values = [0.2433, 0.25, 0.2067]
    result = stats.one_sample_t(values, 0.2, "greater")
    half = scipy_stats.t.ppf(0.95, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert result.upper_bound() == pytest.approx(np.mean(values) + half, rel=1e-12)
    assert result.lower_bound() == pytest.approx(np.mean(values) - half, rel=1e-12)


def test_one_sample_t_floor_keeps_identical_seeds_from_an_infinitely_tight_bound() -> None:
    floor = math.sqrt(0.95 * 0.05 / 600)
    result = stats.one_sample_t([1.0, 1.0, 1.0], 0.95, "greater", sd_floor=floor, bounds=(0, 1))
    assert result.sd_floored and result.observed_sd == 0.0
    assert result.standard_error == pytest.approx(floor / math.sqrt(3))
    assert result.p_value == pytest.approx(scipy_stats.t.sf(0.05 / (floor / math.sqrt(3)), 2))
    # All seeds at the bound is the most extreme sample: its p is the smallest attainable.
    assert result.min_attainable_p == pytest.approx(result.p_value)
    few = stats.one_sample_t([1.0] * 3, 0.9, "greater", sd_floor=math.sqrt(0.09 / 10),
                             bounds=(0, 1))
    assert not few.level_reachable(0.05) and few.min_attainable_p > 0.05


def test_one_sample_t_degenerate_cases() -> None:
    one = stats.one_sample_t([0.7], 0.5)
    assert math.isnan(one.p_value) and not one.level_reachable(0.05) and "2+" in one.note
    assert math.isnan(one.lower_bound()) and all(math.isnan(v) for v in one.interval())
    flat = stats.one_sample_t([0.7, 0.7], 0.5, "greater")
    assert math.isnan(flat.p_value) and "zero spread" in flat.note
    with pytest.raises(ValueError):
        stats.one_sample_t([0.7, 0.8], 0.5, sd_floor=-1.0)


# ---------------------------------------------------------------------------------------------
# Multiple comparisons


def test_holm_and_bh_worked_example() -> None:
    p_values = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, max(0.04*1, 0.06).
    assert stats.holm(p_values) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: 0.005*4/1, 0.01*4/2, 0.03*4/3, 0.04*4/4, then running minimum from the top.
    assert stats.benjamini_hochberg(p_values) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.holm([]) == [] and stats.benjamini_hochberg([]) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_adjusted_p_values_are_monotone_capped_and_not_smaller(p_values: list[float]) -> None:
    for adjust in (stats.holm, stats.benjamini_hochberg):
        adjusted = adjust(p_values)
        assert all(0.0 <= q <= 1.0 for q in adjusted)
        assert all(q >= p - 1e-12 for p, q in zip(p_values, adjusted, strict=True))
        order = np.argsort(p_values, kind="stable")
        in_order = [adjusted[i] for i in order]
        assert all(later >= earlier - 1e-12 for earlier, later in itertools.pairwise(in_order))
    assert all(h >= b - 1e-12 for h, b in zip(stats.holm(p_values),
                                             stats.benjamini_hochberg(p_values), strict=True))


def test_corrections_reject_nan() -> None:
    with pytest.raises(ValueError):
        stats.holm([0.1, math.nan])


def test_welch_with_one_constant_group_is_exact_and_silent() -> None:
    """Three seeds at the same recall against three that vary: no scipy precision warning, and
    the same answer as the formula (the constant group adds no variance)."""
    import warnings

    constant, varied = [0.998333] * 3, [0.43, 0.38, 0.40]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = stats.welch_t(constant, varied, "greater")
    mean_diff = 0.998333 - np.mean(varied)
    standard_error = np.std(varied, ddof=1) / np.sqrt(3)
    assert ours.statistic == pytest.approx(mean_diff / standard_error)
    assert ours.df == pytest.approx(2.0)


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Behaviour of verdicts/stats.py that mutation testing (docs/mutation.md) showed no test pinned: edges of
# the input checks, which sample an error names, the result fields of degenerate tests, the less and two-
# sided tails, and the exact permutation p of Mann-Whitney with ties.


NAN = math.nan


# --- errors say what was wrong and which input -------------------------------------------------


@pytest.mark.parametrize(("call", "words"), [
    (lambda: stats.welch_t([1.0, NAN], [1.0, 2.0]), "x contains a non-finite value"),
    (lambda: stats.welch_t([1.0, 2.0], [NAN, 1.0]), "y contains a non-finite value"),
    (lambda: stats.mann_whitney([NAN], [1.0]), "x contains"),
    (lambda: stats.mann_whitney([1.0], [math.inf]), "y contains"),
    (lambda: stats.mean_diff_interval([NAN], [1.0]), "x contains"),
    (lambda: stats.mean_diff_interval([1.0], [NAN]), "y contains"),
    (lambda: stats.paired_bootstrap_diff([NAN], [1.0]), "a contains"),
    (lambda: stats.paired_bootstrap_diff([1.0], [NAN]), "b contains"),
    (lambda: stats.one_sample_t([1.0, NAN], 0.5), "values contains a non-finite value: [1.0, nan]"),
    (lambda: stats.mcnemar_exact([2, 1], [1, 1]), "a_correct must be a flat sequence"),
    (lambda: stats.mcnemar_exact([1, 1], [1, 2]), "b_correct must be a flat sequence"),
    (lambda: stats.mcnemar_exact([1, 1], [1]), "need two non-empty vectors of equal length"),
    (lambda: stats.paired_bootstrap_diff([1, 0, 1], [1, 0]), "equal length"),
    (lambda: stats.welch_t([1, 2], [1, 2], "bigger"), "alternative must be one of"),
    (lambda: stats.wilson_interval(1, 2, confidence=1.0), "confidence must be in (0, 1)"),
    (lambda: stats.wilson_interval(3, 2), "need 0 <= successes <= n"),
    (lambda: stats.wilson_score_p(1, 2, 1.5), "threshold must be in (0, 1)"),
    (lambda: stats.wilson_score_p(3, 2, 0.5), "need 0 <= successes <= n and n > 0"),
    (lambda: stats.one_sample_t([1, 2], 0.5, sd_floor=-1.0), "sd_floor must be finite"),
    (lambda: stats.mean_diff_interval([], [1.0]), "needs at least one value per group"),
    (lambda: stats.holm([0.5, 1.5]), "p-values must lie in [0, 1]"),
])
def test_errors_name_the_problem_and_the_input(call, words):
    with pytest.raises(ValueError) as caught:
        call()
    assert words in str(caught.value)


# --- proportions -------------------------------------------------------------------------------


@pytest.mark.parametrize(("successes", "n"), [(0, -1), (1, 0), (5, 3)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        stats.wilson_interval(successes, n)


@pytest.mark.parametrize(("successes", "n", "threshold"),
                         [(1, 2, 0.0), (1, 2, 1.0), (1, 2, 1.5), (0, 0, 0.5), (5, 3, 0.5)])
def test_wilson_score_p_rejects_thresholds_and_counts_outside_their_range(successes, n, threshold):
    with pytest.raises(ValueError):
        stats.wilson_score_p(successes, n, threshold)


def test_wilson_score_p_tails():
    greater = stats.wilson_score_p(62, 100, 0.5)  # the default is "greater"
    assert greater == pytest.approx(stats.wilson_score_p(62, 100, 0.5, "greater"))
    z = (0.62 - 0.5) / math.sqrt(0.25 / 100)
    assert greater == pytest.approx(scipy_stats.norm.sf(z))
    assert stats.wilson_score_p(62, 100, 0.5, "less") == pytest.approx(scipy_stats.norm.cdf(z))
    assert stats.wilson_score_p(62, 100, 0.5, "two-sided") == pytest.approx(2 * scipy_stats.norm.sf(z))
    assert stats.wilson_score_p(38, 100, 0.5, "two-sided") == pytest.approx(2 * scipy_stats.norm.sf(z))


# --- paired tests ------------------------------------------------------------------------------


def test_mcnemar_level_is_reachable_only_strictly_below_the_minimum_p():
    result = stats.mcnemar_exact([1, 0], [0, 0], "greater")  # one discordant pair: min p 0.5
    assert result.min_attainable_p == 0.5
    assert not result.level_reachable(0.5) and result.level_reachable(0.51)


def test_mcnemar_with_balanced_discordant_pairs_is_not_a_forced_p_of_one():
    # 2 discordant pairs each way: one-sided P(X >= 2 | n = 4) = 11/16.
    result = stats.mcnemar_exact([1, 1, 0, 0, 1], [0, 0, 1, 1, 1], "greater")
    assert (result.a_only, result.b_only) == (2, 2)
    assert result.p_value == pytest.approx(11 / 16)


def test_paired_bootstrap_defaults_are_the_documented_seeded_ones():
    a, b = [1, 0, 1, 1, 0, 1, 1, 0], [0, 0, 1, 0, 1, 0, 1, 0]
    assert stats.paired_bootstrap_diff(a, b) == stats.paired_bootstrap_diff(
        a, b, 0.95, n_resamples=2000, seed=0)


def test_paired_bootstrap_of_one_pair_and_of_two_distinct_differences():
    assert stats.paired_bootstrap_diff([1], [0]) == (1.0, 1.0, 1.0)
    diff, low, high = stats.paired_bootstrap_diff([1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0])
    assert diff == pytest.approx(1 / 6)
    assert low < diff < high  # two distinct differences (0 and 1) still have a spread


# --- two-sample tests --------------------------------------------------------------------------


def test_degenerate_welch_results_say_which_test_and_why():
    short = stats.welch_t([0.5], [0.4, 0.6])
    assert short.test == "welch" and math.isnan(short.statistic) and math.isnan(short.p_value)
    assert short.min_attainable_p == 1.0 and not short.level_reachable(0.99)
    assert "needs 2+ values per group" in short.note
    apart = stats.welch_t([0.5, 0.5], [0.4, 0.4])
    assert apart.test == "welch" and apart.note == "zero variance in both groups with different means"
    same = stats.welch_t([0.5, 0.5], [0.5, 0.5])
    assert (same.test, same.statistic, same.p_value) == ("welch", 0.0, 1.0)
    assert same.note == "identical constant groups"
    # deterministic identical runs are a decidable "no change", not an undecided test
    assert same.min_attainable_p == 0.0 and same.level_reachable(0.05)
    assert stats.welch_t([0.1, 0.3], [0.2, 0.5]).test == "welch"


def test_mann_whitney_min_p_edges():
    assert stats.mann_whitney_min_p(3, 3) == pytest.approx(0.1)  # default two-sided
    assert stats.mann_whitney_min_p(1, 3, "greater") == pytest.approx(0.25)
    assert stats.mann_whitney_min_p(3, 1, "greater") == pytest.approx(0.25)
    assert stats.mann_whitney_min_p(0, 3) == 1.0
    assert stats.mann_whitney_min_p(3, 0, "greater") == 1.0


def test_mann_whitney_with_one_value_in_a_group_is_a_real_test():
    result = stats.mann_whitney([0.9], [0.1, 0.2], "greater")
    assert result.test == "mannwhitney" and result.p_value == pytest.approx(1 / 3)
    result = stats.mann_whitney([0.9, 0.8], [0.1], "greater")
    assert result.p_value == pytest.approx(1 / 3)


@pytest.mark.parametrize(("x", "y"), [([], [0.1, 0.2]), ([0.1, 0.2], [])])
def test_mann_whitney_of_an_empty_group_is_undefined(x, y):
    result = stats.mann_whitney(x, y)
    assert result.test == "mannwhitney" and math.isnan(result.p_value)
    assert result.note == "needs at least 1 value per group" and result.min_attainable_p == 1.0


def test_mann_whitney_all_tied_and_one_apart():
    tied = stats.mann_whitney([0.3] * 3, [0.3] * 3, "greater")
    assert (tied.test, tied.statistic, tied.p_value) == ("mannwhitney", 4.5, 1.0)
    assert tied.note == "all tied" and tied.min_attainable_p == pytest.approx(0.05)
    apart = stats.mann_whitney([1.0] * 3, [0.0] * 3, "greater")  # the values span exactly 1
    assert apart.p_value == pytest.approx(0.05)


def _exact_tied_p_greater(x: list[float], y: list[float]) -> float:
    """Brute force: the share of all splits of the pooled values whose U is >= the observed U."""
    pooled = x + y
    ranks = scipy_stats.rankdata(pooled)

    def u_of(indices: tuple[int, ...]) -> float:
        return float(sum(ranks[i] for i in indices) - len(x) * (len(x) + 1) / 2)

    observed = u_of(tuple(range(len(x))))
    splits = list(itertools.combinations(range(len(pooled)), len(x)))
    return sum(u_of(split) >= observed - 1e-9 for split in splits) / len(splits)


def test_mann_whitney_with_ties_is_the_exact_permutation_p_up_to_the_limit():
    # 8 vs 8 (12,870 splits: more than scipy's default 9,999 resamples, fewer than the limit)
    x = [0.5, 0.5, 0.6, 0.7, 0.7, 0.8, 0.9, 0.9]
    y = [0.4, 0.5, 0.5, 0.6, 0.6, 0.7, 0.3, 0.4]
    result = stats.mann_whitney(x, y, "greater")
    assert result.p_value == pytest.approx(_exact_tied_p_greater(x, y), rel=1e-9)


def test_mann_whitney_with_ties_beyond_the_limit_uses_the_normal_approximation():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, 10) / 4, rng.integers(0, 4, 10) / 4  # 184,756 splits, tied
    result = stats.mann_whitney(x, y, "greater")
    expected = scipy_stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)


# --- one-sample t ------------------------------------------------------------------------------


def test_one_sample_level_is_reachable_only_strictly_below_the_minimum_p():
    result = OneSampleResult(0.5, 0.1, 0.05, 2, 0.04, min_attainable_p=0.05)
    assert not result.level_reachable(0.05) and result.level_reachable(0.051)


@pytest.mark.parametrize("alternative", ["less", "two-sided", "greater"])
def test_one_sample_min_p_is_every_value_at_a_bound_with_the_floor(alternative):
    n, threshold, floor = 3, 0.3, 0.05
    result = stats.one_sample_t([0.2, 0.25, 0.3], threshold, alternative, sd_floor=floor,
                                bounds=(0.0, 1.0))
    scale = math.sqrt(n) / floor
    high = scipy_stats.t.sf((1.0 - threshold) * scale, n - 1)
    low = scipy_stats.t.cdf((0.0 - threshold) * scale, n - 1)
    expected = {"greater": high, "less": low, "two-sided": min(1.0, 2 * min(high, low))}
    assert result.min_attainable_p == pytest.approx(expected[alternative], rel=1e-9)


def test_one_sample_min_p_for_less_uses_the_lower_bound_and_df():
    # Bounds far apart on the "greater" side and close on the "less" side tell them apart.
    result = stats.one_sample_t([0.2, 0.3, 0.25, 0.22], 0.25, "less", sd_floor=0.1,
                                bounds=(0.2, 1.0))
    expected = scipy_stats.t.cdf((0.2 - 0.25) * math.sqrt(4) / 0.1, 3)
    assert result.min_attainable_p == pytest.approx(expected, rel=1e-9)


def test_one_sample_with_one_value_or_no_spread_is_undefined_with_its_fields():
    one = stats.one_sample_t([0.7], 0.5)
    assert one.mean == 0.7 and math.isnan(one.observed_sd) and math.isnan(one.standard_error)
    assert one.df == 0 and math.isnan(one.p_value) and one.min_attainable_p == 1.0
    flat = stats.one_sample_t([0.5, 0.5, 0.5], 0.4)
    assert flat.mean == 0.5 and flat.observed_sd == 0.0 and math.isnan(flat.standard_error)
    assert flat.df == 2 and flat.min_attainable_p == 1.0
    assert flat.note == "zero spread over seeds and no floor"


def test_one_sample_floor_equal_to_the_observed_spread_is_not_flagged():
    values = [0.2, 0.4, 0.3]
    observed = float(np.std(values, ddof=1))
    assert not stats.one_sample_t(values, 0.1, sd_floor=observed).sd_floored
    assert stats.one_sample_t(values, 0.1, sd_floor=observed * 1.01).sd_floored


# --- intervals and corrections -----------------------------------------------------------------


def test_mean_diff_interval_with_one_value_in_a_group_has_no_bounds():
    diff, low, high = stats.mean_diff_interval([0.2, 0.4], [0.1])
    assert diff == pytest.approx(0.2) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError) as caught:
        stats.mean_diff_interval([], [0.1, 0.2])
    assert str(caught.value) == "mean_diff_interval needs at least one value per group"


@pytest.mark.parametrize("bad", [[1.5], [-0.1], [NAN], [0.2, 2.0]])
def test_corrections_reject_p_values_outside_zero_one(bad):
    with pytest.raises(ValueError):
        stats.holm(bad)
    with pytest.raises(ValueError):
        stats.benjamini_hochberg(bad)
