"""Statistical tests for factrecall-bench verdicts: intervals, paired and two-sample tests, and
multiple-comparison corrections. Pure functions of numbers; no knowledge of result files.

Every test reports not only its p-value but the smallest p-value the sample could produce
(`min_attainable_p`), so callers can say "inconclusive" instead of "pass" when the significance
level is out of reach (3 vs 3 seeds with Mann-Whitney cannot reach p < 0.05).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from scipy import stats as scipy_stats

Alternative = Literal["two-sided", "greater", "less"]
Numbers: TypeAlias = Sequence[float] | np.ndarray
"""Values of one sample: a list or a 1-D numpy array."""
Booleans: TypeAlias = Sequence[bool] | Sequence[int] | np.ndarray
"""Per-question correctness: booleans or 0/1."""
ALTERNATIVES: tuple[str, ...] = ("two-sided", "greater", "less")
# Above this many ways to split the pooled sample, Mann-Whitney with ties uses the normal
# approximation instead of the exact permutation distribution.
MAX_EXACT_PERMUTATIONS = 20_000


def _scipy_stats() -> ModuleType:
    """scipy.stats, imported at its first use: a command refused before any work (exit 2) need
    not wait the second and a half its import takes."""
    from scipy import stats

    return stats


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _as_sample(values: Numbers, name: str) -> np.ndarray:
    sample = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(sample)):
        raise ValueError(f"{name} contains a non-finite value: {list(values)}")
    return sample


def _as_booleans(values: Booleans, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.all(np.isin(array, (0, 1))):
        raise ValueError(f"{name} must be a flat sequence of booleans or 0/1 values")
    return array.astype(bool)


# ---------------------------------------------------------------------------------------------
# Proportions


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; n == 0 gives the uninformative (0.0, 1.0)."""
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = float(_scipy_stats().norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    rate = successes / n
    denominator = 1.0 + z * z / n
    center = (rate + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n successes a bound equals the rate exactly; rounding must not push it past.
    return (max(0.0, min(rate, center - half_width)), min(1.0, max(rate, center + half_width)))


def wilson_score_p(
    successes: int, n: int, threshold: float, alternative: Alternative = "greater"
) -> float:
    """p-value of the score test of H0: rate == threshold (the test the Wilson interval inverts).

    With alternative "greater", p < alpha exactly when the one-sided (1 - alpha) Wilson lower
    bound lies above `threshold`.
    """
    _check_alternative(alternative)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = (successes / n - threshold) / math.sqrt(threshold * (1 - threshold) / n)
    if alternative == "greater":
        return float(_scipy_stats().norm.sf(z))
    if alternative == "less":
        return float(_scipy_stats().norm.cdf(z))
    return float(min(1.0, 2 * _scipy_stats().norm.sf(abs(z))))


# ---------------------------------------------------------------------------------------------
# Paired per-question tests


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of paired per-question correctness of a and b."""

    n_pairs: int
    """Questions answered by both."""
    a_only: int
    """Discordant pairs where a is correct and b is wrong."""
    b_only: int
    """Discordant pairs where b is correct and a is wrong."""
    effect: float
    """mean(a) - mean(b): difference in accuracy as a proportion."""
    p_value: float
    alternative: str
    """"greater" tests that a is more accurate than b."""

    @property
    def n_discordant(self) -> int:
        return self.a_only + self.b_only

    @property
    def min_attainable_p(self) -> float:
        """Smallest p the number of discordant pairs allows (1.0 with none)."""
        if self.n_discordant == 0:
            return 1.0
        one_sided = 0.5**self.n_discordant
        return min(1.0, 2 * one_sided) if self.alternative == "two-sided" else one_sided

    def level_reachable(self, alpha: float) -> bool:
        return self.min_attainable_p < alpha


def _sign_test_p(successes: int, n: int, alternative: Alternative) -> float:
    """Exact binomial test of p = 1/2. Two-sided is twice the smaller tail (capped at 1): for a
    symmetric binomial this equals binomtest's two-sided p, and skips its slow search."""
    if alternative != "two-sided":
        return float(_scipy_stats().binomtest(successes, n, 0.5, alternative).pvalue)
    tails = (_sign_test_p(successes, n, "less"), _sign_test_p(successes, n, "greater"))
    return min(1.0, 2.0 * min(tails))


def mcnemar_exact(
    a_correct: Booleans,
    b_correct: Booleans,
    alternative: Alternative = "two-sided",
) -> McNemarResult:
    """Exact (binomial) McNemar test on the discordant pairs; none discordant gives p = 1.0."""
    _check_alternative(alternative)
    a, b = _as_booleans(a_correct, "a_correct"), _as_booleans(b_correct, "b_correct")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two non-empty vectors of equal length, got {a.size} and {b.size}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p_value = 1.0 if a_only + b_only == 0 else _sign_test_p(a_only, a_only + b_only, alternative)
    effect = float(np.mean(a) - np.mean(b))
    return McNemarResult(a.size, a_only, b_only, effect, float(p_value), alternative)


def _multinomial_draws(rng: np.random.Generator, counts: np.ndarray, size: int) -> np.ndarray:
    """`size` multinomial draws of counts.sum() items over len(counts) categories, with
    probabilities counts / counts.sum(): one vectorized conditional binomial per category,
    much faster than Generator.multinomial for few categories."""
    draws = np.zeros((size, counts.size), dtype=np.int64)
    items_left = np.full(size, counts.sum(), dtype=np.int64)
    weight_left = float(counts.sum())
    for category, count in enumerate(counts[:-1]):
        draws[:, category] = rng.binomial(items_left, min(1.0, count / weight_left))
        items_left -= draws[:, category]
        weight_left -= count
    draws[:, -1] = items_left
    return draws


def paired_bootstrap_diff(
    a: Numbers,
    b: Numbers,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of mean(a - b) over paired items: (diff, low, high).

    Resampling n items with replacement is drawing multinomial counts over the distinct
    differences, so the bootstrap is exact and fast for 0/1 data (at most 3 distinct values).
    """
    _check_confidence(confidence)
    xs, ys = _as_sample(a, "a"), _as_sample(b, "b")
    if xs.shape != ys.shape or xs.size == 0:
        raise ValueError(f"need two non-empty vectors of equal length, got {xs.size}, {ys.size}")
    differences = xs - ys
    diff = float(np.mean(differences))
    values, counts = np.unique(differences, return_counts=True)
    if values.size == 1:
        return (diff, diff, diff)
    draws = _multinomial_draws(np.random.default_rng(seed), counts, n_resamples)
    means = draws @ values / differences.size
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return (diff, float(low), float(high))


# ---------------------------------------------------------------------------------------------
# Two-sample tests across seeds


@dataclass(frozen=True)
class TwoSampleResult:
    """A two-sample test across seeds (x against y)."""

    test: str
    """"welch" or "mannwhitney"."""
    statistic: float
    p_value: float
    """NaN when the test is undefined for these data (see `note`)."""
    min_attainable_p: float
    """Smallest p these sample sizes allow; 1.0 when the test is undefined."""
    df: float = math.nan
    """Welch-Satterthwaite degrees of freedom (Welch only)."""
    note: str = ""
    """Why the test is degenerate or undefined; empty when it is ordinary."""

    def level_reachable(self, alpha: float) -> bool:
        return self.min_attainable_p < alpha


def _undefined(test: str, note: str) -> TwoSampleResult:
    return TwoSampleResult(test, math.nan, math.nan, 1.0, note=note)


def welch_t(
    x: Numbers, y: Numbers, alternative: Alternative = "two-sided"
) -> TwoSampleResult:
    """Welch's unequal-variance t-test of mean(x) against mean(y).

    Degenerate cases: fewer than 2 values in a group, or zero variance in both groups with
    different means, give an undefined test (p NaN, not reachable): the caller must say
    inconclusive. Zero variance in both groups with the same value (deterministic identical
    runs) is "no change": statistic 0, p 1.0.
    """
    _check_alternative(alternative)
    xs, ys = _as_sample(x, "x"), _as_sample(y, "y")
    if xs.size < 2 or ys.size < 2:
        return _undefined("welch", f"needs 2+ values per group, got {xs.size} and {ys.size}")
    if np.ptp(xs) == 0 and np.ptp(ys) == 0:
        if xs[0] == ys[0]:
            return TwoSampleResult("welch", 0.0, 1.0, 0.0, note="identical constant groups")
        return _undefined("welch", "zero variance in both groups with different means")
    # Welch's statistic and Welch-Satterthwaite df, written out: scipy's ttest_ind gives the same
    # numbers (tested) but warns of "catastrophic cancellation" when one group is constant (e.g.
    # three seeds at the same recall), a case the formula handles exactly.
    x_share, y_share = xs.var(ddof=1) / xs.size, ys.var(ddof=1) / ys.size
    standard_error = math.sqrt(x_share + y_share)
    statistic = float((xs.mean() - ys.mean()) / standard_error)
    df = (x_share + y_share) ** 2 / (x_share**2 / (xs.size - 1) + y_share**2 / (ys.size - 1))
    return TwoSampleResult("welch", statistic, _t_p_value(statistic, df, alternative), 0.0,
                           df=float(df))


def mann_whitney_min_p(n_x: int, n_y: int, alternative: Alternative = "two-sided") -> float:
    """Smallest exact Mann-Whitney p-value for these sizes (3 vs 3: 0.05 one-sided, 0.1 two)."""
    _check_alternative(alternative)
    if n_x < 1 or n_y < 1:
        return 1.0
    one_sided = 1.0 / math.comb(n_x + n_y, n_x)
    return min(1.0, 2 * one_sided) if alternative == "two-sided" else one_sided


def _mann_whitney_method(xs: np.ndarray, ys: np.ndarray) -> str | scipy_stats.PermutationMethod:
    pooled = np.concatenate([xs, ys])
    has_ties = np.unique(pooled).size < pooled.size
    n_splits = math.comb(pooled.size, xs.size)
    if not has_ties or n_splits > MAX_EXACT_PERMUTATIONS:
        return "auto"
    # With ties scipy's "auto" uses the normal approximation, which on tiny samples gives
    # p-values below the exact minimum (0.036 for 3 vs 3); enumerate all splits instead.
    return _scipy_stats().PermutationMethod(n_resamples=n_splits, rng=np.random.default_rng(0))


def mann_whitney(
    x: Numbers, y: Numbers, alternative: Alternative = "two-sided"
) -> TwoSampleResult:
    """Mann-Whitney U test of x against y ("greater": x tends to be larger).

    Exact for small samples (with ties: exact permutation distribution); `min_attainable_p` is
    the exact minimum for the sample sizes, so `level_reachable(0.05)` is False for 3 vs 3.
    """
    _check_alternative(alternative)
    xs, ys = _as_sample(x, "x"), _as_sample(y, "y")
    if xs.size < 1 or ys.size < 1:
        return _undefined("mannwhitney", "needs at least 1 value per group")
    min_p = mann_whitney_min_p(xs.size, ys.size, alternative)
    if np.ptp(np.concatenate([xs, ys])) == 0:
        return TwoSampleResult("mannwhitney", xs.size * ys.size / 2, 1.0, min_p, note="all tied")
    method = _mann_whitney_method(xs, ys)
    result = _scipy_stats().mannwhitneyu(xs, ys, alternative=alternative, method=method)
    return TwoSampleResult("mannwhitney", float(result.statistic), float(result.pvalue), min_p)


@dataclass(frozen=True)
class OneSampleResult:
    """A one-sample t-test of the mean of a few values (one per seed) against a threshold."""

    mean: float
    observed_sd: float
    """The values' sample standard deviation (NaN for fewer than 2 values)."""
    standard_error: float
    """sd / sqrt(n), with sd never below the floor given to the test; NaN when undefined."""
    df: int
    p_value: float
    """NaN when the test is undefined (see `note`)."""
    min_attainable_p: float
    """Smallest p the sample size, the floor and the values' bounds allow."""
    sd_floored: bool = False
    """The observed spread was below the floor, so the floor was used."""
    note: str = ""

    def level_reachable(self, alpha: float) -> bool:
        return self.min_attainable_p < alpha

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Two-sided t interval for the mean (NaN bounds when the test is undefined)."""
        _check_confidence(confidence)
        if not math.isfinite(self.standard_error):
            return (math.nan, math.nan)
        half = float(_scipy_stats().t.ppf(1.0 - (1.0 - confidence) / 2.0, self.df))
        return (self.mean - half * self.standard_error, self.mean + half * self.standard_error)

    def lower_bound(self, confidence: float = 0.95) -> float:
        """One-sided lower t bound for the mean."""
        _check_confidence(confidence)
        if not math.isfinite(self.standard_error):
            return math.nan
        return self.mean - float(_scipy_stats().t.ppf(confidence, self.df)) * self.standard_error

    def upper_bound(self, confidence: float = 0.95) -> float:
        """One-sided upper t bound for the mean."""
        _check_confidence(confidence)
        if not math.isfinite(self.standard_error):
            return math.nan
        return self.mean + float(_scipy_stats().t.ppf(confidence, self.df)) * self.standard_error


def _t_p_value(statistic: float, df: float, alternative: Alternative) -> float:
    if alternative == "greater":
        return float(_scipy_stats().t.sf(statistic, df))
    if alternative == "less":
        return float(_scipy_stats().t.cdf(statistic, df))
    return float(min(1.0, 2 * _scipy_stats().t.sf(abs(statistic), df)))


def _one_sample_min_p(
    n: int, threshold: float, sd: float, bounds: tuple[float, float], alternative: Alternative
) -> float:
    """The most extreme statistic: every value at a bound, with the spread at the floor."""
    if sd <= 0.0:
        return 0.0
    scale = math.sqrt(n) / sd
    high = _t_p_value((bounds[1] - threshold) * scale, n - 1, "greater")
    low = _t_p_value((bounds[0] - threshold) * scale, n - 1, "less")
    if alternative == "greater":
        return high
    return low if alternative == "less" else min(1.0, 2 * min(high, low))


def one_sample_t(
    values: Numbers,
    threshold: float,
    alternative: Alternative = "greater",
    *,
    sd_floor: float = 0.0,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> OneSampleResult:
    """Student's t-test of H0: mean == threshold over values (one per seed), df = n - 1.

    `sd_floor`: the sample standard deviation used is never below it. Seeds that agree exactly
    (three runs all at 1.000) would otherwise give an infinitely tight bound; the caller passes
    the noise each value carries in any case (for a proportion of n answers, the binomial sd at
    the threshold). `bounds`: the range the values can take, so that `min_attainable_p` says
    whether the level is reachable at all with this floor. Fewer than 2 values, or zero spread
    without a floor, give an undefined test (p NaN, not reachable).
    """
    _check_alternative(alternative)
    sample = _as_sample(values, "values")
    if sd_floor < 0 or not math.isfinite(sd_floor):
        raise ValueError(f"sd_floor must be finite and >= 0, got {sd_floor}")
    mean = float(np.mean(sample)) if sample.size else math.nan
    if sample.size < 2:
        return OneSampleResult(mean, math.nan, math.nan, 0, math.nan, 1.0,
                               note=f"needs 2+ values (seeds), got {sample.size}")
    observed_sd = float(np.std(sample, ddof=1))
    sd = max(observed_sd, sd_floor)
    if sd == 0.0:
        return OneSampleResult(mean, observed_sd, math.nan, sample.size - 1, math.nan, 1.0,
                               note="zero spread over seeds and no floor")
    standard_error = sd / math.sqrt(sample.size)
    p_value = _t_p_value((mean - threshold) / standard_error, sample.size - 1, alternative)
    min_p = _one_sample_min_p(sample.size, threshold, sd_floor, bounds, alternative)
    return OneSampleResult(mean, observed_sd, standard_error, sample.size - 1, p_value, min_p,
                           sd_floored=observed_sd < sd_floor)


def mean_diff_interval(
    x: Numbers, y: Numbers, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Welch-Satterthwaite t interval for mean(x) - mean(y): (diff, low, high).

    Fewer than 2 values in a group gives NaN bounds. Zero variance in both groups collapses
    the interval to the observed difference (the data show no spread to widen it).
    """
    _check_confidence(confidence)
    xs, ys = _as_sample(x, "x"), _as_sample(y, "y")
    if xs.size == 0 or ys.size == 0:
        raise ValueError("mean_diff_interval needs at least one value per group")
    diff = float(np.mean(xs) - np.mean(ys))
    if xs.size < 2 or ys.size < 2:
        return (diff, math.nan, math.nan)
    var_x, var_y = np.var(xs, ddof=1) / xs.size, np.var(ys, ddof=1) / ys.size
    standard_error = math.sqrt(var_x + var_y)
    if standard_error == 0.0:
        return (diff, diff, diff)
    df = (var_x + var_y) ** 2 / (var_x**2 / (xs.size - 1) + var_y**2 / (ys.size - 1))
    t_quantile = float(_scipy_stats().t.ppf(1.0 - (1.0 - confidence) / 2.0, df))
    return (diff, diff - t_quantile * standard_error, diff + t_quantile * standard_error)


# ---------------------------------------------------------------------------------------------
# Multiple comparisons


def _as_p_values(p_values: Numbers) -> np.ndarray:
    array = np.asarray(p_values, dtype=float).ravel()
    if not np.all((array >= 0.0) & (array <= 1.0)):
        raise ValueError(f"p-values must lie in [0, 1] (no NaN), got {list(p_values)}")
    return array


def holm(p_values: Numbers) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error), monotone and capped at 1."""
    array = _as_p_values(p_values)
    order = np.argsort(array, kind="stable")
    multipliers = array.size - np.arange(array.size)
    adjusted_sorted = np.minimum(np.maximum.accumulate(multipliers * array[order]), 1.0)
    adjusted = np.empty_like(array)
    adjusted[order] = adjusted_sorted
    return [float(p) for p in adjusted]


def benjamini_hochberg(p_values: Numbers) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), capped at 1."""
    array = _as_p_values(p_values)
    if array.size == 0:
        return []
    adjusted = _scipy_stats().false_discovery_control(array, method="bh")
    return [float(min(1.0, p)) for p in np.atleast_1d(adjusted)]
