"""Claims (verdicts/claims.py): their validation (every message a user reads), and what evaluating
one records and says (written for the survivors of mutation testing, docs/mutation.md)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from factrecall_bench.verdicts import stats
from factrecall_bench.verdicts.claims import (
    Claim,
    check_claim_seeds,
    common_definitions,
    definitions_line,
    evaluate_claim,
    evaluate_claim_by_definition,
)
from tests.factrecall_bench.verdicts.test_verdicts import at_least_claim, greater_claim, make_result

# --- claims: validation ------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "words"), [
    ({"why": "  "}, "claim 'mixed beats two-stage OOD': why must be a non-empty string"),
    ({"a": 3}, "a must be a strategy name (string)"),
    ({"b": "mixed"}, "kind 'greater' needs two different strategies a and b"),
    ({"a": ""}, "kind 'greater' needs two different strategies a and b"),
    ({"test": "z"}, "test must be one of welch, mannwhitney, mcnemar, wilson, t, got 'z'"),
    ({"alpha": 1.0}, "alpha must be in (0, 1)"),
    ({"alpha": 0.0}, "alpha must be in (0, 1)"),
    ({"min_effect": 1.0}, "min_effect must be in [0, 1)"),
    ({"strict": "yes"}, "claim 'mixed beats two-stage OOD': strict must be true or false"),
])
def test_bad_greater_claims_are_named(overrides, words):
    with pytest.raises(ValueError) as caught:
        greater_claim(**overrides)
    assert words in str(caught.value)


@pytest.mark.parametrize(("overrides", "words"), [
    ({"strategies": ["mixed", ""]}, "strategies must be a list of strategy names"),
    ({"threshold": "high"}, "threshold must be a number"),
    ({"threshold": 0.0}, "kind 'at_least' needs a threshold in (0, 1)"),
    ({"b": "two-stage"}, "kind 'at_least' takes strategies and threshold"),
])
def test_bad_at_least_claims_are_named(overrides, words):
    with pytest.raises(ValueError) as caught:
        at_least_claim(**overrides)
    assert words in str(caught.value)


def test_claim_table_errors_name_the_claim_and_the_keys():
    with pytest.raises(ValueError, match="a claim must be a table, got list"):
        Claim.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"claim 'x': unknown key\(s\) bar, foo; allowed: name, metric"):
        Claim.from_dict({"name": "x", "foo": 1, "bar": 2})
    with pytest.raises(ValueError, match="claim '<unnamed>': missing key"):
        Claim.from_dict({"metric": "m"})


def test_claim_seed_rules_at_their_edges():
    check_claim_seeds(at_least_claim(test="wilson"), 1)
    with pytest.raises(ValueError, match="wilson is for one"):
        check_claim_seeds(at_least_claim(test="wilson"), 2)
    check_claim_seeds(at_least_claim(test="t"), 2)
    with pytest.raises(ValueError, match="it speaks of that trained model only"):
        check_claim_seeds(at_least_claim(test="t"), 1)


# --- claims: evaluation ------------------------------------------------------------------------


def _seeds(strategy: str, hits: list[int], n: int = 100) -> list[dict]:
    return [make_result(strategy, seed, [1] * h + [0] * (n - h)) for seed, h in enumerate(hits)]


def test_a_greater_claim_records_its_fields_the_interval_at_its_alpha_and_an_exact_detail():
    results = _seeds("mixed", [70, 75, 80]) + _seeds("two-stage", [10, 20, 15])
    claim = greater_claim(alpha=0.1)
    verdict = evaluate_claim(claim, results)
    a, b = [0.70, 0.75, 0.80], [0.10, 0.20, 0.15]
    welch = stats.welch_t(a, b, "greater")
    diff, low, high = stats.mean_diff_interval(a, b, 0.9)
    assert (verdict.name, verdict.kind, verdict.expect, verdict.test, verdict.metric) == (
        claim.name, "claim", "holds", "welch", "ood_exact_match")
    assert (verdict.effect, verdict.ci_low, verdict.ci_high) == pytest.approx((diff, low, high))
    assert verdict.detail == (f"mixed 0.75 vs two-stage 0.15 over 3 vs 3 seeds; welch one-sided "
                              f"p {welch.p_value:.3g}")


def test_an_effect_exactly_at_min_effect_is_large_enough():
    results = _seeds("mixed", [70, 75, 80]) + _seeds("two-stage", [10, 20, 15])
    a, b = [0.70, 0.75, 0.80], [0.10, 0.20, 0.15]
    effect = stats.mean_diff_interval(a, b)[0]
    assert evaluate_claim(greater_claim(min_effect=effect), results).outcome == "holds"


def test_an_unreachable_level_is_said_with_the_smallest_possible_p():
    results = _seeds("mixed", [70, 75, 80]) + _seeds("two-stage", [10, 20, 15])
    verdict = evaluate_claim(greater_claim(test="mannwhitney"), results)
    assert verdict.status == "inconclusive"
    assert verdict.detail.endswith(
        "mannwhitney one-sided p 0.05; p < 0.05 not reachable with this sample "
        "(smallest possible p 0.05)")


def test_a_paired_claim_is_one_sided_at_its_alpha_and_says_its_numbers():
    ood_a = [1] * 30 + [0] * 10
    ood_b = [1] * 24 + [0] * 16
    results = [make_result("mixed", 0, ood_a), make_result("two-stage", 0, ood_b)]
    verdict = evaluate_claim(greater_claim(test="mcnemar", min_effect=0.0, alpha=0.2), results)
    mcnemar = stats.mcnemar_exact(ood_a, ood_b, "greater")
    diff, low, high = stats.paired_bootstrap_diff(ood_a, ood_b, 0.8)
    assert verdict.p_value == pytest.approx(mcnemar.p_value)
    assert (verdict.ci_low, verdict.ci_high) == pytest.approx((low, high))
    assert verdict.detail.startswith(
        f"mixed 0.75 vs two-stage 0.6 on 40 paired answers from 1 seed(s); discordant 6 for "
        f"mixed, 0 for two-stage; McNemar one-sided p {mcnemar.p_value:.3g}")


def test_a_paired_claim_without_per_question_data_is_inconclusive_and_says_why():
    results = [make_result("mixed", 0, [1, 0]), make_result("two-stage", 0, [0, 0])]
    for run in results:
        run["per_question"] = {}
    claim = greater_claim(test="mcnemar", expect="does_not_hold")
    verdict = evaluate_claim(claim, results)
    assert (verdict.name, verdict.kind, verdict.expect, verdict.test, verdict.metric) == (
        claim.name, "claim", "does_not_hold", "mcnemar", "ood_exact_match")
    assert verdict.status == "inconclusive" and verdict.detail


def test_a_wilson_row_uses_the_claims_alpha_and_a_one_sided_test():
    results = [make_result("mixed", 0, [1] * 66 + [0] * 34)]
    verdict = evaluate_claim(at_least_claim(alpha=0.1, threshold=0.5), results)
    low, high = stats.wilson_interval(66, 100, confidence=0.9)
    assert (verdict.ci_low, verdict.ci_high) == pytest.approx((low, high))
    assert verdict.p_value == pytest.approx(stats.wilson_score_p(66, 100, 0.5, "greater"))
    assert verdict.detail.startswith(
        f"threshold 0.5; mixed 0.66 [{low:.3g}, {high:.3g}] n=100 "
        f"p={stats.wilson_score_p(66, 100, 0.5):.3g}, Wilson")


def test_a_seed_t_row_records_its_bounds_and_says_its_spread():
    results = _seeds("mixed", [60, 70, 65], n=100) + _seeds("two-stage", [30, 35, 40], n=100)
    claim = at_least_claim(strategies=["mixed", "two-stage"], threshold=0.5, test="t")
    verdict = evaluate_claim(claim, results)
    two_stage = stats.one_sample_t([0.3, 0.35, 0.4], 0.5, "greater", sd_floor=0.05,
                                   bounds=(0.0, 1.0))
    low, high = two_stage.interval(0.95)
    assert verdict.effect == pytest.approx(0.35)
    assert (verdict.ci_low, verdict.ci_high) == pytest.approx((max(0.0, low), min(1.0, high)))
    assert verdict.outcome == "does_not_hold"
    assert f"two-stage 0.35 (sd {two_stage.observed_sd:.3g} over 3 seeds)" in verdict.detail
    assert f"t p={two_stage.p_value:.3g}" in verdict.detail
    assert verdict.detail == (
        "threshold 0.5; mixed 0.65 (sd 0.05 over 3 seeds; binomial floor 0.05 used), seed-level "
        "one-sided 95% lower bound 0.566, t p=0.0175; two-stage 0.35 (sd 0.05 over 3 seeds), "
        "seed-level one-sided 95% lower bound 0.266, t p=0.982")


def test_a_run_with_value_and_n_but_no_per_question_data_counts():
    run = make_result("mixed", 0, [1] * 70 + [0] * 30)
    run["per_question"] = {}
    verdict = evaluate_claim(at_least_claim(threshold=0.5), [run])
    assert verdict.effect == pytest.approx(0.7) and verdict.outcome == "holds"
    run["metrics"]["ood_exact_match"]["n"] = 1
    run["metrics"]["ood_exact_match"]["value"] = 1.0
    assert evaluate_claim(at_least_claim(threshold=0.5), [run]).effect == pytest.approx(1.0)
    del run["metrics"]["ood_exact_match"]["n"]
    verdict = evaluate_claim(at_least_claim(threshold=0.5), [run])
    assert verdict.status == "inconclusive"
    assert verdict.detail == "run mixed-tiny-llama-s0 has no per-question data or n for ood_exact_match"


@pytest.mark.parametrize("side", ["mixed", "two-stage"])
def test_a_seed_claim_with_a_value_missing_on_one_side_says_which_run(side):
    results = _seeds("mixed", [70, 75, 80]) + _seeds("two-stage", [10, 20, 15])
    for run in results:
        if run["strategy"] == side and run["seed"] == 1:
            del run["metrics"]["ood_exact_match"]
    verdict = evaluate_claim(greater_claim(), results)
    assert verdict.status == "inconclusive"
    assert verdict.detail == f"run {side}-tiny-llama-s1 has no value for ood_exact_match"


def test_a_seed_t_claim_with_a_run_lacking_data_is_inconclusive_not_decided_on_the_rest():
    results = _seeds("mixed", [60, 70, 65, 68])
    results[1]["per_question"] = {}
    del results[1]["metrics"]["ood_exact_match"]["n"]
    verdict = evaluate_claim(at_least_claim(threshold=0.5, test="t"), results)
    assert verdict.status == "inconclusive"
    assert verdict.detail == "run mixed-tiny-llama-s1 has no per-question data or n for ood_exact_match"


def test_a_run_with_zero_answers_or_a_bare_number_is_not_a_proportion():
    run = make_result("mixed", 0, [1] * 7 + [0] * 3)
    run["per_question"] = {}
    run["metrics"]["ood_exact_match"]["n"] = 0
    assert evaluate_claim(at_least_claim(threshold=0.5), [run]).status == "inconclusive"
    run["metrics"]["ood_exact_match"] = 0.7
    assert evaluate_claim(at_least_claim(threshold=0.5), [run]).status == "inconclusive"


def test_a_seed_t_interval_of_a_proportion_stays_within_zero_one():
    verdict = evaluate_claim(at_least_claim(threshold=0.5, test="t"), _seeds("mixed", [98, 100, 100]))
    assert verdict.ci_high == 1.0 and verdict.ci_low < 1.0
    low = evaluate_claim(at_least_claim(threshold=0.5, test="t"), _seeds("mixed", [0, 2, 0]))
    assert low.ci_low == 0.0 and low.ci_high > 0.0


def test_seed_rule_messages_end_with_the_advice():
    with pytest.raises(ValueError) as wilson:
        check_claim_seeds(at_least_claim(test="wilson"), 3)
    assert str(wilson.value).endswith("with several seeds use test = 't' (seed-level), wilson is for one")
    with pytest.raises(ValueError) as t_test:
        check_claim_seeds(at_least_claim(test="t"), 1)
    assert str(t_test.value).endswith(
        "with one seed use test = 'wilson' (it speaks of that trained model only)")


def test_a_wilson_claim_over_several_seeds_is_inconclusive_with_advice():
    verdict = evaluate_claim(at_least_claim(threshold=0.5), _seeds("mixed", [70, 75]))
    assert verdict.status == "inconclusive"
    assert verdict.detail.endswith("their answers are not pooled: use test 't' (seed-level)")


def test_a_run_without_an_id_is_named_with_a_question_mark():
    run = make_result("mixed", 0, [1] * 7 + [0] * 3)
    run["per_question"] = {}
    del run["metrics"]["ood_exact_match"]["n"], run["run_id"]
    verdict = evaluate_claim(at_least_claim(threshold=0.5), [run])
    assert verdict.detail == "run ? has no per-question data or n for ood_exact_match"


def test_an_undefined_seed_test_says_nan_and_why():
    results = _seeds("mixed", [70]) + _seeds("two-stage", [10])
    verdict = evaluate_claim(greater_claim(), results)
    assert verdict.detail == (
        "mixed 0.7 vs two-stage 0.1 over 1 vs 1 seeds; welch one-sided p nan; p < 0.05 not "
        "reachable with this sample (smallest possible p 1); needs 2+ values per group, got 1 and 1")


def test_a_paired_claim_with_few_discordant_answers_says_the_level_is_out_of_reach():
    results = [make_result("mixed", 0, [1, 1, 0, 0]), make_result("two-stage", 0, [0, 0, 0, 0])]
    verdict = evaluate_claim(greater_claim(test="mcnemar", min_effect=0.0), results)
    assert verdict.status == "inconclusive"
    assert verdict.detail.endswith(
        "McNemar one-sided p 0.25; p < 0.05 not reachable with this sample (smallest possible p 0.25)")


def test_a_paired_detail_with_every_answer_matched_ends_at_the_p_value():
    ood_a, ood_b = [1] * 30 + [0] * 10, [1] * 24 + [0] * 16
    results = [make_result("mixed", 0, ood_a), make_result("two-stage", 0, ood_b)]
    verdict = evaluate_claim(greater_claim(test="mcnemar", min_effect=0.0), results)
    p_value = stats.mcnemar_exact(ood_a, ood_b, "greater").p_value
    assert verdict.detail.endswith(f"McNemar one-sided p {p_value:.3g}")


def test_a_seed_t_row_says_when_its_level_is_out_of_reach_or_undefined():
    few_answers = _seeds("mixed", [3, 4], n=4)  # binomial floor 0.25 over 2 seeds
    verdict = evaluate_claim(at_least_claim(threshold=0.5, test="t"), few_answers)
    smallest = scipy_stats.t.sf((1.0 - 0.5) * math.sqrt(2) / 0.25, 1)
    assert f"; p < 0.05 not reachable with this sample (smallest possible p {smallest:.3g})" in (
        verdict.detail)
    one_seed = evaluate_claim(at_least_claim(threshold=0.5, test="t"), _seeds("mixed", [70]))
    assert one_seed.detail.endswith("; needs 2+ values (seeds), got 1")


def test_an_at_least_claim_with_an_undefined_row_has_no_p_value():
    results = _seeds("mixed", [70, 75, 80]) + _seeds("two-stage", [90])
    claim = at_least_claim(strategies=["mixed", "two-stage"], threshold=0.5, test="t")
    verdict = evaluate_claim(claim, results)
    assert verdict.p_value is None and verdict.status == "inconclusive"


# --- mutation-killing tests: trace claims under every trace definition --------------------------


def _under(strategy: str, seed: int, main: str, counts: dict[str, float]) -> dict:
    """A run whose trace recorded shared_count@0.01 under each definition of `counts` (in that
    order), `main` being the definition its own summary was computed with."""
    result = make_result(strategy, seed, [1] * 10)
    result["trace"] = {"definition": main, "summary": {"shared_count@0.01": counts.get(main)},
                       "definitions": {name: {"summary": {"shared_count@0.01": value}}
                                       for name, value in counts.items()}}
    return result


TRACE_CLAIM = {"metric": "trace.shared_count@0.01", "min_effect": 0}


def test_common_definitions_are_those_every_run_holds_the_main_one_first():
    # The main definition "p" is recorded last: it still comes first, the others as found.
    runs = [_under("mixed", 0, "p", {"u": 1.0, "g": 2.0, "p": 3.0}),
            _under("two-stage", 0, "p", {"g": 2.0, "u": 1.0, "p": 3.0, "extra": 4.0})]
    assert common_definitions(greater_claim(**TRACE_CLAIM), runs) == ["p", "u", "g"]
    # A definition one run lacks (here "g" in the last run) is left out, whichever run lacks it.
    runs.append(_under("two-stage", 1, "p", {"u": 1.0, "p": 3.0}))
    assert common_definitions(greater_claim(**TRACE_CLAIM), runs) == ["p", "u"]
    runs = [runs[2], runs[0], runs[1]]
    assert common_definitions(greater_claim(**TRACE_CLAIM), runs) == ["p", "u"]


def test_common_definitions_of_one_run_and_of_none():
    [run] = [_under("mixed", 0, "g", {"u": 1.0, "g": 2.0})]
    assert common_definitions(greater_claim(**TRACE_CLAIM), [run]) == ["g", "u"]
    assert common_definitions(greater_claim(**TRACE_CLAIM), []) == []
    # A claim on a plain metric has no definitions, even where a summary holds a key of that name.
    plain = _under("mixed", 0, "g", {"g": 2.0})
    plain["trace"]["definitions"]["g"]["summary"]["exact_match"] = 0.5
    assert common_definitions(greater_claim(metric="ood_exact_match"), [plain]) == []


def test_the_definitions_line_names_the_main_definitions_outcome_or_its_absence():
    rows = [{"definition": "u", "outcome": "holds"}, {"definition": "g", "outcome": "does_not_hold"},
            {"definition": "p", "outcome": "undecided"}]
    counted = "holds under 1 of 3 trace definitions (Holm over 3)"
    assert definitions_line(rows, "g") == f"{counted}; under the main one (g): does not hold"
    assert definitions_line(rows, "x") == f"{counted}; the main one (x) gives no value for it"
    assert definitions_line(rows, None) == counted
    assert definitions_line([], "u") == ""


def test_a_trace_claim_judged_under_each_definition_keeps_the_main_definition_first():
    # Under "u" mixed is ahead on every seed, under "g" behind; "g" is the runs' main definition.
    results = [_under("mixed", s, "g", {"u": 100.0 + s, "g": 10.0 + s}) for s in range(4)]
    results += [_under("two-stage", s, "g", {"u": 10.0 + s, "g": 100.0 + s}) for s in range(4)]
    rows = evaluate_claim_by_definition(greater_claim(**TRACE_CLAIM), results)
    assert [(row["definition"], row["outcome"]) for row in rows] == [
        ("g", "does_not_hold"), ("u", "holds")]
    assert definitions_line(rows, "g") == ("holds under 1 of 2 trace definitions (Holm over 2); "
                                           "under the main one (g): does not hold")
