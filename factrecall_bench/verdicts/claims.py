"""Claims a suite makes about its strategies: checked when the suite is loaded (and against its
seeds), then evaluated from result.json dicts. "greater": a beats b; "at_least": every strategy
reaches a threshold."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    claim_outcome,
    verdict_status,
)
from factrecall_bench.verdicts.evidence import (
    Run,
    _group_by,
    _is_number,
    _runs_problem,
    metric_value,
    paired_outcomes,
    question_outcomes,
    seed_values,
    split_of,
)
from factrecall_bench.verdicts.vocabulary import (
    AT_LEAST_TESTS,
    CLAIM_KINDS,
    CLAIM_TESTS,
    EXPECTATIONS,
    REQUIRED_CLAIM_KEYS,
    THRESHOLD_KINDS,
    TRACE_PREFIX,
    is_proportion_metric,
)


def _check_claim_types(claim: Claim) -> None:
    for name in ("name", "metric", "kind", "test", "why", "expect"):
        value = getattr(claim, name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"claim {claim.name!r}: {name} must be a non-empty string")
    for name in ("a", "b"):
        if getattr(claim, name) is not None and not isinstance(getattr(claim, name), str):
            raise ValueError(f"claim {claim.name!r}: {name} must be a strategy name (string)")
    if not isinstance(claim.strategies, list | tuple) or not all(
        isinstance(s, str) and s for s in claim.strategies
    ):
        raise ValueError(f"claim {claim.name!r}: strategies must be a list of strategy names")
    if not isinstance(claim.strict, bool):
        raise ValueError(f"claim {claim.name!r}: strict must be true or false")
    if claim.strict and claim.expect != "fails":
        raise ValueError(f"claim {claim.name!r}: strict applies to expect = 'fails' only")
    if claim.threshold is not None and not _is_number(claim.threshold):
        raise ValueError(f"claim {claim.name!r}: threshold must be a number")
    for name in ("min_effect", "alpha"):
        if not _is_number(getattr(claim, name)):
            raise ValueError(f"claim {claim.name!r}: {name} must be a number")


def _check_claim_choices(claim: Claim) -> None:
    choices = {"kind": CLAIM_KINDS, "test": CLAIM_TESTS, "expect": EXPECTATIONS}
    for name, allowed in choices.items():
        if getattr(claim, name) not in allowed:
            raise ValueError(
                f"claim {claim.name!r}: {name} must be one of {', '.join(allowed)}, "
                f"got {getattr(claim, name)!r}"
            )
    if not 0.0 < claim.alpha < 1.0:
        raise ValueError(f"claim {claim.name!r}: alpha must be in (0, 1), got {claim.alpha}")
    if "\n" in claim.why:
        raise ValueError(f"claim {claim.name!r}: why must be one line")


def _check_greater_claim(claim: Claim) -> None:
    prefix = f"claim {claim.name!r}: kind 'greater'"
    if not claim.a or not claim.b or claim.a == claim.b:
        raise ValueError(f"{prefix} needs two different strategies a and b")
    if claim.strategies or claim.threshold is not None:
        raise ValueError(f"{prefix} takes a and b, not strategies or threshold")
    if claim.test in AT_LEAST_TESTS:
        raise ValueError(f"{prefix} needs test welch, mannwhitney or mcnemar, not {claim.test}")
    if claim.test == "mcnemar" and split_of(claim.metric) is None:
        raise ValueError(f"{prefix} with mcnemar needs an id_* or ood_* metric")
    if claim.min_effect < 0 or (is_proportion_metric(claim.metric) and claim.min_effect >= 1):
        raise ValueError(f"{prefix}: min_effect must be in [0, 1), got {claim.min_effect}")


def _check_threshold_claim(claim: Claim) -> None:
    prefix = f"claim {claim.name!r}: kind {claim.kind!r}"
    if not claim.strategies or len(set(claim.strategies)) != len(claim.strategies):
        raise ValueError(f"{prefix} needs a non-empty list of distinct strategies")
    if claim.a is not None or claim.b is not None or claim.min_effect != 0:
        raise ValueError(f"{prefix} takes strategies and threshold, not a, b or min_effect")
    if claim.threshold is None or not 0.0 < claim.threshold < 1.0:
        raise ValueError(f"{prefix} needs a threshold in (0, 1), got {claim.threshold}")
    if claim.test not in AT_LEAST_TESTS:
        raise ValueError(
            f"{prefix} needs test 'wilson' (one seed) or 't' (several seeds), got {claim.test!r}"
        )
    if not is_proportion_metric(claim.metric):
        raise ValueError(f"{prefix} needs a proportion metric, not {claim.metric!r}")


@dataclass(frozen=True)
class Claim:
    """A statement about strategies that a suite checks with a statistical test."""

    name: str
    """Shown in reports and verdicts.json."""
    metric: str
    """A key of result["metrics"] (e.g. "ood_exact_match"), "trace.<key>" for
    result["trace"]["summary"][<key>], or "analyses.<key>" for result["analyses"]["summary"][<key>]
    (the mechanism analyses' per-run numbers, docs/analyses.md)."""
    kind: str
    """"greater": a beats b by at least min_effect; "at_least" / "at_most": every strategy in
    `strategies` has metric >= / <= threshold."""
    test: str
    """kind greater: "welch" or "mannwhitney" (one value per seed) or "mcnemar" (paired per
    question). kind at_least: "t" (one-sample t over the seeds' values: a claim about the
    recipe) or "wilson" (the answers of one trained model: a suite with one seed only)."""
    why: str
    """One line: why the benchmark makes this claim."""
    a: str | None = None
    b: str | None = None
    strategies: tuple[str, ...] = ()
    threshold: float | None = None
    min_effect: float = 0.0
    """Smallest difference that matters, in the metric's units (points of accuracy as a
    proportion, e.g. 0.30)."""
    alpha: float = 0.05
    expect: str = "holds"
    """"holds", "does_not_hold", "report" (record the outcome, never fail), or "fails" (a known
    deviation from the paper, as pytest's xfail: expected not to hold here, for the reason the
    why gives; not holding is an expected failure, holding an unexpected pass)."""
    strict: bool = False
    """expect "fails" only: an unexpected pass fails the suite (pytest's xfail strict)."""

    def __post_init__(self) -> None:
        _check_claim_types(self)
        object.__setattr__(self, "strategies", tuple(self.strategies))
        for name in ("min_effect", "alpha"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))
        _check_claim_choices(self)
        if self.kind == "greater":
            _check_greater_claim(self)
        else:
            _check_threshold_claim(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """Build from a TOML table; unknown or missing keys are a ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a claim must be a table, got {type(data).__name__}")
        label = data.get("name", "<unnamed>")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(
                f"claim {label!r}: unknown key(s) {', '.join(map(str, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        missing = [key for key in REQUIRED_CLAIM_KEYS if key not in data]
        if missing:
            raise ValueError(f"claim {label!r}: missing key(s) {', '.join(missing)}")
        return cls(**data)


def check_claim_seeds(claim: Claim, n_seeds: int) -> None:
    """A ValueError when the claim's test does not fit the suite's number of seeds: an at_least
    claim with several seeds is decided on seed-level values ("t"), never by pooling their
    answers ("wilson"); "t" needs 2 or more seeds."""
    if claim.kind not in THRESHOLD_KINDS:
        return
    if claim.test == "wilson" and n_seeds > 1:
        raise ValueError(
            f"claim {claim.name!r}: test 'wilson' would pool the answers of {n_seeds} seeds as "
            "if independent; with several seeds use test = 't' (seed-level), wilson is for one"
        )
    if claim.test == "t" and n_seeds < 2:
        raise ValueError(
            f"claim {claim.name!r}: test 't' needs 2+ seeds, the suite has {n_seeds}; "
            "with one seed use test = 'wilson' (it speaks of that trained model only)"
        )


# ---------------------------------------------------------------------------------------------
# Evaluating claims


def _claim_verdict(
    claim: Claim,
    basis: DecisionBasis,
    interval: tuple[float, float, float],
    p_value: float | None,
    detail: str,
) -> Verdict:
    outcome = claim_outcome(p_value, basis)
    return Verdict(
        name=claim.name, kind="claim",
        status=verdict_status("claim", outcome, claim.expect, claim.strict),
        expect=claim.expect, outcome=outcome, test=claim.test, metric=claim.metric,
        effect=_finite_or_none(interval[0]), ci_low=_finite_or_none(interval[1]),
        ci_high=_finite_or_none(interval[2]), p_value=_finite_or_none(p_value),
        detail=detail, basis=basis, strict=claim.strict,
    )


def _inconclusive_claim(claim: Claim, reason: str) -> Verdict:
    """The data cannot decide: inconclusive, or "reported" (undecided) for a report-only claim."""
    return Verdict(
        name=claim.name, kind="claim",
        status=verdict_status("claim", "undecided", claim.expect, claim.strict),
        expect=claim.expect, outcome="undecided", test=claim.test, metric=claim.metric,
        detail=reason, strict=claim.strict,
    )


def _greater_basis(
    claim: Claim, level_reachable: bool, interval: tuple[float, float, float]
) -> DecisionBasis:
    diff, _, high = interval
    return DecisionBasis(
        alpha=claim.alpha,
        level_reachable=level_reachable,
        effect_large_enough=diff >= claim.min_effect,
        interval_rules_out=math.isfinite(high) and high < claim.min_effect,
    )


def _greater_across_seeds(claim: Claim, runs_a: Sequence[Run], runs_b: Sequence[Run]) -> Verdict:
    values_a, values_b = seed_values(runs_a, claim.metric), seed_values(runs_b, claim.metric)
    if isinstance(values_a, str) or isinstance(values_b, str):
        return _inconclusive_claim(claim, values_a if isinstance(values_a, str) else str(values_b))
    test = stats.welch_t if claim.test == "welch" else stats.mann_whitney
    result = test(values_a, values_b, "greater")
    interval = stats.mean_diff_interval(values_a, values_b, 1 - claim.alpha)
    reachable = result.level_reachable(claim.alpha)
    detail = (
        f"{claim.a} {_fmt(_mean(values_a))} vs {claim.b} {_fmt(_mean(values_b))} over "
        f"{len(values_a)} vs {len(values_b)} seeds; {claim.test} one-sided p {_fmt(result.p_value)}"
        f"{_unreachable_note(reachable, result.min_attainable_p, claim.alpha)}"
        f"{_note(result.note)}"
    )
    basis = _greater_basis(claim, reachable, interval)
    return _claim_verdict(claim, basis, interval, result.p_value, detail)


def _greater_paired(claim: Claim, runs_a: Sequence[Run], runs_b: Sequence[Run]) -> Verdict:
    pairs = paired_outcomes(runs_a, runs_b, claim.metric)
    if isinstance(pairs, str):
        return _inconclusive_claim(claim, pairs)
    result = stats.mcnemar_exact(pairs.a, pairs.b, "greater")
    interval = stats.paired_bootstrap_diff(pairs.a, pairs.b, 1 - claim.alpha)
    reachable = result.level_reachable(claim.alpha)
    detail = (
        f"{claim.a} {_fmt(_mean(pairs.a))} vs {claim.b} {_fmt(_mean(pairs.b))} on "
        f"{len(pairs.a)} paired answers from {pairs.n_runs} seed(s); discordant "
        f"{result.a_only} for {claim.a}, {result.b_only} for {claim.b}; "
        f"McNemar one-sided p {_fmt(result.p_value)}"
        f"{_unreachable_note(reachable, result.min_attainable_p, claim.alpha)}"
        f"{_unmatched_note(pairs)}"
    )
    basis = _greater_basis(claim, reachable, interval)
    return _claim_verdict(claim, basis, interval, result.p_value, detail)


def _run_proportion(run: Run, metric: str) -> tuple[int, int] | str:
    """(successes, n) of one run: from per-question data, else from value * n."""
    outcomes = question_outcomes(run, metric)
    if outcomes:
        return sum(outcomes.values()), len(outcomes)
    entry = (run.get("metrics") or {}).get(metric)
    value = metric_value(run, metric)
    count = entry.get("n") if isinstance(entry, Mapping) else None
    if value is None or not isinstance(count, int) or count <= 0:
        return f"run {run.get('run_id', '?')} has no per-question data or n for {metric}"
    return round(value * count), count


@dataclass(frozen=True)
class _AtLeastRow:
    """One strategy (on one model) against an at_least claim's threshold."""

    value: float
    low: float
    high: float
    p_value: float
    reachable: bool
    text: str


def _wilson_row(claim: Claim, label: str, runs: Sequence[Run]) -> _AtLeastRow | str:
    if len(runs) != 1:
        return (f"{label}: test 'wilson' speaks of one trained model, got {len(runs)} seeds; "
                "their answers are not pooled: use test 't' (seed-level)")
    counts = _run_proportion(runs[0], claim.metric)
    if isinstance(counts, str):
        return counts
    successes, n = counts
    threshold = float(claim.threshold)  # type: ignore[arg-type]
    low, high = stats.wilson_interval(successes, n, confidence=1 - claim.alpha)
    p_value = stats.wilson_score_p(successes, n, threshold, _alternative(claim))
    text = (f"{label} {_fmt(successes / n)} [{_fmt(low)}, {_fmt(high)}] n={n} p={_fmt(p_value)}, "
            f"Wilson over the answers of one trained model (seed {runs[0].get('seed')}): "
            "conditional on that model, silent on other seeds")
    return _AtLeastRow(successes / n, low, high, p_value, True, text)


def _seed_t_row(claim: Claim, label: str, runs: Sequence[Run]) -> _AtLeastRow | str:
    counts = [_run_proportion(run, claim.metric) for run in runs]
    problem = next((c for c in counts if isinstance(c, str)), None)
    if problem is not None:
        return problem
    pairs = [c for c in counts if not isinstance(c, str)]
    threshold = float(claim.threshold)  # type: ignore[arg-type]
    # Each seed's value carries at least the binomial noise of its answers (at the threshold):
    # seeds that agree exactly must not make the bound infinitely tight.
    floor = math.sqrt(threshold * (1 - threshold) / min(n for _, n in pairs))
    result = stats.one_sample_t([s / n for s, n in pairs], threshold, _alternative(claim),
                                sd_floor=floor, bounds=(0.0, 1.0))
    low, high = result.interval(1 - claim.alpha)
    low, high = max(0.0, low), min(1.0, high)  # a proportion's mean; NaN stays NaN
    reachable = result.level_reachable(claim.alpha)
    floored = f"; binomial floor {_fmt(floor)} used" if result.sd_floored else ""
    side, bound = (("lower", result.lower_bound(1 - claim.alpha)) if claim.kind == "at_least"
                   else ("upper", result.upper_bound(1 - claim.alpha)))
    text = (f"{label} {_fmt(result.mean)} (sd {_fmt(result.observed_sd)} over {len(pairs)} "
            f"seeds{floored}), seed-level one-sided {1 - claim.alpha:.0%} {side} bound "
            f"{_fmt(bound)}, t p={_fmt(result.p_value)}"
            f"{_unreachable_note(reachable, result.min_attainable_p, claim.alpha)}"
            f"{_note(result.note)}")
    return _AtLeastRow(result.mean, low, high, result.p_value, reachable, text)


def _alternative(claim: Claim) -> Any:
    """The one-sided alternative a threshold claim asserts: above (at_least) or below (at_most)."""
    return "greater" if claim.kind == "at_least" else "less"


def _at_least_rows(claim: Claim, groups: Mapping[str, Sequence[Run]]) -> list[_AtLeastRow] | str:
    """One row per strategy and model (a claim about a recipe holds on each model)."""
    decide = _wilson_row if claim.test == "wilson" else _seed_t_row
    rows = []
    for strategy in claim.strategies:
        by_model = _group_by(groups[strategy], lambda run: str(run.get("model")))
        for model in sorted(by_model):
            label = strategy if len(by_model) == 1 else f"{strategy}/{model}"
            row = decide(claim, label, by_model[model])
            if isinstance(row, str):
                return row
            rows.append(row)
    return rows


def _at_least(claim: Claim, groups: Mapping[str, Sequence[Run]]) -> Verdict:
    rows = _at_least_rows(claim, groups)
    if isinstance(rows, str):
        return _inconclusive_claim(claim, rows)
    threshold = float(claim.threshold)  # type: ignore[arg-type]
    below = claim.kind == "at_most"
    worst = (max if below else min)(rows, key=lambda row: row.value)
    # Every strategy must clear the threshold: the largest p-value decides (intersection-union).
    p_values = [row.p_value for row in rows]
    p_value = max(p_values) if all(math.isfinite(p) for p in p_values) else math.nan
    basis = DecisionBasis(claim.alpha, all(row.reachable for row in rows), True,
                          any(_interval_beyond(row, threshold, below) for row in rows))
    detail = f"threshold {_fmt(threshold)}; " + "; ".join(row.text for row in rows)
    return _claim_verdict(claim, basis, (worst.value, worst.low, worst.high), p_value, detail)


def _interval_beyond(row: _AtLeastRow, threshold: float, below: bool) -> bool:
    """The row's interval lies wholly on the wrong side of the threshold."""
    if below:
        return math.isfinite(row.low) and row.low > threshold
    return math.isfinite(row.high) and row.high < threshold


def evaluate_claim(claim: Claim, results: Sequence[Run]) -> Verdict:
    """Decide one claim from result.json dicts (grouped by result["strategy"])."""
    groups = _group_by(results, lambda run: run.get("strategy"))
    needed = (claim.a, claim.b) if claim.kind == "greater" else claim.strategies
    for strategy in needed:
        problem = _runs_problem(f"strategy {strategy!r}", groups.get(strategy, []))
        if problem:
            return _inconclusive_claim(claim, problem)
    if claim.kind in THRESHOLD_KINDS:
        return _at_least(claim, groups)
    runs_a, runs_b = groups[claim.a], groups[claim.b]
    if claim.test == "mcnemar":
        return _greater_paired(claim, runs_a, runs_b)
    return _greater_across_seeds(claim, runs_a, runs_b)


# ---------------------------------------------------------------------------------------------
# Trace claims under every trace definition


def common_definitions(claim: Claim, results: Sequence[Run]) -> list[str]:
    """The trace definitions every run recorded and whose summary holds the claim's key, the
    runs' main definition first; empty for a claim on anything but a per-definition trace key."""
    if not claim.metric.startswith(TRACE_PREFIX) or not results:
        return []
    key = claim.metric[len(TRACE_PREFIX):]
    traces = [run.get("trace") or {} for run in results]
    names: list[str] | None = None
    for trace in traces:
        held = [name for name, entry in (trace.get("definitions") or {}).items()
                if key in (entry.get("summary") or {})]
        names = held if names is None else [name for name in names if name in held]
    main = traces[0].get("definition")
    return sorted(names or [], key=lambda name: name != main)  # the main one first, else as found


def _under_definition(run: Run, name: str) -> Run:
    trace = run.get("trace") or {}
    summary = trace["definitions"][name]["summary"]
    return {**run, "trace": {**trace, "summary": summary}}


def evaluate_claim_by_definition(claim: Claim, results: Sequence[Run]) -> list[dict[str, Any]]:
    """The claim judged under each trace definition the runs recorded, Holm-corrected over the
    definitions (one family per claim): rows of definition, outcome, effect, p_value,
    p_adjusted. Empty when the claim is not about a per-definition trace key."""
    names = common_definitions(claim, results)
    if not names:
        return []
    verdicts = [evaluate_claim(claim, [_under_definition(run, name) for run in results])
                for name in names]
    adjusted = adjust_verdicts(verdicts, "holm")
    return [{"definition": name, "outcome": verdict.outcome, "effect": verdict.effect,
             "p_value": verdict.p_value, "p_adjusted": verdict.p_adjusted}
            for name, verdict in zip(names, adjusted, strict=True)]


def definitions_line(rows: Sequence[Mapping[str, Any]], main: str | None) -> str:
    """ "holds under 3 of 10 trace definitions (Holm over 10); under the main one
    (training/update/global): does not hold" """
    if not rows:
        return ""
    held = sum(row["outcome"] == "holds" for row in rows)
    line = f"holds under {held} of {len(rows)} trace definitions (Holm over {len(rows)})"
    main_row = next((row for row in rows if row["definition"] == main), None)
    if main_row is not None:
        line += f"; under the main one ({main}): {main_row['outcome'].replace('_', ' ')}"
    elif main is not None:
        line += f"; the main one ({main}) gives no value for it"
    return line
