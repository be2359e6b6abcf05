"""Behaviour of verdicts/stats.py that mutation testing (docs/mutation.md) showed no test pinned:
edges of the input checks, which sample an error names, the result fields of degenerate tests,
the less and two-sided tails, and the exact permutation p of Mann-Whitney with ties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from factrecall_bench.verdicts import stats
from factrecall_bench.verdicts.stats import OneSampleResult

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
