"""Tests of claims, regressions and their calibration (factrecall_bench.verdicts).

Calibration, measured by the simulations below (seeded; 3 seeds x 200 questions per comparison,
per-question accuracy ~ Beta(2, 1), alpha 0.05, exact McNemar on the pooled pairs, 1000 runs):
- false-alarm rate with no true change: 0.035 with min_effect 0.05, 0.041 with min_effect 0
  (the exact test alone), both within alpha; the seed-level Welch rule (5 vs 5 seeds): 0.047;
- power against a planted drop of exactly min_effect (0.05): 0.54 (the point estimate must reach
  min_effect, so power at the boundary is near one half by design); at 2 x min_effect: 0.98.
- at_least over 3 seeds x 600 answers, true recipe mean exactly at the threshold 0.2: the
  seed-level t rule passes 0.020 of them with a seed sd of 0.02 (0.001 with none; the binomial
  floor makes it conservative), pooled Wilson 0.174.
Run `pytest -s tests/test_verdicts.py -k calibration` to print the current numbers.

at_least claims decide on seed-level values when there are several seeds (test "t"), and pool
answers with Wilson only for one seed; a report-only claim is "reported", never passed or failed.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Any

import numpy as np
import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.suite import load_suite, parse_suite, shipped_suites
from factrecall_bench.verdicts import (
    Claim,
    DecisionBasis,
    Verdict,
    adjust_verdicts,
    check_claim_seeds,
    claim_outcome,
    compare_with_baseline,
    evaluate_claim,
    regression_outcome,
    stats,
    status_label,
    suite_exit_code,
    verdict_status,
    verdicts_document,
)
from factrecall_bench.verdicts.claims import definitions_line, evaluate_claim_by_definition
from factrecall_bench.verdicts.judging import judge_claims
from tests.conftest import TINY_SUITE

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")
VERDICT_KEYS = {"name", "kind", "status", "expect", "outcome", "test", "metric", "effect",
                "ci_low", "ci_high", "p_value", "p_adjusted", "detail", "label"}


def _question_ids(n: int, first_person: int = 0) -> list[str]:
    return [f"p{first_person + i // len(ATTRIBUTES)}/{ATTRIBUTES[i % len(ATTRIBUTES)]}"
            for i in range(n)]


OOD_PEOPLE_FROM = 100_000
"""OOD questions are about other people than ID questions, as in real results."""


def _proportion(correct: list[int]) -> dict[str, float]:
    low, high = stats.wilson_interval(sum(correct), len(correct))
    return {"value": sum(correct) / len(correct), "low": low, "high": high, "n": len(correct)}


def _per_attribute(correct: list[int]) -> dict[str, dict[str, float]]:
    by_attribute: dict[str, list[int]] = {}
    for qid, hit in zip(_question_ids(len(correct)), correct, strict=True):
        by_attribute.setdefault(qid.split("/")[1], []).append(hit)
    return {attribute: _proportion(hits) for attribute, hits in by_attribute.items()}


def make_result(
    strategy: str, seed: int, ood: list[int], model: str = "tiny-llama",
    trace: dict[str, float] | None = None, id_answers: list[int] | None = None,
) -> dict[str, Any]:
    """A result.json dict: OOD answers `ood` about P_test people, ID answers `id_answers` (all
    right unless given) about P_train people, so a test can tell which split was read."""
    id_answers = [1] * len(ood) if id_answers is None else id_answers
    return {
        "schema_version": 1, "run_id": f"{strategy}-{model}-s{seed}", "suite": "test",
        "strategy": strategy, "model": model, "seed": seed, "config_hash": f"h{seed}{strategy}",
        "metrics": {"ood_exact_match": _proportion(ood), "id_exact_match": _proportion(id_answers),
                    "bio_first_token_test": {"value": 0.5 + 0.01 * seed, "n": 50}},
        "per_attribute": {"ood_exact_match": _per_attribute(ood)},
        "per_question": {
            "id": {"question_ids": _question_ids(len(id_answers)), "exact_match": list(id_answers),
                   "first_token": list(id_answers)},
            "ood": {"question_ids": _question_ids(len(ood), OOD_PEOPLE_FROM),
                    "exact_match": list(ood), "first_token": list(ood)}},
        "trace": {"summary": trace} if trace is not None else None,
        "environment": {"python": "3.11.7", "git_revision": "abc123", "hardware": "cpu:x86_64",
                        "versions": {"torch": "2.4.0"}},
    }


def answers(rng: np.random.Generator, n: int, accuracy: float) -> list[int]:
    return (rng.random(n) < accuracy).astype(int).tolist()


def suite_results(seeds: int = 3, n: int = 120, accuracies: dict[str, float] | None = None,
                  seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    accuracies = accuracies or {"mixed": 0.7, "two-stage": 0.05}
    return [make_result(strategy, s, answers(rng, n, accuracy))
            for strategy, accuracy in accuracies.items() for s in range(seeds)]


def greater_claim(**overrides: Any) -> Claim:
    fields = {"name": "mixed beats two-stage OOD", "metric": "ood_exact_match", "kind": "greater",
              "a": "mixed", "b": "two-stage", "min_effect": 0.3, "test": "welch",
              "why": "mixed training teaches extraction"}
    return Claim.from_dict({**fields, **overrides})


def at_least_claim(**overrides: Any) -> Claim:
    fields = {"name": "mixed recalls OOD", "metric": "ood_exact_match", "kind": "at_least",
              "strategies": ["mixed"], "threshold": 0.5, "test": "wilson", "why": "it learns"}
    return Claim.from_dict({**fields, **overrides})


# ---------------------------------------------------------------------------------------------
# Claim validation


def test_claim_from_dict_builds_a_validated_claim() -> None:
    claim = greater_claim(alpha=0.01, expect="report")
    assert (claim.a, claim.b, claim.alpha, claim.expect) == ("mixed", "two-stage", 0.01, "report")
    assert at_least_claim(strategies=["mixed", "two-stage"]).strategies == ("mixed", "two-stage")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"colour": "red"}, "unknown key"),
    ({"kind": "bigger"}, "kind must be one of"),
    ({"test": "ztest"}, "test must be one of"),
    ({"b": "mixed"}, "two different strategies"),
    ({"alpha": 1.5}, "alpha must be in"),
    ({"alpha": "0.05"}, "alpha must be a number"),
    ({"expect": "maybe"}, "expect must be one of"),
    ({"why": "two\nlines"}, "one line"),
    ({"test": "mcnemar", "metric": "bio_first_token_test"}, "id_\\* or ood_\\* metric"),
    ({"test": "wilson"}, "not wilson"),
    ({"test": "t"}, "not t"),
    ({"min_effect": 1.5}, "min_effect must be in"),
    ({"threshold": 0.5}, "not strategies or threshold"),
])
def test_bad_greater_claims_are_rejected_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        greater_claim(**overrides)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"threshold": 1.0}, "threshold in \\(0, 1\\)"),
    ({"strategies": "mixed"}, "strategies must be a list"),
    ({"strategies": []}, "non-empty list"),
    ({"test": "welch"}, "needs test 'wilson'"),
    ({"metric": "trace.shared_count@0.01"}, "proportion metric"),
    ({"min_effect": 0.1}, "not a, b or min_effect"),
])
def test_bad_at_least_claims_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        at_least_claim(**overrides)


def test_claim_missing_keys_are_named() -> None:
    with pytest.raises(ValueError, match="missing key\\(s\\) test, why"):
        Claim.from_dict({"name": "x", "metric": "ood_exact_match", "kind": "greater"})


# ---------------------------------------------------------------------------------------------
# Evaluating claims


def test_clear_welch_claim_holds() -> None:
    verdict = evaluate_claim(greater_claim(), suite_results())
    assert (verdict.status, verdict.outcome, verdict.kind) == ("pass", "holds", "claim")
    assert verdict.effect == pytest.approx(0.65, abs=0.1)
    assert verdict.ci_low is not None and verdict.ci_low > 0.3
    assert verdict.p_value is not None and verdict.p_value < 0.001


def test_mann_whitney_three_vs_three_is_inconclusive_never_pass() -> None:
    verdict = evaluate_claim(greater_claim(test="mannwhitney"), suite_results(seeds=3))
    assert verdict.p_value == pytest.approx(0.05)
    assert (verdict.status, verdict.outcome) == ("inconclusive", "undecided")
    assert "not reachable" in verdict.detail


def test_mann_whitney_with_five_seeds_each_can_hold() -> None:
    verdict = evaluate_claim(greater_claim(test="mannwhitney"), suite_results(seeds=5))
    assert verdict.status == "pass"
    assert verdict.p_value == pytest.approx(1 / 252)


def test_mcnemar_claim_pools_paired_answers_over_seeds() -> None:
    verdict = evaluate_claim(greater_claim(test="mcnemar"), suite_results())
    assert verdict.status == "pass"
    assert "360 paired answers from 3 seed(s)" in verdict.detail


def test_claim_the_data_contradict_fails_or_passes_by_expectation() -> None:
    results = suite_results()
    backwards = {"a": "two-stage", "b": "mixed", "name": "two-stage beats mixed"}
    for test in ("welch", "mcnemar"):
        failed = evaluate_claim(greater_claim(test=test, **backwards), results)
        assert (failed.status, failed.outcome) == ("fail", "does_not_hold")
        expected = evaluate_claim(greater_claim(test=test, expect="does_not_hold", **backwards),
                                  results)
        assert expected.status == "pass"


def test_small_difference_is_not_enough_for_min_effect() -> None:
    results = suite_results(n=2000, accuracies={"mixed": 0.62, "two-stage": 0.55})
    verdict = evaluate_claim(greater_claim(test="mcnemar"), results)
    assert verdict.outcome == "does_not_hold"
    assert verdict.status == "fail"


def test_report_claims_are_reported_never_passed_with_outcome_and_effect() -> None:
    # Was "pass" (the terminal said "report (undecided)" while report.md said pass): a claim the
    # suite only reports now has its own status, and its label carries outcome and effect.
    verdict = evaluate_claim(greater_claim(expect="report", test="mcnemar",
                                           a="two-stage", b="mixed"), suite_results())
    assert (verdict.status, verdict.outcome) == ("reported", "does_not_hold")
    assert verdict.effect is not None and verdict.effect < 0
    entry = verdict.to_dict()
    label = f"reported (does not hold, effect {verdict.effect:+.3g})"
    assert entry["label"] == status_label(verdict) == label
    no_data = evaluate_claim(greater_claim(expect="report"), suite_results()[:3])
    assert (no_data.status, no_data.outcome) == ("reported", "undecided")
    assert status_label(no_data.to_dict()) == "reported (undecided)"
    holds = evaluate_claim(greater_claim(expect="report"), suite_results())
    assert (holds.status, holds.outcome) == ("reported", "holds")
    assert suite_exit_code([verdict, no_data, holds]) == 0


def test_one_function_decides_every_status() -> None:
    assert [verdict_status("claim", outcome, "holds") for outcome in
            ("holds", "does_not_hold", "undecided")] == ["pass", "fail", "inconclusive"]
    assert {verdict_status("claim", outcome, "report") for outcome in
            ("holds", "does_not_hold", "undecided")} == {"reported"}
    assert [verdict_status("regression", outcome, "no_change") for outcome in
            ("no_change", "changed", "undecided")] == ["pass", "fail", "inconclusive"]
    assert [status_label({"status": status}) for status in ("pass", "fail", "inconclusive")] == [
        "pass", "fail", "inconclusive"]
    reported = {"status": "reported", "outcome": "holds", "effect": 0.12, "test": "welch"}
    assert status_label(reported) == "reported (holds, effect +0.12)"
    at_least = {**reported, "outcome": "does_not_hold", "test": "wilson"}
    assert status_label(at_least) == "reported (does not hold, lowest 0.12)"


def test_missing_or_failed_strategy_is_inconclusive_with_a_reason() -> None:
    only_mixed = [r for r in suite_results() if r["strategy"] == "mixed"]
    verdict = evaluate_claim(greater_claim(), only_mixed)
    assert verdict.status == "inconclusive"
    assert "two-stage" in verdict.detail
    failed = suite_results()
    failed[-1] = {**failed[-1], "status": "failed", "reason": "loss diverged"}
    verdict = evaluate_claim(greater_claim(), failed)
    assert verdict.status == "inconclusive"
    assert "loss diverged" in verdict.detail


def test_duplicate_runs_and_unmatched_questions_are_reported() -> None:
    results = suite_results()
    verdict = evaluate_claim(greater_claim(), [*results, results[0]])
    assert verdict.status == "inconclusive"
    assert "two results for model tiny-llama, seed 0" in verdict.detail
    shorter = [make_result("two-stage", r["seed"], r["per_question"]["ood"]["exact_match"][:100])
               if r["strategy"] == "two-stage" else r for r in results]
    verdict = evaluate_claim(greater_claim(test="mcnemar"), shorter)
    assert "300 paired answers" in verdict.detail
    assert "60 question(s) answered by only one side" in verdict.detail


def test_missing_metric_is_inconclusive() -> None:
    verdict = evaluate_claim(greater_claim(metric="trace.shared_count@0.01"), suite_results())
    assert verdict.status == "inconclusive"
    assert "no value for trace.shared_count@0.01" in verdict.detail


def test_trace_metric_claim_reads_the_trace_summary() -> None:
    rng = np.random.default_rng(1)
    results = [make_result("mixed", s, answers(rng, 30, 0.7),
                           trace={"shared_count@0.01": 1800.0 + 40 * s}) for s in range(4)]
    results += [make_result("two-stage", s, answers(rng, 30, 0.1),
                            trace={"shared_count@0.01": 900.0 + 35 * s}) for s in range(4)]
    claim = greater_claim(metric="trace.shared_count@0.01", min_effect=500)
    verdict = evaluate_claim(claim, results)
    assert verdict.status == "pass"
    assert verdict.effect == pytest.approx(1800 + 60 - 900 - 52.5)


def test_welch_with_constant_different_seeds_is_inconclusive() -> None:
    results = [make_result("mixed", s, [1] * 10) for s in range(3)]
    results += [make_result("two-stage", s, [0] * 10) for s in range(3)]
    verdict = evaluate_claim(greater_claim(), results)
    assert verdict.status == "inconclusive"
    assert "zero variance" in verdict.detail
    assert evaluate_claim(greater_claim(test="mcnemar"), results).status == "pass"


@pytest.mark.parametrize(("threshold", "status", "outcome"), [
    (0.5, "pass", "holds"), (0.9, "fail", "does_not_hold"), (0.7, "inconclusive", "undecided"),
])
def test_at_least_with_one_seed_compares_the_wilson_interval_with_the_threshold(
    threshold: float, status: str, outcome: str
) -> None:
    # Was 3 seeds x 100 pooled; Wilson now takes one trained model, and says so in the detail.
    results = [make_result("mixed", 0, [1] * 210 + [0] * 90)]
    verdict = evaluate_claim(at_least_claim(threshold=threshold), results)
    assert (verdict.status, verdict.outcome) == (status, outcome)
    low, high = stats.wilson_interval(210, 300, confidence=0.95)
    assert (verdict.effect, verdict.ci_low, verdict.ci_high) == pytest.approx((0.7, low, high))
    assert "one trained model (seed 0): conditional on that model" in verdict.detail


def _seeds_at(strategy: str, accuracies: list[float], n: int = 600) -> list[dict[str, Any]]:
    return [make_result(strategy, seed, [1] * round(a * n) + [0] * (n - round(a * n)))
            for seed, a in enumerate(accuracies)]


# The CPU suite's two-stage OOD exact match over seeds 0-2 (baselines/cpu.json).
TWO_STAGE_OOD = [0.2433, 0.25, 0.2067]


def test_at_least_over_seeds_decides_on_seed_level_values_not_pooled_answers() -> None:
    results = _seeds_at("two-stage", TWO_STAGE_OOD)
    claim = at_least_claim(strategies=["two-stage"], threshold=0.2, test="t")
    pooled = sum(round(a * 600) for a in TWO_STAGE_OOD)
    assert stats.wilson_score_p(pooled, 1800, 0.2, "greater") < 0.01  # pooled: would pass
    verdict = evaluate_claim(claim, results)
    assert (verdict.status, verdict.outcome) == ("inconclusive", "undecided")
    assert verdict.p_value == pytest.approx(0.066, abs=0.002)
    assert "seed-level one-sided 95% lower bound 0.194" in verdict.detail
    # The same claim with wilson does not pool the 3 seeds: it cannot decide, and says why.
    wilson = evaluate_claim(at_least_claim(strategies=["two-stage"], threshold=0.2), results)
    assert wilson.status == "inconclusive" and "not pooled: use test 't'" in wilson.detail


def test_at_least_over_seeds_holds_when_the_seed_level_bound_clears_the_threshold() -> None:
    results = _seeds_at("mixed", [1.0, 1.0, 1.0]) + _seeds_at("two-stage", [0.9867, 0.9883, 0.99])
    claim = at_least_claim(strategies=["mixed", "two-stage"], threshold=0.95, test="t")
    verdict = evaluate_claim(claim, results)
    # Identical seeds would give an infinitely tight bound: the binomial floor keeps it honest.
    assert (verdict.status, verdict.effect) == ("pass", pytest.approx(0.988, abs=1e-3))
    assert "binomial floor 0.0089 used" in verdict.detail
    assert verdict.p_value is not None and 0.001 < verdict.p_value < 0.05
    low = evaluate_claim(at_least_claim(threshold=0.95, test="t"), _seeds_at("mixed", [0.5] * 3))
    assert (low.status, low.outcome) == ("fail", "does_not_hold")


def test_at_least_over_seeds_cannot_decide_when_the_level_is_out_of_reach() -> None:
    # 3 seeds of 10 questions each: even all correct cannot reach p < 0.05 against 0.9.
    results = _seeds_at("mixed", [1.0, 1.0, 1.0], n=10)
    verdict = evaluate_claim(at_least_claim(threshold=0.9, test="t"), results)
    assert (verdict.status, verdict.outcome) == ("inconclusive", "undecided")
    assert "not reachable" in verdict.detail


def test_at_least_holds_on_each_model_separately() -> None:
    results = _seeds_at("mixed", [0.9, 0.91, 0.92])
    results += [{**r, "model": "tiny-neox"} for r in _seeds_at("mixed", [0.4, 0.42, 0.41])]
    verdict = evaluate_claim(at_least_claim(threshold=0.8, test="t"), results)
    assert verdict.status == "fail"
    assert "mixed/tiny-llama 0.91" in verdict.detail and "mixed/tiny-neox 0.41" in verdict.detail


def test_wilson_with_several_seeds_is_a_suite_error_and_t_needs_two_seeds() -> None:
    with pytest.raises(ValueError, match="pool the answers of 3 seeds"):
        check_claim_seeds(at_least_claim(), 3)
    with pytest.raises(ValueError, match="needs 2\\+ seeds"):
        check_claim_seeds(at_least_claim(test="t"), 1)
    check_claim_seeds(at_least_claim(), 1)
    check_claim_seeds(greater_claim(), 1)
    raw = tomllib.loads(TINY_SUITE.read_text())
    raw.update(seeds=[0, 1, 2], claims=[{**at_least_claim_fields(), "test": "wilson"}])
    with pytest.raises(UserError, match="use test = 't'"):  # on load, before any run
        parse_suite(raw, "tiny.toml")


def test_every_shipped_suite_decides_at_least_claims_without_pooling_seeds() -> None:
    for name in sorted(shipped_suites()):
        suite = load_suite(name)
        for claim in suite.claims:  # parsing raised on wilson with several seeds
            if claim.kind == "at_least":
                assert claim.test == ("wilson" if len(suite.seeds) == 1 else "t"), name


def at_least_claim_fields() -> dict[str, Any]:
    return {"name": "mixed recalls OOD", "metric": "ood_exact_match", "kind": "at_least",
            "strategies": ["mixed"], "threshold": 0.5, "test": "t", "why": "it learns"}


def test_at_least_needs_every_strategy_and_falls_back_to_value_times_n() -> None:
    results = suite_results(accuracies={"mixed": 0.8, "two-stage": 0.75}, n=200)
    for result in results:
        del result["per_question"]
    claim = at_least_claim(strategies=["mixed", "two-stage"], threshold=0.6, test="t")
    assert evaluate_claim(claim, results).status == "pass"
    results += [make_result("naive", s, [0] * 100) for s in range(3)]
    claim = at_least_claim(strategies=["mixed", "two-stage", "naive"], threshold=0.6, test="t")
    verdict = evaluate_claim(claim, results)
    assert verdict.status == "fail" and verdict.effect == 0.0
    assert "naive 0 " in verdict.detail


def _trace_results(metric: str, mixed: list[float], two_stage: list[float]) -> list[dict[str, Any]]:
    return [make_result(strategy, seed, [1, 0], trace={metric: value})
            for strategy, values in (("mixed", mixed), ("two-stage", two_stage))
            for seed, value in enumerate(values)]


def test_claims_of_one_suite_are_holm_corrected_together() -> None:
    """Issue 20's seam: two claims that each pass alone are not both passed by the suite."""
    first = _trace_results("score_a", [0.9, 1.0, 1.1], [0.7, 0.8, 0.9])
    second = _trace_results("score_b", [1.0, 1.1, 1.25], [0.8, 0.9, 1.0])
    results = [{**a, "trace": {"summary": {**a["trace"]["summary"], **b["trace"]["summary"]}}}
               for a, b in zip(first, second, strict=True)]
    claims = [{"name": f"mixed scores higher on {key}", "metric": f"trace.{key}",
               "kind": "greater", "a": "mixed", "b": "two-stage", "min_effect": 0.0,
               "test": "welch", "why": "seam test"} for key in ("score_a", "score_b")]
    alone = [evaluate_claim(Claim.from_dict(claim), results) for claim in claims]
    assert [v.status for v in alone] == ["pass", "pass"]
    assert all(v.p_value is not None and 0.025 < v.p_value < 0.05 for v in alone)
    together = judge_claims(tuple(map(Claim.from_dict, claims)), results)
    assert [v.status for v in together] != ["pass", "pass"]
    assert all(v.p_adjusted is not None and v.p_adjusted >= 0.05 for v in together)


# ---------------------------------------------------------------------------------------------
# Verdicts, corrections, exit codes


def _verdict(p_value: float, status: str = "pass") -> Verdict:
    basis = DecisionBasis(alpha=0.05, level_reachable=True, effect_large_enough=True,
                          interval_rules_out=False)
    return Verdict(name=f"claim p={p_value}", kind="claim", status=status, expect="holds",
                   outcome="holds", test="welch", metric="ood_exact_match", effect=0.4,
                   ci_low=0.2, ci_high=0.6, p_value=p_value, basis=basis)


def test_holm_correction_can_turn_a_pass_into_inconclusive_and_bh_is_less_strict() -> None:
    verdicts = [_verdict(0.03), _verdict(0.04)]
    holm = adjust_verdicts(verdicts, "holm")
    assert [v.p_adjusted for v in holm] == pytest.approx([0.06, 0.06])
    assert [v.status for v in holm] == ["inconclusive", "inconclusive"]
    bh = adjust_verdicts(verdicts, "bh")
    assert [v.p_adjusted for v in bh] == pytest.approx([0.04, 0.04])
    assert [v.status for v in bh] == ["pass", "pass"]
    assert adjust_verdicts(verdicts, "none")[0].p_adjusted == 0.03
    with pytest.raises(ValueError):
        adjust_verdicts(verdicts, "bonferroni")


def test_verdicts_without_p_value_are_left_out_of_the_family() -> None:
    no_p = Verdict(name="x", kind="claim", status="inconclusive", expect="holds",
                   outcome="undecided", test="welch", metric="m", detail="no results")
    adjusted = adjust_verdicts([no_p, _verdict(0.03)], "holm")
    assert adjusted[0] == no_p
    assert adjusted[1].p_adjusted == pytest.approx(0.03)


def test_an_unreachable_level_never_decides_even_with_a_small_p() -> None:
    unreachable = DecisionBasis(alpha=0.05, level_reachable=False, effect_large_enough=True,
                                interval_rules_out=False)
    assert claim_outcome(0.001, unreachable) == "undecided"
    assert regression_outcome(0.001, unreachable) == "undecided"
    reachable = DecisionBasis(alpha=0.05, level_reachable=True, effect_large_enough=True,
                              interval_rules_out=False)
    assert claim_outcome(0.001, reachable) == "holds"
    assert regression_outcome(0.001, reachable) == "changed"
    assert regression_outcome(0.2, reachable) == "no_change"
    assert claim_outcome(math.nan, reachable) == "undecided"


@pytest.mark.parametrize(("statuses", "code"), [
    ([], 0), (["pass", "pass"], 0), (["pass", "inconclusive"], 3), (["inconclusive", "fail"], 1),
    (["reported", "pass"], 0), (["reported", "inconclusive"], 3), (["reported", "fail"], 1),
])
def test_suite_exit_code(statuses: list[str], code: int) -> None:
    verdicts = [_verdict(0.01, status) for status in statuses]
    assert suite_exit_code(verdicts) == code


def test_verdict_to_dict_follows_the_verdicts_json_format() -> None:
    verdict = evaluate_claim(greater_claim(), suite_results())
    entry = verdict.to_dict()
    assert set(entry) == VERDICT_KEYS
    nan_verdict = Verdict(name="n", kind="claim", status="inconclusive", expect="holds",
                          outcome="undecided", test="welch", metric="m", effect=math.nan)
    assert nan_verdict.to_dict()["effect"] is None
    document = verdicts_document("cpu", [verdict, nan_verdict])
    assert document["exit_code"] == 3 and document["schema_version"] == 1
    json.dumps(document, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Regressions


def as_baseline(results: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [{**r, "metrics": {k: v["value"] for k, v in r["metrics"].items()}} for r in results]
    return {"runs": runs}


REGRESSION_METRICS = ["ood_exact_match", "id_exact_match", "bio_first_token_test"]


def test_identical_results_pass() -> None:
    results = suite_results()
    verdicts = compare_with_baseline(results, as_baseline(results), REGRESSION_METRICS,
                                     min_effect=0.05, alpha=0.05)
    assert len(verdicts) == 6
    assert {v.status for v in verdicts} == {"pass"}
    assert {v.outcome for v in verdicts} == {"no_change"}
    assert {v.kind for v in verdicts} == {"regression"}
    assert suite_exit_code(verdicts) == 0
    bio = [v for v in verdicts if v.metric == "bio_first_token_test"]
    assert {v.test for v in bio} == {"welch"}
    assert "no per-question data" in bio[0].detail


def test_planted_regression_fails_and_names_the_metric() -> None:
    baseline = suite_results(seed=0)
    rng = np.random.default_rng(9)
    fresh = [make_result(r["strategy"], r["seed"], answers(rng, 120, 0.2))
             if r["strategy"] == "mixed" else r for r in baseline]
    verdicts = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"],
                                     min_effect=0.05, alpha=0.05)
    by_name = {v.name: v for v in verdicts}
    regression = by_name["mixed/tiny-llama ood_exact_match"]
    assert (regression.status, regression.outcome) == ("fail", "changed")
    assert "ood_exact_match dropped by" in regression.detail
    assert regression.effect is not None and regression.effect < -0.4
    assert regression.p_adjusted is not None and regression.p_adjusted < 1e-10
    assert by_name["two-stage/tiny-llama ood_exact_match"].status == "pass"
    assert suite_exit_code(verdicts) == 1


def test_large_improvement_is_flagged_with_its_direction() -> None:
    baseline = suite_results(seed=0)
    rng = np.random.default_rng(4)
    fresh = [make_result(r["strategy"], r["seed"], answers(rng, 120, 0.6))
             if r["strategy"] == "two-stage" else r for r in baseline]
    verdicts = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"], 0.05,
                                     0.05)
    improved = next(v for v in verdicts if v.name.startswith("two-stage"))
    assert improved.status == "fail" and "rose by" in improved.detail


def _flip(result: dict[str, Any], count: int) -> dict[str, Any]:
    answered = list(result["per_question"]["ood"]["exact_match"])
    for index in range(count):
        answered[index] = 1 - answered[index]
    return make_result(result["strategy"], result["seed"], answered)


def test_a_few_flipped_answers_pass_because_the_interval_rules_out_min_effect() -> None:
    baseline = suite_results(accuracies={"mixed": 0.7})
    fresh = [_flip(baseline[0], 2)] + baseline[1:]
    verdict, = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"], 0.05,
                                     0.05)
    assert "not reachable" in verdict.detail
    assert verdict.ci_low is not None and verdict.ci_low > -0.05
    assert verdict.status == "pass"


def test_too_few_questions_to_reach_alpha_is_inconclusive_never_pass() -> None:
    baseline = suite_results(accuracies={"mixed": 0.5}, n=4)
    fresh = [_flip(baseline[0], 3)] + baseline[1:]
    verdict, = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"], 0.05,
                                     0.05)
    assert (verdict.status, verdict.outcome) == ("inconclusive", "undecided")


def test_mann_whitney_three_seeds_cannot_decide_a_regression() -> None:
    baseline = suite_results(accuracies={"mixed": 0.7})
    rng = np.random.default_rng(2)
    fresh = [make_result("mixed", s, answers(rng, 120, 0.1)) for s in range(3)]
    verdict, = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"], 0.05,
                                     0.05, test="mannwhitney")
    assert verdict.status == "inconclusive"
    welch, = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"], 0.05,
                                   0.05, test="welch")
    assert welch.status == "fail"


def test_unmatched_strategies_are_inconclusive() -> None:
    results = suite_results()
    baseline = as_baseline([r for r in results if r["strategy"] == "mixed"])
    fresh = [r for r in results if r["strategy"] == "two-stage"]
    verdicts = compare_with_baseline(fresh, baseline, ["ood_exact_match"], 0.05, 0.05)
    assert [v.status for v in verdicts] == ["inconclusive", "inconclusive"]
    details = " | ".join(v.detail for v in verdicts)
    assert "no results for fresh mixed" in details
    assert verdicts[1].name == "two-stage/tiny-llama baseline"
    assert verdicts[1].detail.startswith("no baseline for these settings: ")


def test_per_attribute_regression_is_found_where_the_total_hides_it() -> None:
    baseline = suite_results(accuracies={"mixed": 0.8}, n=240)
    fresh = []
    for result in baseline:
        answered = list(result["per_question"]["ood"]["exact_match"])
        answered = [0 if qid.endswith("/birth_date") else hit for qid, hit in
                    zip(result["per_question"]["ood"]["question_ids"], answered, strict=True)]
        fresh.append(make_result("mixed", result["seed"], answered))
    verdicts = compare_with_baseline(fresh, as_baseline(baseline), ["ood_exact_match"],
                                     min_effect=0.2, alpha=0.05, per_attribute=True)
    by_name = {v.name: v for v in verdicts}
    assert len(verdicts) == 1 + len(ATTRIBUTES)
    assert by_name["mixed/tiny-llama ood_exact_match"].status == "pass"
    assert by_name["mixed/tiny-llama ood_exact_match[birth_date]"].status == "fail"
    assert by_name["mixed/tiny-llama ood_exact_match[major]"].status == "pass"


# ---------------------------------------------------------------------------------------------
# Calibration by simulation

N_SIMULATIONS = 1000
N_QUESTIONS = 200
N_SEEDS = 3
ALPHA = 0.05
MIN_EFFECT = 0.05
BETA_A, BETA_B = 2.0, 1.0  # per-question accuracy; mean 2/3
QUESTION_IDS = _question_ids(N_QUESTIONS)


def _simulated_run(strategy: str, seed: int, correct: np.ndarray) -> dict[str, Any]:
    block = {"question_ids": QUESTION_IDS, "exact_match": correct.astype(int).tolist()}
    return {"run_id": f"{strategy}-s{seed}", "strategy": strategy, "model": "m", "seed": seed,
            "per_question": {"ood": block}}


def _simulated_comparison(rng: np.random.Generator, drop: float) -> tuple[list, dict]:
    """Baseline and fresh runs of one strategy whose accuracy differs by `drop` on average."""
    fresh, baseline = [], []
    for seed in range(N_SEEDS):
        accuracy = rng.beta(BETA_A, BETA_B, N_QUESTIONS)
        baseline.append(_simulated_run("s", seed, rng.random(N_QUESTIONS) < accuracy))
        forget = rng.random(N_QUESTIONS) < drop / (BETA_A / (BETA_A + BETA_B))
        fresh.append(_simulated_run("s", seed, (rng.random(N_QUESTIONS) < accuracy) & ~forget))
    return fresh, {"runs": baseline}


def flag_rate(drop: float, min_effect: float, seed: int, n: int = N_SIMULATIONS) -> float:
    """Share of n simulated comparisons that the regression rule flags (status fail)."""
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(n):
        fresh, baseline = _simulated_comparison(rng, drop)
        verdict, = compare_with_baseline(fresh, baseline, ["ood_exact_match"], min_effect, ALPHA)
        flagged += verdict.status == "fail"
    return flagged / n


def _monte_carlo_bound(rate: float) -> float:
    """rate plus three Monte Carlo standard errors of a rate estimated from N_SIMULATIONS."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / N_SIMULATIONS)


def test_calibration_false_alarm_rate_within_alpha() -> None:
    with_min_effect = flag_rate(drop=0.0, min_effect=MIN_EFFECT, seed=11)
    test_alone = flag_rate(drop=0.0, min_effect=0.0, seed=12)
    print(f"\nfalse-alarm rate over {N_SIMULATIONS} null comparisons: {with_min_effect:.3f} "
          f"(min_effect {MIN_EFFECT}), {test_alone:.3f} (min_effect 0)")
    assert with_min_effect <= _monte_carlo_bound(ALPHA)
    assert test_alone <= _monte_carlo_bound(ALPHA)
    assert test_alone > 0.01  # the test is not trivially silent


def test_calibration_power_at_min_effect_is_reported() -> None:
    power = flag_rate(drop=MIN_EFFECT, min_effect=MIN_EFFECT, seed=13)
    power_double = flag_rate(drop=2 * MIN_EFFECT, min_effect=MIN_EFFECT, seed=14, n=300)
    print(f"\npower against a planted drop of {MIN_EFFECT}: {power:.3f}; "
          f"of {2 * MIN_EFFECT}: {power_double:.3f}")
    assert ALPHA < power < 0.8
    assert power_double > 0.95


def test_calibration_of_the_seed_level_welch_rule() -> None:
    rng = np.random.default_rng(21)
    flagged = 0
    for _ in range(N_SIMULATIONS):
        values = rng.normal(0.7, 0.02, size=(2, 5))
        runs = [[{"run_id": f"r{i}", "strategy": "s", "model": "m", "seed": i,
                  "metrics": {"bio_first_token_test": float(v)}} for i, v in enumerate(row)]
                for row in values]
        verdict, = compare_with_baseline(runs[0], {"runs": runs[1]}, ["bio_first_token_test"],
                                         0.0, ALPHA, test="welch")
        flagged += verdict.status == "fail"
    rate = flagged / N_SIMULATIONS
    print(f"\nwelch false-alarm rate over {N_SIMULATIONS} null comparisons: {rate:.3f}")
    assert 0.01 < rate <= _monte_carlo_bound(ALPHA)


def _at_least_pass_rates(seed: int, seed_sd: float) -> tuple[float, float]:
    """Share of null recipes (true mean exactly 0.2) that the seed-level rule, and pooled
    Wilson, call above 0.2: 3 seeds whose true rates spread by seed_sd, 600 answers each."""
    rng = np.random.default_rng(seed)
    seed_level = pooled = 0
    floor = math.sqrt(0.2 * 0.8 / 600)
    for _ in range(N_SIMULATIONS):
        correct = rng.binomial(600, np.clip(rng.normal(0.2, seed_sd, 3), 0, 1))
        result = stats.one_sample_t(correct / 600, 0.2, "greater", sd_floor=floor, bounds=(0, 1))
        seed_level += result.p_value < ALPHA
        pooled += stats.wilson_score_p(int(correct.sum()), 1800, 0.2, "greater") < ALPHA
    return seed_level / N_SIMULATIONS, pooled / N_SIMULATIONS


def test_calibration_of_the_seed_level_at_least_rule() -> None:
    # Seed spread as in the CPU suite's two-stage OOD (sd 0.023 over seeds, mostly seed-level).
    seed_level, pooled = _at_least_pass_rates(seed=31, seed_sd=0.02)
    no_spread, _ = _at_least_pass_rates(seed=32, seed_sd=0.0)
    print(f"\nat_least false passes over {N_SIMULATIONS} null recipes: seed-level t {seed_level:.3f}"
          f" (no seed spread: {no_spread:.3f}), pooled Wilson {pooled:.3f}")
    assert seed_level <= _monte_carlo_bound(ALPHA) and no_spread <= _monte_carlo_bound(ALPHA)
    assert pooled > 3 * ALPHA  # why seeds are not pooled


def test_a_claim_reads_the_split_it_names() -> None:
    """ID and OOD answers differ in these results, so reading the wrong split changes the verdict."""
    rng = np.random.default_rng(5)
    results = [make_result(strategy, s, answers(rng, 120, accuracy), id_answers=[1] * 120)
               for strategy, accuracy in (("mixed", 0.9), ("two-stage", 0.1)) for s in range(3)]
    for metric, expected in (("ood_exact_match", "pass"), ("id_exact_match", "fail")):
        claim = greater_claim(metric=metric, test="mcnemar", min_effect=0.3)
        verdict = evaluate_claim(claim, results)
        assert verdict.status != "inconclusive" or metric == "id_exact_match", verdict.detail
        assert (verdict.status == "pass") == (expected == "pass"), (metric, verdict.detail)


# ---------------------------------------------------------------------------------------------
# at_most claims, expected failures, trace claims under every definition


def test_at_most_over_seeds_uses_the_upper_bound_of_the_seed_values() -> None:
    # Seeds at 0.30, 0.32, 0.28 against the paper's 0.10: mean 0.30, sd 0.02 (by hand); the t
    # statistic for "mean <= 0.10" is (0.30 - 0.10) / (0.02 / sqrt 3) = 17.3: far from holding.
    results = _seeds_at("two-stage", [0.30, 0.32, 0.28])
    claim = at_least_claim(kind="at_most", strategies=["two-stage"], threshold=0.10, test="t")
    verdict = evaluate_claim(claim, results)
    assert (verdict.status, verdict.outcome) == ("fail", "does_not_hold")
    assert verdict.effect == pytest.approx(0.30)
    assert verdict.ci_low == pytest.approx(0.30 - 4.303 * 0.02 / math.sqrt(3), abs=1e-3)
    assert "upper bound 0.334" in verdict.detail  # 0.30 + 2.920 * 0.02 / sqrt(3)
    below = evaluate_claim(at_least_claim(kind="at_most", strategies=["two-stage"],
                                          threshold=0.5, test="t"), results)
    assert (below.status, below.outcome) == ("pass", "holds")


def test_at_most_takes_the_highest_strategy_as_its_effect() -> None:
    results = _seeds_at("mixed", [0.05, 0.06, 0.04]) + _seeds_at("two-stage", [0.2, 0.22, 0.18])
    claim = at_least_claim(kind="at_most", strategies=["mixed", "two-stage"], threshold=0.5,
                           test="t")
    assert evaluate_claim(claim, results).effect == pytest.approx(0.2)


@pytest.mark.parametrize(("seeds", "strict", "status", "label"), [
    ([0.30, 0.32, 0.28], False, "xfail", "expected failure (does not hold)"),
    ([0.02, 0.03, 0.01], False, "xpass", "unexpected pass (holds)"),
    ([0.02, 0.03, 0.01], True, "fail", "fail"),
])
def test_a_claim_expected_to_fail_is_an_expected_failure_or_an_unexpected_pass(
    seeds: list[float], strict: bool, status: str, label: str
) -> None:
    claim = at_least_claim(kind="at_most", strategies=["two-stage"], threshold=0.10, test="t",
                           expect="fails", strict=strict)
    verdict = evaluate_claim(claim, _seeds_at("two-stage", seeds))
    assert verdict.status == status
    assert status_label(verdict.to_dict()) == label
    assert suite_exit_code([verdict]) == (1 if status == "fail" else 0)


def test_strict_needs_an_expected_failure() -> None:
    with pytest.raises(ValueError, match="strict applies to expect = 'fails' only"):
        at_least_claim(strict=True)


def _traced(strategy: str, seed: int, counts: dict[str, float]) -> dict[str, Any]:
    """A run whose trace recorded shared_count@0.01 under each named definition; the first one
    is the main definition (its summary is the trace's own summary)."""
    result = make_result(strategy, seed, [1] * 10)
    definitions = {name: {"summary": {"shared_count@0.01": value}} for name, value in counts.items()}
    main = next(iter(counts))
    result["trace"] = {"definition": main, "definitions": definitions,
                       "summary": {"shared_count@0.01": counts[main], "cosine_bio_qa": 0.1}}
    return result


def test_a_trace_claim_is_judged_under_every_definition_with_holm_over_them() -> None:
    # Under "u" mixed is far ahead on every seed; under "g" it is behind; "p" is a tie.
    results = [_traced("mixed", s, {"u": 100.0 + s, "g": 10.0 + s, "p": 50.0 + s}) for s in range(4)]
    results += [_traced("two-stage", s, {"u": 10.0 + s, "g": 100.0 + s, "p": 50.0 + s})
                for s in range(4)]
    claim = greater_claim(metric="trace.shared_count@0.01", min_effect=0)
    rows = evaluate_claim_by_definition(claim, results)
    assert [row["definition"] for row in rows] == ["u", "g", "p"]
    assert [row["outcome"] for row in rows] == ["holds", "does_not_hold", "undecided"]
    assert rows[0]["effect"] == pytest.approx(90.0) and rows[1]["effect"] == pytest.approx(-90.0)
    raw = [row["p_value"] for row in rows]
    assert [row["p_adjusted"] for row in rows] == pytest.approx(stats.holm(raw))
    assert definitions_line(rows, "u") == (
        "holds under 1 of 3 trace definitions (Holm over 3); under the main one (u): holds")


def test_a_claim_on_a_key_no_definition_holds_is_judged_once() -> None:
    results = [_traced("mixed", s, {"u": 1.0}) for s in range(2)]
    claim = greater_claim(metric="trace.cosine_bio_qa", min_effect=0)
    assert evaluate_claim_by_definition(claim, results) == []
    assert evaluate_claim_by_definition(greater_claim(), results) == []

def test_paired_outcomes_pair_by_seed_and_question_id_under_partial_overlap():
    """The common questions sit at different positions on the two sides, some questions are on one
    side only, and the runs come in another seed order: the pairs must be the ones built by hand
    (by model and seed, then by question id), never by position."""
    from factrecall_bench.verdicts.evidence import paired_outcomes

    def run(seed, answers, model="tiny-llama"):
        return {"run_id": f"r{seed}", "model": model, "seed": seed, "per_question": {
            "ood": {"question_ids": [q for q, _ in answers],
                    "exact_match": [int(hit) for _, hit in answers]}}}

    a = [run(0, [("p1/major", 1), ("p2/major", 0), ("p3/birth_city", 1), ("p4/major", 1)]),
         run(1, [("p9/major", 0), ("p1/major", 1)]),
         run(2, [("p1/major", 1)])]  # no seed 2 on the other side
    b = [run(1, [("p1/major", 0), ("p9/major", 1), ("p8/major", 0)]),
         run(0, [("p4/major", 0), ("p5/major", 1), ("p2/major", 1), ("p1/major", 1)]),
         run(0, [("p1/major", 0)], model="other")]  # same seed, another model: not its pair
    paired = paired_outcomes(a, b, "ood_exact_match")
    # seed 0: p1 (1, 1), p2 (0, 1), p4 (1, 0); unmatched p3 (a), p5 (b)
    # seed 1: p9 (0, 1), p1 (1, 0); unmatched p8 (b)
    assert not isinstance(paired, str)
    assert list(zip(paired.a, paired.b, strict=True)) == [
        (True, True), (False, True), (True, False), (False, True), (True, False)]
    assert (paired.n_runs, paired.unmatched_questions) == (2, 3)
    by_attribute = paired_outcomes(a, b, "ood_exact_match", attribute="birth_city")
    assert isinstance(by_attribute, str)  # p3/birth_city is on one side only
    majors = paired_outcomes(a, b, "ood_exact_match", attribute="major")
    assert not isinstance(majors, str)
    assert list(zip(majors.a, majors.b, strict=True)) == list(zip(paired.a, paired.b, strict=True))


def test_no_shipped_claim_takes_its_threshold_from_its_own_results():
    """Thresholds come from the paper or a prior in `why`, never from the suite's own seeds: a
    why that reports what this suite measured ("seeds 0-2 gave", "measured here", "we measure",
    "a prototype saw") is a claim tuned to its data."""
    tell_tales = re.compile(r"seeds? \d|\bgave\b|measured here|we measure|prototype", re.I)
    for name in shipped_suites():
        for claim in load_suite(name).claims:
            assert not tell_tales.search(claim.why), (name, claim.name, claim.why)
