"""Regressions: a suite's `[regression]` settings, and fresh runs compared with a stored baseline,
one verdict per (strategy, model) x metric (x attribute), corrected together.

A run is compared only with the baseline entry trained as it was (the same training identity);
an entry written before entries stored one is matched by strategy, model and seed, and only by a
run of the suite's own settings. A run with no entry is a "no baseline for these settings"
verdict: `no_baseline` for a variation's runs, `inconclusive` for the suite's own."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from factrecall_bench.metrics import regression_metric_names
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
    run_training_identity,
    seed_values,
    split_of,
)
from factrecall_bench.verdicts.vocabulary import CORRECTIONS, REGRESSION_TESTS


@dataclass(frozen=True)
class RegressionSettings:
    """A suite's `[regression]` table: which metrics its baseline guards and how they are judged."""

    enabled: bool = False
    """Whether the suite is compared with a stored baseline (on when the table is present)."""
    metrics: tuple[str, ...] = field(default_factory=regression_metric_names)
    """result.json metrics compared run by run with the baseline (default: the registry's
    regression-checked ones, `metrics.Metric.regression_checked`: ID and OOD exact match)."""
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


@dataclass(frozen=True)
class BaselineSubject:
    """What comparing a suite's runs with its stored baseline reads of the suite."""

    suite_name: str
    """The suite's name: its baseline file's, the verdicts' and the `baseline update` hint's."""
    suite_hash: str
    """The hash of the suite's runs now: a baseline stored for another gets a note."""
    settings: RegressionSettings
    """The suite's `[regression]` table (disabled: no baseline verdicts at all)."""
    variation: bool = False
    """A `--set` variation: its settings have no baseline of their own (a missing one is
    `no_baseline`, not a doubt), and its hash is not the suite's."""
    own_identities: frozenset[str] | None = None
    """A variation's: the training identities its baseline speaks for (None: every run is the
    suite's own)."""
    extends: str = ""
    """The suite it extends ("" if none), whose baseline judges the runs trained as that suite's
    when it has no baseline of its own."""
    extended_identities: frozenset[str] = frozenset()
    """The training identities of the extended suite's runs (what its baseline speaks for)."""
    command_arguments: str = ""
    """How a command line names the suite (`--suite my/low2.toml`), for hints; default
    `--suite <suite_name>`."""

    def __post_init__(self) -> None:
        if not self.command_arguments:
            object.__setattr__(self, "command_arguments", f"--suite {self.suite_name}")


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
    own_identities: Collection[str] | None = None,
) -> list[Verdict]:
    """One regression verdict per (strategy, model) x metric (x attribute if per_attribute),
    fresh results against the baseline entries trained as they were (BaselineMatch), corrected
    together; one "no baseline for these settings" verdict per (strategy, model) whose runs have
    no entry. `own_identities`: the training identities of the suite's runs as its file says
    (None: the suite was not varied, every run is its own).

    Fails when the change is significant after correction and at least min_effect in size
    (either direction); passes when identical or not flagged; inconclusive when the sample
    cannot reach alpha and the interval does not show the change to be below min_effect.
    """
    _check_regression_arguments(metrics, min_effect, alpha, test, correction)
    matched = match_baseline_runs(results, baseline["runs"], own_identities)
    groups = _paired_groups(matched.pairs)
    if own_identities is None:  # the suite's own runs: a group it did not run is a doubt
        unrun = _group_by(matched.unmatched_entries, _strategy_and_model)
        untried = set(unrun) - {_strategy_and_model(run) for run in results}
        groups.update({key: ([], unrun[key]) for key in untried})
    verdicts = []
    for group in sorted(groups):
        fresh, base = groups[group]
        checks = _checks_for(group, fresh, base, metrics, per_attribute, (min_effect, alpha))
        verdicts += [_check_regression(check, fresh, base, test) for check in checks]
    verdicts += _no_baseline_verdicts(matched, str(baseline.get("suite", "")))
    return adjust_verdicts(verdicts, correction)


@dataclass(frozen=True)
class BaselineMatch:
    """Fresh runs paired with the baseline entries trained as they were, and what is left over."""

    pairs: list[tuple[Run, Run]]
    """(fresh run, its baseline entry)."""
    own_unmatched: list[Run]
    """Runs of the suite's own settings that the baseline holds no entry for."""
    varied_unmatched: list[Run]
    """Runs of other settings (a variation's) that the baseline holds no entry for."""
    unmatched_entries: list[Run]
    """Baseline entries no fresh run was paired with."""


def _paired_groups(
    pairs: Sequence[tuple[Run, Run]]
) -> dict[tuple[str, str], tuple[list[Run], list[Run]]]:
    """(strategy, model) of the fresh run -> its fresh runs and their entries, in step."""
    groups: dict[tuple[str, str], tuple[list[Run], list[Run]]] = {}
    for fresh, entry in pairs:
        fresh_runs, entries = groups.setdefault(_strategy_and_model(fresh), ([], []))
        fresh_runs.append(fresh)
        entries.append(entry)
    return groups


def _legacy_key(run: Run) -> tuple[str, str, Any]:
    return (str(run.get("strategy")), str(run.get("model")), run.get("seed"))


def match_baseline_runs(
    results: Sequence[Run], entries: Sequence[Run], own_identities: Collection[str] | None
) -> BaselineMatch:
    """Each fresh run's baseline entry: the one of the same training identity; for a run of the
    suite's own settings, else an entry without an identity (written before entries stored one)
    of the same strategy, model and seed."""
    by_identity = {run_training_identity(e): e for e in entries if run_training_identity(e)}
    legacy = {_legacy_key(e): e for e in entries if run_training_identity(e) is None}
    match = BaselineMatch([], [], [], [])
    for run in results:
        identity = run_training_identity(run)
        own = own_identities is None or identity in own_identities
        entry = by_identity.get(identity) if identity else None
        if entry is None and own:
            entry = legacy.get(_legacy_key(run))
        if entry is not None:
            match.pairs.append((run, entry))
        else:
            (match.own_unmatched if own else match.varied_unmatched).append(run)
    paired = {id(entry) for _, entry in match.pairs}
    match.unmatched_entries.extend(entry for entry in entries if id(entry) not in paired)
    return match


def _no_baseline_verdicts(matched: BaselineMatch, suite: str) -> list[Verdict]:
    """One verdict per (strategy, model) whose runs have no baseline entry: `no_baseline` for a
    variation's runs, inconclusive for the suite's own (its baseline should hold them)."""
    verdicts = []
    for outcome, runs in (("undecided", matched.own_unmatched),
                          ("no_baseline", matched.varied_unmatched)):
        for (strategy, model), members in sorted(_group_by(runs, _strategy_and_model).items()):
            detail = _no_baseline_detail(members, suite, own=outcome == "undecided")
            verdicts.append(Verdict(
                name=f"{strategy}/{model} baseline", kind="regression",
                status=verdict_status("regression", outcome, "no_change"), expect="no_change",
                outcome=outcome, test="-", metric="-", detail=detail))
    return verdicts


def _no_baseline_detail(runs: Sequence[Run], suite: str, own: bool) -> str:
    seeds = ", ".join(str(seed) for seed in sorted({str(run.get("seed")) for run in runs}))
    identities = ", ".join(sorted({(run_training_identity(run) or "unknown")[:12] for run in runs}))
    held = (f"the {suite or 'stored'} baseline holds no run trained as seed(s) {seeds} were "
            f"(training identity {identities})")
    if own:
        return (f"no baseline for these settings: {held}; the suite's runs changed since it was "
                f"stored: `factrecall-bench baseline update --suite {suite or 'SUITE'}` records "
                "them")
    return (f"no baseline for these settings: {held}; a run is compared only with a baseline "
            "entry trained as it was, never with runs of other settings")
