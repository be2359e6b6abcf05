"""Regressions: a suite's `[regression]` settings, and fresh runs compared with a stored baseline,
one verdict per (strategy, model) x metric (x attribute), corrected together."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from factrecall_bench.verdicts import stats
from factrecall_bench.verdicts.decision import (
    DecisionBasis,
    Verdict,
    _finite_or_none,
    _fmt,
    _mean,
    _note,
    _unmatched_note,
    _unreachable_note,
    adjust_verdicts,
    regression_outcome,
    verdict_status,
)
from factrecall_bench.verdicts.evidence import (
    Run,
    _group_by,
    _runs_problem,
    _seed_key,
    paired_outcomes,
    seed_values,
    split_of,
)
from factrecall_bench.verdicts.vocabulary import CORRECTIONS, REGRESSION_TESTS


@dataclass(frozen=True)
class RegressionSettings:
    """A suite's `[regression]` table: which metrics its baseline guards and how they are judged."""

    enabled: bool = False
    """Whether the suite is compared with a stored baseline (on when the table is present)."""
    metrics: tuple[str, ...] = ("id_exact_match", "ood_exact_match")
    """result.json metrics compared run by run with the baseline."""
    min_effect: float = 0.05
    """Smallest change that counts as a regression (points of accuracy as a proportion)."""
    alpha: float = 0.01
    """Significance level, after the correction."""
    test: str = "mcnemar"
    """mcnemar (paired per question), welch or mannwhitney (across seeds)."""
    correction: str = "holm"
    """holm, bh or none, over strategy x metric (x attribute)."""
    per_attribute: bool = False
    """Also compare each attribute's exact match."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not self.metrics or not all(isinstance(m, str) and m for m in self.metrics):
            raise ValueError("regression: metrics must be a non-empty list of metric names")
        if self.test not in REGRESSION_TESTS:
            raise ValueError(f"regression: test must be one of {', '.join(REGRESSION_TESTS)}, "
                             f"got {self.test!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"regression: correction must be one of {', '.join(CORRECTIONS)}, "
                             f"got {self.correction!r}")
        if not 0.0 < self.alpha < 1.0 or not 0.0 <= self.min_effect < 1.0:
            raise ValueError("regression: alpha must be in (0, 1) and min_effect in [0, 1)")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> RegressionSettings:
        """The settings of a `[regression]` table; present means enabled unless it says not."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"regression: unknown key(s) {unknown}")
        return cls(**{"enabled": bool(table), **table})


# ---------------------------------------------------------------------------------------------
# Regressions against a baseline


@dataclass(frozen=True)
class RegressionCheck:
    """One comparison of fresh runs with baseline runs."""

    strategy: str
    model: str
    metric: str
    attribute: str | None
    min_effect: float
    alpha: float

    @property
    def name(self) -> str:
        suffix = f"[{self.attribute}]" if self.attribute else ""
        return f"{self.strategy}/{self.model} {self.metric}{suffix}"


def _regression_verdict(
    check: RegressionCheck, test: str, basis: DecisionBasis | None, numbers: dict[str, Any]
) -> Verdict:
    outcome = "undecided" if basis is None else regression_outcome(numbers.get("p"), basis)
    return Verdict(
        name=check.name, kind="regression", status=verdict_status("regression", outcome, ""),
        expect="no_change", outcome=outcome, test=test, metric=check.metric,
        effect=_finite_or_none(numbers.get("effect")), ci_low=_finite_or_none(numbers.get("low")),
        ci_high=_finite_or_none(numbers.get("high")), p_value=_finite_or_none(numbers.get("p")),
        detail=numbers.get("detail", ""), basis=basis,
    )


def _change_text(check: RegressionCheck, baseline_mean: float, fresh_mean: float) -> str:
    diff = fresh_mean - baseline_mean
    what = check.metric + (f"[{check.attribute}]" if check.attribute else "")
    if diff == 0:
        return f"{what} unchanged at {_fmt(fresh_mean)}"
    direction = "rose" if diff > 0 else "dropped"
    return f"{what} {direction} by {_fmt(abs(diff))} ({_fmt(baseline_mean)} -> {_fmt(fresh_mean)})"


def _regression_basis(
    check: RegressionCheck, reachable: bool, interval: tuple[float, float, float], identical: bool
) -> DecisionBasis:
    diff, low, high = interval
    within = math.isfinite(low) and -check.min_effect < low and high < check.min_effect
    return DecisionBasis(check.alpha, reachable, abs(diff) >= check.min_effect, within, identical)


def _paired_regression(
    check: RegressionCheck, fresh: Sequence[Run], baseline: Sequence[Run]
) -> Verdict:
    pairs = paired_outcomes(fresh, baseline, check.metric, check.attribute)
    if isinstance(pairs, str):
        return _regression_verdict(check, "mcnemar", None, {"detail": pairs})
    result = stats.mcnemar_exact(pairs.a, pairs.b, "two-sided")
    interval = stats.paired_bootstrap_diff(pairs.a, pairs.b, 1 - check.alpha)
    # Identical answers are "no change" whatever the test could reach: say so, not "unreachable".
    reachable = result.level_reachable(check.alpha) or result.n_discordant == 0
    detail = (
        f"{_change_text(check, _mean(pairs.b), _mean(pairs.a))}; "
        f"{result.n_discordant} of {len(pairs.a)} answers changed over {pairs.n_runs} seed(s) "
        f"({result.a_only} newly right, {result.b_only} newly wrong)"
        f"{_unreachable_note(reachable, result.min_attainable_p, check.alpha)}"
        f"{_unmatched_note(pairs)}"
    )
    basis = _regression_basis(check, reachable, interval, result.n_discordant == 0)
    numbers = {"effect": interval[0], "low": interval[1], "high": interval[2],
               "p": result.p_value, "detail": detail}
    return _regression_verdict(check, "mcnemar", basis, numbers)


def _matched_seed_values(
    check: RegressionCheck, fresh: Sequence[Run], baseline: Sequence[Run]
) -> tuple[list[float], list[float]] | str:
    by_seed = {_seed_key(run): run for run in baseline}
    matched = [(run, by_seed[_seed_key(run)]) for run in fresh if _seed_key(run) in by_seed]
    if not matched:
        return "no fresh run matches a baseline run by model and seed"
    fresh_values = seed_values([pair[0] for pair in matched], check.metric, check.attribute)
    base_values = seed_values([pair[1] for pair in matched], check.metric, check.attribute)
    for values in (fresh_values, base_values):
        if isinstance(values, str):
            return values
    return fresh_values, base_values  # type: ignore[return-value]


def _seed_regression(
    check: RegressionCheck, fresh: Sequence[Run], baseline: Sequence[Run], test: str, note: str
) -> Verdict:
    matched = _matched_seed_values(check, fresh, baseline)
    if isinstance(matched, str):
        return _regression_verdict(check, test, None, {"detail": matched})
    fresh_values, base_values = matched
    run_test = stats.welch_t if test == "welch" else stats.mann_whitney
    result = run_test(fresh_values, base_values, "two-sided")
    interval = stats.mean_diff_interval(fresh_values, base_values, 1 - check.alpha)
    reachable = result.level_reachable(check.alpha)
    detail = (
        f"{_change_text(check, _mean(base_values), _mean(fresh_values))} over "
        f"{len(fresh_values)} seed(s); {test} p {_fmt(result.p_value)}"
        f"{_unreachable_note(reachable, result.min_attainable_p, check.alpha)}"
        f"{_note(result.note)}{note}"
    )
    basis = _regression_basis(check, reachable, interval, fresh_values == base_values)
    numbers = {"effect": interval[0], "low": interval[1], "high": interval[2],
               "p": result.p_value, "detail": detail}
    return _regression_verdict(check, test, basis, numbers)


def _check_regression(
    check: RegressionCheck, fresh: Sequence[Run], baseline: Sequence[Run], test: str
) -> Verdict:
    label = f"{check.strategy}/{check.model}"
    problem = _runs_problem(f"fresh {label}", fresh) or _runs_problem(f"baseline {label}", baseline)
    if problem:
        return _regression_verdict(check, test, None, {"detail": problem})
    if test == "mcnemar" and split_of(check.metric) is not None:
        return _paired_regression(check, fresh, baseline)
    if test == "mcnemar":
        note = f"; {check.metric} has no per-question data, so seeds were compared with welch"
        return _seed_regression(check, fresh, baseline, "welch", note)
    return _seed_regression(check, fresh, baseline, test, "")


def _attributes(runs: Iterable[Run], metric: str) -> set[str]:
    names: set[str] = set()
    for run in runs:
        names.update(((run.get("per_attribute") or {}).get(metric) or {}).keys())
    return names


def _checks_for(
    key: tuple[str, str], fresh: Sequence[Run], baseline: Sequence[Run], metrics: Sequence[str],
    per_attribute: bool, limits: tuple[float, float],
) -> list[RegressionCheck]:
    checks = []
    for metric in metrics:
        attributes: list[str | None] = [None]
        if per_attribute:
            attributes += sorted(_attributes(fresh, metric) & _attributes(baseline, metric))
        checks += [RegressionCheck(*key, metric, attribute, *limits) for attribute in attributes]
    return checks


def _strategy_and_model(run: Run) -> tuple[str, str]:
    return (str(run.get("strategy")), str(run.get("model")))


def _check_regression_arguments(
    metrics: Sequence[str], min_effect: float, alpha: float, test: str, correction: str
) -> None:
    if test not in REGRESSION_TESTS:
        raise ValueError(f"test must be one of {', '.join(REGRESSION_TESTS)}, got {test!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    if not 0.0 < alpha < 1.0 or min_effect < 0:
        raise ValueError(f"need 0 < alpha < 1 and min_effect >= 0, got {alpha}, {min_effect}")
    if isinstance(metrics, str) or not metrics:
        raise ValueError("metrics must be a non-empty list of metric names")


def compare_with_baseline(
    results: Sequence[Run],
    baseline: Mapping[str, Any],
    metrics: Sequence[str],
    min_effect: float,
    alpha: float,
    test: str = "mcnemar",
    correction: str = "holm",
    *,
    per_attribute: bool = False,
) -> list[Verdict]:
    """One regression verdict per (strategy, model) x metric (x attribute if per_attribute),
    fresh results against baseline["runs"] matched by model and seed, corrected together.

    Fails when the change is significant after correction and at least min_effect in size
    (either direction); passes when identical or not flagged; inconclusive when the sample
    cannot reach alpha and the interval does not show the change to be below min_effect.
    """
    _check_regression_arguments(metrics, min_effect, alpha, test, correction)
    fresh_groups = _group_by(results, _strategy_and_model)
    base_groups = _group_by(baseline["runs"], _strategy_and_model)
    verdicts = []
    for group in sorted(set(fresh_groups) | set(base_groups)):
        fresh, base = fresh_groups.get(group, []), base_groups.get(group, [])
        checks = _checks_for(group, fresh, base, metrics, per_attribute, (min_effect, alpha))
        verdicts += [_check_regression(check, fresh, base, test) for check in checks]
    return adjust_verdicts(verdicts, correction)
