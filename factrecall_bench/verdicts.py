"""Claims and regressions: turn result.json dicts into pass / fail / inconclusive / reported
verdicts.

A verdict is decided from a test's p-value and an interval: "holds" (or a regression) needs
significance *and* an effect of at least `min_effect`; a level the sample cannot reach is
undecided, never a pass. Multiple comparisons are corrected with Holm or Benjamini-Hochberg.
`verdict_status` is the one rule from an outcome to a status, and `status_label` the one way to
show a status to people: the terminal, report.md, JUnit and the TUI render them, never re-decide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from factrecall_bench import exit_codes, stats
from factrecall_bench.runfolder import VERDICTS_SCHEMA_VERSION

CLAIM_KINDS = ("greater", "at_least")
CLAIM_TESTS = ("welch", "mannwhitney", "mcnemar", "wilson", "t")
SEED_TESTS = ("welch", "mannwhitney")
# at_least: "wilson" pools the answers of one trained model (one seed); "t" tests the seed-level
# values of several. Neither pools seeds: a claim about a recipe has the seed as its unit.
AT_LEAST_TESTS = ("wilson", "t")
REGRESSION_TESTS = ("mcnemar", "welch", "mannwhitney")
EXPECTATIONS = ("holds", "does_not_hold", "report")
CORRECTIONS = ("holm", "bh", "none")
STATUSES = ("pass", "fail", "inconclusive", "reported")
"""A verdict's status. "reported": a claim the suite only reports (expect "report"), neither
passed nor failed; its outcome and effect say what the data showed."""
STATUS_EXIT_CODES = {"pass": exit_codes.OK, "reported": exit_codes.OK,
                     "fail": exit_codes.FAILED, "inconclusive": exit_codes.INCONCLUSIVE}
TRACE_PREFIX = "trace."
PER_QUESTION_SPLITS = ("id", "ood")
REQUIRED_CLAIM_KEYS = ("name", "metric", "kind", "test", "why")
# Outcomes of a regression check, mapped to the verdict status.
REGRESSION_STATUS = {"no_change": "pass", "changed": "fail", "undecided": "inconclusive"}

Run = Mapping[str, Any]
"""A result.json dict, or a baseline run (same keys, metrics as plain floats)."""


# ---------------------------------------------------------------------------------------------
# Claims


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    is_proportion = not claim.metric.startswith(TRACE_PREFIX)
    if claim.min_effect < 0 or (is_proportion and claim.min_effect >= 1):
        raise ValueError(f"{prefix}: min_effect must be in [0, 1), got {claim.min_effect}")


def _check_at_least_claim(claim: Claim) -> None:
    prefix = f"claim {claim.name!r}: kind 'at_least'"
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
    if claim.metric.startswith(TRACE_PREFIX):
        raise ValueError(f"{prefix} needs a proportion metric, not {claim.metric!r}")


@dataclass(frozen=True)
class Claim:
    """A statement about strategies that a suite checks with a statistical test."""

    name: str
    """Shown in reports and verdicts.json."""
    metric: str
    """A key of result["metrics"] (e.g. "ood_exact_match"), or "trace.<key>" for
    result["trace"]["summary"][<key>]."""
    kind: str
    """"greater": a beats b by at least min_effect; "at_least": every strategy in `strategies`
    has metric >= threshold."""
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
    """"holds", "does_not_hold", or "report" (record the outcome, never fail)."""

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
            _check_at_least_claim(self)

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
    if claim.kind != "at_least":
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
# Verdicts


@dataclass(frozen=True)
class DecisionBasis:
    """What a verdict's outcome depends on besides the p-value, so it can be re-decided after a
    multiple-comparison correction."""

    alpha: float
    level_reachable: bool
    """The sample can produce p < alpha at all."""
    effect_large_enough: bool
    """Claims: effect >= min_effect; regressions: |effect| >= min_effect."""
    interval_rules_out: bool
    """Claims: the interval shows the claim false; regressions: the interval lies within
    (-min_effect, +min_effect), i.e. any change is too small to matter."""
    identical: bool = False
    """Regressions: fresh and baseline data are exactly the same."""


@dataclass(frozen=True)
class Verdict:
    """One entry of verdicts.json."""

    name: str
    kind: str
    """"claim" or "regression"."""
    status: str
    """"pass", "fail", "inconclusive", or "reported" (a report-only claim); see STATUSES."""
    expect: str
    """Claims: holds / does_not_hold / report; regressions: no_change."""
    outcome: str
    """Claims: holds / does_not_hold / undecided; regressions: no_change / changed / undecided."""
    test: str
    metric: str
    effect: float | None = None
    """Claims "greater" and regressions: difference (a - b, fresh - baseline); claims
    "at_least": the lowest strategy's proportion (test "t": its mean over seeds)."""
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    detail: str = ""
    basis: DecisionBasis | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The verdicts.json entry (non-finite numbers become null); "label" is
        status_label's text, so readers can show it without knowing the rules."""
        keys = ("name", "kind", "status", "expect", "outcome", "test", "metric")
        entry: dict[str, Any] = {key: getattr(self, key) for key in keys}
        for key in ("effect", "ci_low", "ci_high", "p_value", "p_adjusted"):
            entry[key] = _finite_or_none(getattr(self, key))
        entry["detail"] = self.detail
        entry["label"] = status_label(entry)
        return entry


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


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _is_significant(p_value: float | None, alpha: float) -> bool:
    return p_value is not None and math.isfinite(p_value) and p_value < alpha


def claim_outcome(p_value: float | None, basis: DecisionBasis) -> str:
    """holds / does_not_hold / undecided for a claim."""
    significant = _is_significant(p_value, basis.alpha)
    if basis.level_reachable and significant and basis.effect_large_enough:
        return "holds"
    if basis.interval_rules_out:
        return "does_not_hold"
    return "undecided"


def claim_status(outcome: str, expect: str) -> str:
    """A claim's status: a report-only claim is "reported" whatever its outcome (it never
    passes, fails or holds up the suite); otherwise pass, fail or inconclusive."""
    if expect == "report":
        return "reported"
    if outcome == "undecided":
        return "inconclusive"
    return "pass" if outcome == expect else "fail"


def verdict_status(kind: str, outcome: str, expect: str) -> str:
    """The one rule from a verdict's outcome to its status (claims and regressions)."""
    if kind == "claim":
        return claim_status(outcome, expect)
    return REGRESSION_STATUS[outcome]


def _read(verdict: Mapping[str, Any] | object, key: str) -> Any:
    if isinstance(verdict, Mapping):
        return verdict.get(key)
    return getattr(verdict, key, None)


def status_label(verdict: Mapping[str, Any] | object) -> str:
    """What people see for a verdict's status (a verdicts.json entry or an object with the same
    fields): "pass", "fail", "inconclusive", or for a report-only claim its outcome and effect,
    e.g. "reported (does not hold, effect -0.105)". It renders the status, never decides it."""
    status = str(_read(verdict, "status"))
    if status != "reported":
        return status
    outcome = str(_read(verdict, "outcome") or "undecided").replace("_", " ")
    effect = _read(verdict, "effect")
    if not (_is_number(effect) and math.isfinite(effect)):
        return f"reported ({outcome})"
    if _read(verdict, "test") in AT_LEAST_TESTS:  # an at_least claim's effect is its lowest value
        return f"reported ({outcome}, lowest {effect:.3g})"
    return f"reported ({outcome}, effect {effect:+.3g})"


def regression_outcome(p_value: float | None, basis: DecisionBasis) -> str:
    """no_change / changed / undecided for a regression check."""
    if basis.identical:
        return "no_change"
    significant = _is_significant(p_value, basis.alpha)
    if basis.level_reachable and significant and basis.effect_large_enough:
        return "changed"
    if basis.level_reachable or basis.interval_rules_out:
        return "no_change"
    return "undecided"


def _redecide(verdict: Verdict, p_adjusted: float) -> Verdict:
    if verdict.basis is None:
        return replace(verdict, p_adjusted=p_adjusted)
    if verdict.kind == "claim":
        outcome = claim_outcome(p_adjusted, verdict.basis)
    else:
        outcome = regression_outcome(p_adjusted, verdict.basis)
    status = verdict_status(verdict.kind, outcome, verdict.expect)
    return replace(verdict, p_adjusted=p_adjusted, outcome=outcome, status=status)


def adjust_verdicts(verdicts: Sequence[Verdict], method: str = "holm") -> list[Verdict]:
    """Fill p_adjusted over the family of verdicts that have a p-value, and re-decide each with
    it. method: "holm" (family-wise error), "bh" (false discovery rate) or "none"."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {method!r}")
    tested = [i for i, v in enumerate(verdicts) if _finite_or_none(v.p_value) is not None]
    raw = [float(verdicts[i].p_value or 0.0) for i in tested]
    adjusted = raw
    if method == "holm":
        adjusted = stats.holm(raw)
    elif method == "bh":
        adjusted = stats.benjamini_hochberg(raw)
    result = list(verdicts)
    for index, p_adjusted in zip(tested, adjusted, strict=True):
        result[index] = _redecide(verdicts[index], p_adjusted)
    return result


def suite_exit_code(verdicts: Iterable[Verdict]) -> int:
    """OK when every verdict passed or was reported, FAILED on any fail, else INCONCLUSIVE on any
    inconclusive (exit_codes.combined's precedence)."""
    codes = []
    for verdict in verdicts:
        if verdict.status not in STATUS_EXIT_CODES:
            raise ValueError(f"verdict {verdict.name!r} has unknown status {verdict.status!r}")
        codes.append(STATUS_EXIT_CODES[verdict.status])
    return exit_codes.combined(codes) if codes else exit_codes.OK


def verdicts_document(suite: str, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The verdicts.json document for a suite."""
    return {
        "schema_version": VERDICTS_SCHEMA_VERSION,
        "suite": suite,
        "exit_code": suite_exit_code(verdicts),
        "verdicts": [verdict.to_dict() for verdict in verdicts],
    }


# ---------------------------------------------------------------------------------------------
# Reading runs


def split_of(metric: str) -> tuple[str, str] | None:
    """("ood", "exact_match") for "ood_exact_match"; None for metrics without per-question data."""
    split, _, key = metric.partition("_")
    return (split, key) if split in PER_QUESTION_SPLITS and key else None


def _as_float(value: object) -> float | None:
    if _is_number(value) and math.isfinite(value):  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    return None


def metric_value(run: Run, metric: str, attribute: str | None = None) -> float | None:
    """A metric's value in a result.json dict ({"value": ...}) or a baseline run (a float);
    "trace.<key>" reads run["trace"]["summary"]. None when missing or not finite."""
    if attribute is not None:
        per_metric = (run.get("per_attribute") or {}).get(metric) or {}
        return _as_float((per_metric.get(attribute) or {}).get("value"))
    value = (run.get("metrics") or {}).get(metric)
    if value is None and metric.startswith(TRACE_PREFIX):
        summary = (run.get("trace") or {}).get("summary") or {}
        value = summary.get(metric.removeprefix(TRACE_PREFIX))
    if isinstance(value, Mapping):
        value = value.get("value")
    return _as_float(value)


def question_outcomes(
    run: Run, metric: str, attribute: str | None = None
) -> dict[str, bool] | None:
    """{question_id: correct} from run["per_question"] for an id_*/ood_* metric, optionally only
    the questions of one attribute ("p17/birth_city" -> "birth_city"); None when missing."""
    location = split_of(metric)
    if location is None:
        return None
    block = (run.get("per_question") or {}).get(location[0]) or {}
    question_ids, values = block.get("question_ids"), block.get(location[1])
    if not isinstance(question_ids, list) or not isinstance(values, list):
        return None
    if len(question_ids) != len(values):
        return None
    return {
        str(qid): bool(value)
        for qid, value in zip(question_ids, values, strict=True)
        if attribute is None or str(qid).rsplit("/", 1)[-1] == attribute
    }


def run_failure(run: Run) -> str | None:
    """Why a run counts as failed (status "failed" or an error recorded), else None."""
    if run.get("status") == "failed" or run.get("error"):
        reason = run.get("reason") or run.get("error") or "run failed"
        return f"run {run.get('run_id', '?')} failed: {reason}"
    return None


def _group_by(runs: Iterable[Run], key: Callable[[Run], Any]) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def _runs_problem(label: str, runs: Sequence[Run]) -> str | None:
    """Why these runs cannot be used (none, or one failed), else None."""
    if not runs:
        return f"no results for {label}"
    failures = [reason for reason in map(run_failure, runs) if reason]
    if failures:
        return f"{label}: {failures[0]}"
    keys = [_seed_key(run) for run in runs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    return f"{label}: two results for model {twice[0]}, seed {twice[1]}" if twice else None


def _seed_key(run: Run) -> tuple[str, Any]:
    return (str(run.get("model")), run.get("seed"))


@dataclass(frozen=True)
class PairedOutcomes:
    """Per-question correctness of a and b on the same questions, pooled over matched seeds."""

    a: list[bool]
    b: list[bool]
    n_runs: int
    """Matched (model, seed) pairs of runs."""
    unmatched_questions: int


def _pair_two_runs(
    run_a: Run, run_b: Run, metric: str, attribute: str | None
) -> tuple[list[bool], list[bool], int] | str:
    outcomes_a = question_outcomes(run_a, metric, attribute)
    outcomes_b = question_outcomes(run_b, metric, attribute)
    if outcomes_a is None or outcomes_b is None:
        return f"no per-question data for {metric} in run {run_a.get('run_id', '?')}"
    common = [qid for qid in outcomes_a if qid in outcomes_b]
    unmatched = len(outcomes_a) + len(outcomes_b) - 2 * len(common)
    return [outcomes_a[q] for q in common], [outcomes_b[q] for q in common], unmatched


def paired_outcomes(
    runs_a: Sequence[Run], runs_b: Sequence[Run], metric: str, attribute: str | None = None
) -> PairedOutcomes | str:
    """Pair runs of a and b by (model, seed), then answers by question id; a string says why
    no pairs could be formed."""
    by_seed_b = {_seed_key(run): run for run in runs_b}
    a: list[bool] = []
    b: list[bool] = []
    n_runs = unmatched = 0
    for run_a in runs_a:
        run_b = by_seed_b.get(_seed_key(run_a))
        if run_b is None:
            continue
        paired = _pair_two_runs(run_a, run_b, metric, attribute)
        if isinstance(paired, str):
            return paired
        a.extend(paired[0])
        b.extend(paired[1])
        n_runs, unmatched = n_runs + 1, unmatched + paired[2]
    if not a:
        return f"no questions of {metric} answered in runs with matching model and seed"
    return PairedOutcomes(a, b, n_runs, unmatched)


def seed_values(
    runs: Sequence[Run], metric: str, attribute: str | None = None
) -> list[float] | str:
    """One metric value per run; a string names the first run that lacks it."""
    values = []
    for run in runs:
        value = metric_value(run, metric, attribute)
        if value is None:
            return f"run {run.get('run_id', '?')} has no value for {metric}"
        values.append(value)
    return values


# ---------------------------------------------------------------------------------------------
# Evaluating claims


def _fmt(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _note(text: str) -> str:
    return f"; {text}" if text else ""


def _unmatched_note(pairs: PairedOutcomes) -> str:
    if not pairs.unmatched_questions:
        return ""
    return f"; {pairs.unmatched_questions} question(s) answered by only one side were left out"


def _unreachable_note(level_reachable: bool, min_p: float, alpha: float) -> str:
    if level_reachable:
        return ""
    return f"; p < {alpha:g} not reachable with this sample (smallest possible p {_fmt(min_p)})"


def _claim_verdict(
    claim: Claim,
    basis: DecisionBasis,
    interval: tuple[float, float, float],
    p_value: float | None,
    detail: str,
) -> Verdict:
    outcome = claim_outcome(p_value, basis)
    return Verdict(
        name=claim.name, kind="claim", status=verdict_status("claim", outcome, claim.expect),
        expect=claim.expect, outcome=outcome, test=claim.test, metric=claim.metric,
        effect=_finite_or_none(interval[0]), ci_low=_finite_or_none(interval[1]),
        ci_high=_finite_or_none(interval[2]), p_value=_finite_or_none(p_value),
        detail=detail, basis=basis,
    )


def _inconclusive_claim(claim: Claim, reason: str) -> Verdict:
    """The data cannot decide: inconclusive, or "reported" (undecided) for a report-only claim."""
    return Verdict(
        name=claim.name, kind="claim", status=verdict_status("claim", "undecided", claim.expect),
        expect=claim.expect,
        outcome="undecided", test=claim.test, metric=claim.metric, detail=reason,
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


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
    p_value = stats.wilson_score_p(successes, n, threshold, "greater")
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
    result = stats.one_sample_t([s / n for s, n in pairs], threshold, "greater",
                                sd_floor=floor, bounds=(0.0, 1.0))
    low, high = result.interval(1 - claim.alpha)
    low, high = max(0.0, low), min(1.0, high)  # a proportion's mean; NaN stays NaN
    reachable = result.level_reachable(claim.alpha)
    floored = f"; binomial floor {_fmt(floor)} used" if result.sd_floored else ""
    text = (f"{label} {_fmt(result.mean)} (sd {_fmt(result.observed_sd)} over {len(pairs)} "
            f"seeds{floored}), seed-level one-sided {1 - claim.alpha:.0%} lower bound "
            f"{_fmt(result.lower_bound(1 - claim.alpha))}, t p={_fmt(result.p_value)}"
            f"{_unreachable_note(reachable, result.min_attainable_p, claim.alpha)}"
            f"{_note(result.note)}")
    return _AtLeastRow(result.mean, low, high, result.p_value, reachable, text)


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
    worst = min(rows, key=lambda row: row.value)
    # Every strategy must clear the threshold: the largest p-value decides (intersection-union).
    p_values = [row.p_value for row in rows]
    p_value = max(p_values) if all(math.isfinite(p) for p in p_values) else math.nan
    basis = DecisionBasis(claim.alpha, all(row.reachable for row in rows), True,
                          any(math.isfinite(row.high) and row.high < threshold for row in rows))
    detail = f"threshold {_fmt(threshold)}; " + "; ".join(row.text for row in rows)
    return _claim_verdict(claim, basis, (worst.value, worst.low, worst.high), p_value, detail)


def evaluate_claim(claim: Claim, results: Sequence[Run]) -> Verdict:
    """Decide one claim from result.json dicts (grouped by result["strategy"])."""
    groups = _group_by(results, lambda run: run.get("strategy"))
    needed = (claim.a, claim.b) if claim.kind == "greater" else claim.strategies
    for strategy in needed:
        problem = _runs_problem(f"strategy {strategy!r}", groups.get(strategy, []))
        if problem:
            return _inconclusive_claim(claim, problem)
    if claim.kind == "at_least":
        return _at_least(claim, groups)
    runs_a, runs_b = groups[claim.a], groups[claim.b]
    if claim.test == "mcnemar":
        return _greater_paired(claim, runs_a, runs_b)
    return _greater_across_seeds(claim, runs_a, runs_b)


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
