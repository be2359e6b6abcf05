"""Verdicts and the one rule that decides them.

A verdict is decided from a test's p-value and an interval: "holds" (or a regression) needs
significance *and* an effect of at least `min_effect`; a level the sample cannot reach is
undecided, never a pass. Multiple comparisons are corrected with Holm or Benjamini-Hochberg.
`verdict_status` is the one rule from an outcome to a status, and `status_label` the one way to
show a status to people: the terminal, report.md, JUnit and the TUI render them, never re-decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from factrecall_bench import exit_codes
from factrecall_bench.runfolder import VERDICTS_SCHEMA_VERSION
from factrecall_bench.verdicts import stats
from factrecall_bench.verdicts.evidence import PairedOutcomes, _is_number
from factrecall_bench.verdicts.vocabulary import (
    AT_LEAST_TESTS,
    CORRECTIONS,
    REGRESSION_STATUS,
    STATUS_EXIT_CODES,
)


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
    """"pass", "fail", "inconclusive", "reported" (a report-only claim) or "no_baseline" (a
    regression check of settings no baseline holds); see STATUSES."""
    expect: str
    """Claims: holds / does_not_hold / report / fails; regressions: no_change."""
    outcome: str
    """Claims: holds / does_not_hold / undecided; regressions: no_change / changed / undecided /
    no_baseline."""
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
    strict: bool = False
    """Claims expected to fail: an unexpected pass is a failure."""
    definitions: tuple[dict[str, Any], ...] = ()
    """Trace claims: the claim judged under each trace definition (definition, outcome, effect,
    p_value, p_adjusted: Holm over the definitions), the main definition first."""

    def to_dict(self) -> dict[str, Any]:
        """The verdicts.json entry (non-finite numbers become null); "label" is
        status_label's text, so readers can show it without knowing the rules."""
        keys = ("name", "kind", "status", "expect", "outcome", "test", "metric")
        entry: dict[str, Any] = {key: getattr(self, key) for key in keys}
        for key in ("effect", "ci_low", "ci_high", "p_value", "p_adjusted"):
            entry[key] = _finite_or_none(getattr(self, key))
        entry["detail"] = self.detail
        entry["label"] = status_label(entry)
        if self.definitions:
            entry["definitions"] = [dict(row) for row in self.definitions]
        return entry


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


def claim_status(outcome: str, expect: str, strict: bool = False) -> str:
    """A claim's status: a report-only claim is "reported" whatever its outcome (it never
    passes, fails or holds up the suite); a claim expected to fail is "xfail" when it does not
    hold and "xpass" when it holds ("fail" if strict); otherwise pass, fail or inconclusive."""
    if expect == "report":
        return "reported"
    if outcome == "undecided":
        return "inconclusive"
    if expect == "fails":
        if outcome == "does_not_hold":
            return "xfail"
        return "fail" if strict else "xpass"
    return "pass" if outcome == expect else "fail"


def verdict_status(kind: str, outcome: str, expect: str, strict: bool = False) -> str:
    """The one rule from a verdict's outcome to its status (claims and regressions)."""
    if kind == "claim":
        return claim_status(outcome, expect, strict)
    return REGRESSION_STATUS[outcome]


def _read(verdict: Mapping[str, Any] | object, key: str) -> Any:
    if isinstance(verdict, Mapping):
        return verdict.get(key)
    return getattr(verdict, key, None)


def status_label(verdict: Mapping[str, Any] | object) -> str:
    """What people see for a verdict's status (a verdicts.json entry or an object with the same
    fields): "pass", "fail", "inconclusive", "no baseline", or for a report-only claim its outcome
    and effect, e.g. "reported (does not hold, effect -0.105)". It renders the status, never
    decides it."""
    status = str(_read(verdict, "status"))
    if status in ("xfail", "xpass"):
        expected = "expected failure" if status == "xfail" else "unexpected pass"
        return f"{expected} ({str(_read(verdict, 'outcome')).replace('_', ' ')})"
    if status != "reported":
        return status.replace("_", " ")
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
    status = verdict_status(verdict.kind, outcome, verdict.expect, verdict.strict)
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
    """OK when every verdict passed, was reported or had no baseline for its settings, FAILED on
    any fail, else INCONCLUSIVE on any inconclusive (exit_codes.combined's precedence)."""
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
# Details: the numbers behind a verdict, as people read them (claims and regressions)


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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
