"""Regressions against a baseline (verdicts/regressions.py) as mutation testing (docs/mutation.md)
found them unpinned: the `[regression]` table's checks and messages, the seed-level comparison
(welch and mannwhitney: which values, which interval, what the detail says), the paired one's
detail, the edges of the rule (a change of exactly min_effect, an interval touching it), failed
runs on either side, and the arguments compare_with_baseline refuses."""

from __future__ import annotations

import pytest

from factrecall_bench.verdicts import compare_with_baseline, stats
from factrecall_bench.verdicts.decision import DecisionBasis
from factrecall_bench.verdicts.regressions import (
    RegressionCheck,
    RegressionSettings,
    _change_text,
    _regression_basis,
)

# --- the [regression] table --------------------------------------------------------------------


def test_settings_keep_metrics_as_a_tuple_and_accept_the_edges():
    settings = RegressionSettings(metrics=["ood_exact_match"], min_effect=0.0, alpha=0.999)
    assert settings.metrics == ("ood_exact_match",) and isinstance(settings.metrics, tuple)
    assert RegressionSettings(min_effect=0.999).min_effect == 0.999


@pytest.mark.parametrize(("fields", "message"), [
    ({"metrics": []}, "regression: metrics must be a non-empty list of metric names"),
    ({"metrics": ["ood_exact_match", ""]},
     "regression: metrics must be a non-empty list of metric names"),
    ({"metrics": ["ood_exact_match", 3]},
     "regression: metrics must be a non-empty list of metric names"),
    ({"test": "ttest"}, "regression: test must be one of mcnemar, welch, mannwhitney, got 'ttest'"),
    ({"correction": "bonferroni"},
     "regression: correction must be one of holm, bh, none, got 'bonferroni'"),
    ({"alpha": 0.0}, "regression: alpha must be in (0, 1) and min_effect in [0, 1)"),
    ({"alpha": 1.0}, "regression: alpha must be in (0, 1) and min_effect in [0, 1)"),
    ({"alpha": 1.5}, "regression: alpha must be in (0, 1) and min_effect in [0, 1)"),
    ({"min_effect": 1.0}, "regression: alpha must be in (0, 1) and min_effect in [0, 1)"),
    ({"min_effect": 1.5}, "regression: alpha must be in (0, 1) and min_effect in [0, 1)"),
    ({"min_effect": -0.1}, "regression: alpha must be in (0, 1) and min_effect in [0, 1)"),
])
def test_bad_settings_are_refused_with_their_message(fields, message):
    with pytest.raises(ValueError) as error:
        RegressionSettings(**fields)
    assert str(error.value) == message


def test_a_table_enables_the_comparison_unless_it_says_not():
    assert RegressionSettings.from_table({}).enabled is False
    assert RegressionSettings.from_table({"alpha": 0.05}).enabled is True
    assert RegressionSettings.from_table({"alpha": 0.05, "enabled": False}).enabled is False
    with pytest.raises(ValueError) as error:
        RegressionSettings.from_table({"alpha": 0.05, "zeta": 1, "beta": 2})
    assert str(error.value) == "regression: unknown key(s) ['beta', 'zeta']"


# --- the rule's edges --------------------------------------------------------------------------


def _check(attribute=None, min_effect=0.1, alpha=0.05) -> RegressionCheck:
    return RegressionCheck("mixed", "m", "ood_exact_match", attribute, min_effect, alpha)


def test_a_change_of_exactly_min_effect_is_large_enough_and_an_interval_touching_it_is_not_within():
    assert _regression_basis(_check(), True, (0.25, 0.0, 0.5), False) == DecisionBasis(
        0.05, True, True, False, False)
    assert _regression_basis(_check(min_effect=0.25), True, (-0.25, -0.5, 0.0),
                             True) == DecisionBasis(0.05, True, True, False, True)
    assert not _regression_basis(_check(min_effect=0.25), True, (-0.2499, -0.5, 0.0),
                                 False).effect_large_enough
    assert _regression_basis(_check(), False, (0.09, -0.05, 0.05), False) == DecisionBasis(
        0.05, False, False, True, False)
    assert not _regression_basis(_check(), True, (0.0, -0.1, 0.05), False).interval_rules_out
    assert not _regression_basis(_check(), True, (0.0, -0.05, 0.1), False).interval_rules_out
    assert not _regression_basis(_check(), True, (0.0, float("nan"), 0.05),
                                 False).interval_rules_out


def test_the_change_in_words():
    assert _change_text(_check(), 0.5, 0.5) == "ood_exact_match unchanged at 0.5"
    assert _change_text(_check("major"), 0.5, 0.25) == (
        "ood_exact_match[major] dropped by 0.25 (0.5 -> 0.25)")
    assert _change_text(_check(), 0.25, 0.5) == "ood_exact_match rose by 0.25 (0.25 -> 0.5)"
    assert _check("major").name == "mixed/m ood_exact_match[major]"
    assert _check().name == "mixed/m ood_exact_match"


# --- seed-level comparisons --------------------------------------------------------------------


def _run(seed: int, value: float, strategy: str = "mixed", attribute_value: float | None = None,
         **extra) -> dict:
    run = {"run_id": f"{strategy}-s{seed}", "strategy": strategy, "model": "m", "seed": seed,
           "metrics": {"bio_first_token_test": value}, **extra}
    if attribute_value is not None:
        run["per_attribute"] = {"bio_first_token_test": {"major": {"value": attribute_value}}}
    return run


FRESH = [0.50, 0.55, 0.62, 0.58, 0.51]
BASE = [0.70, 0.71, 0.69, 0.75, 0.72]


@pytest.mark.parametrize("test", ["welch", "mannwhitney"])
def test_seed_level_regression_numbers_and_detail(test):
    fresh = [_run(s, v) for s, v in enumerate(FRESH)]
    baseline = {"runs": [_run(s, v) for s, v in enumerate(BASE)]}
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.2, test,
                                      "none")
    run_test = stats.welch_t if test == "welch" else stats.mann_whitney
    result = run_test(FRESH, BASE, "two-sided")
    diff, low, high = stats.mean_diff_interval(FRESH, BASE, 0.8)
    assert (verdict.effect, verdict.ci_low, verdict.ci_high) == pytest.approx((diff, low, high))
    assert diff == pytest.approx(sum(FRESH) / 5 - sum(BASE) / 5)
    assert verdict.p_value == pytest.approx(result.p_value)
    assert (verdict.test, verdict.metric, verdict.name) == (
        test, "bio_first_token_test", "mixed/m bio_first_token_test")
    assert (verdict.status, verdict.outcome, verdict.expect) == ("fail", "changed", "no_change")
    assert verdict.basis == DecisionBasis(0.2, True, True, False, False)
    assert verdict.detail == (f"bio_first_token_test dropped by 0.162 (0.714 -> 0.552) over 5 "
                              f"seed(s); {test} p {result.p_value:.3g}")


def test_seed_level_regression_that_cannot_reach_alpha_says_so():
    fresh = [_run(s, v) for s, v in enumerate(FRESH[:3])]
    baseline = {"runs": [_run(s, v) for s, v in enumerate(BASE[:3])]}
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                      "mannwhitney")
    assert verdict.status == "inconclusive"
    assert verdict.detail.endswith(
        "; p < 0.05 not reachable with this sample (smallest possible p 0.1)")


def test_seed_level_regression_of_an_attribute_reads_the_attributes_values():
    fresh = [_run(s, 0.5, attribute_value=v) for s, v in enumerate(FRESH)]
    baseline = {"runs": [_run(s, 0.5, attribute_value=v) for s, v in enumerate(BASE)]}
    verdicts = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.2, "welch",
                                     "none", per_attribute=True)
    assert [v.name for v in verdicts] == ["mixed/m bio_first_token_test",
                                          "mixed/m bio_first_token_test[major]"]
    total, major = verdicts
    assert total.outcome == "no_change" and total.effect == 0.0
    assert major.effect == pytest.approx(sum(FRESH) / 5 - sum(BASE) / 5)
    assert major.detail.startswith("bio_first_token_test[major] dropped by 0.162")


def test_seed_level_regression_without_matching_seeds_or_values_is_undecided():
    fresh = [_run(7, 0.5), _run(8, 0.5)]
    baseline = {"runs": [_run(0, 0.5), _run(1, 0.5)]}
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                      "welch")
    assert (verdict.status, verdict.outcome, verdict.test) == ("inconclusive", "undecided", "-")
    assert verdict.detail.startswith("no baseline for these settings: the stored baseline holds "
                                     "no run trained as seed(s) 7, 8 were (training identity "
                                     "unknown)")
    assert verdict.name == "mixed/m baseline" and verdict.p_value is None
    fresh = [_run(0, 0.5), {**_run(1, 0.5), "metrics": {}}]
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                      "mannwhitney")
    assert verdict.detail == "run mixed-s1 has no value for bio_first_token_test"
    assert verdict.test == "mannwhitney"
    base_without = {"runs": [_run(0, 0.5), {**_run(1, 0.5), "run_id": "b1", "metrics": {}}]}
    [verdict] = compare_with_baseline([_run(0, 0.5), _run(1, 0.5)], base_without,
                                      ["bio_first_token_test"], 0.1, 0.05, "welch")
    assert verdict.detail == "run b1 has no value for bio_first_token_test"


def test_mcnemar_on_a_metric_without_per_question_data_falls_back_to_welch_and_says_so():
    fresh = [_run(s, v) for s, v in enumerate(FRESH)]
    baseline = {"runs": [_run(s, v) for s, v in enumerate(BASE)]}
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.2)
    assert verdict.test == "welch"
    assert verdict.detail.endswith("; bio_first_token_test has no per-question data, so seeds "
                                   "were compared with welch")


def test_failed_runs_on_either_side_are_named():
    baseline = {"runs": [_run(0, 0.5), _run(1, 0.5)]}
    fresh = [_run(0, 0.5), _run(1, 0.5, status="failed", reason="diverged")]
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                      "welch")
    assert verdict.detail == "fresh mixed/m: run mixed-s1 failed: diverged"
    assert (verdict.outcome, verdict.test) == ("undecided", "welch")
    broken = {"runs": [_run(0, 0.5), _run(1, 0.5, error="oom")]}
    [verdict] = compare_with_baseline([_run(0, 0.5), _run(1, 0.5)], broken,
                                      ["bio_first_token_test"], 0.1, 0.05, "welch")
    assert verdict.detail == "baseline mixed/m: run mixed-s1 failed: oom"


# --- paired comparisons ------------------------------------------------------------------------


def _answers(seed: int, correct: list[int], ids=None) -> dict:
    ids = ids or [f"p{i}/birth_city" for i in range(len(correct))]
    return {"run_id": f"r{seed}", "strategy": "mixed", "model": "m", "seed": seed,
            "metrics": {"ood_exact_match": sum(correct) / len(correct)},
            "per_question": {"ood": {"question_ids": ids, "exact_match": correct}}}


def test_paired_regression_detail_and_numbers():
    base = [1] * 30
    fresh = [0] * 12 + [1] * 18
    fresh[20] = 0
    verdicts = compare_with_baseline([_answers(0, fresh)], {"runs": [_answers(0, base)]},
                                     ["ood_exact_match"], 0.1, 0.2, "mcnemar", "none")
    [verdict] = verdicts
    result = stats.mcnemar_exact([bool(x) for x in fresh], [True] * 30, "two-sided")
    assert verdict.p_value == pytest.approx(result.p_value)
    assert verdict.effect == pytest.approx(-13 / 30)
    interval = stats.paired_bootstrap_diff([bool(x) for x in fresh], [True] * 30, 0.8)
    assert (verdict.effect, verdict.ci_low, verdict.ci_high) == pytest.approx(interval)
    assert interval != pytest.approx(
        stats.paired_bootstrap_diff([bool(x) for x in fresh], [True] * 30, 0.95))
    assert verdict.basis == DecisionBasis(0.2, True, True, False, False)
    assert verdict.detail == ("ood_exact_match dropped by 0.433 (1 -> 0.567); 13 of 30 answers "
                              "changed over 1 seed(s) (0 newly right, 13 newly wrong)")
    assert (verdict.status, verdict.test) == ("fail", "mcnemar")


def test_paired_identical_answers_are_identical():
    [verdict] = compare_with_baseline([_answers(0, [1, 0, 1])], {"runs": [_answers(0, [1, 0, 1])]},
                                      ["ood_exact_match"], 0.1, 0.05)
    assert verdict.basis is not None and verdict.basis.identical
    assert (verdict.status, verdict.outcome) == ("pass", "no_change")


def test_paired_regression_notes_unmatched_questions_and_unreachable_levels():
    base = _answers(0, [1, 1, 1, 0], ["p1/a", "p2/a", "p3/a", "p9/a"])
    fresh = _answers(0, [1, 0, 1], ["p1/a", "p2/a", "p3/a"])
    [verdict] = compare_with_baseline([fresh], {"runs": [base]}, ["ood_exact_match"], 0.1, 0.05)
    assert verdict.detail == (
        "ood_exact_match dropped by 0.333 (1 -> 0.667); 1 of 3 answers changed over 1 seed(s) "
        "(0 newly right, 1 newly wrong); p < 0.05 not reachable with this sample (smallest "
        "possible p 1); 1 question(s) answered by only one side were left out")
    assert verdict.status == "inconclusive"


def test_paired_regression_without_per_question_data_is_undecided():
    fresh = {**_answers(0, [1, 0]), "per_question": {}}
    [verdict] = compare_with_baseline([fresh], {"runs": [_answers(0, [1, 1])]},
                                      ["ood_exact_match"], 0.1, 0.05)
    assert verdict.detail == "no per-question data for ood_exact_match in run r0"
    assert (verdict.test, verdict.outcome, verdict.effect) == ("mcnemar", "undecided", None)


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "message"), [
    ((["ood_exact_match"], 0.1, 0.05, "ttest", "holm"),
     "test must be one of mcnemar, welch, mannwhitney, got 'ttest'"),
    ((["ood_exact_match"], 0.1, 0.05, "welch", "bonferroni"),
     "correction must be one of holm, bh, none, got 'bonferroni'"),
    ((["ood_exact_match"], 0.1, 0.0, "welch", "holm"),
     "need 0 < alpha < 1 and min_effect >= 0, got 0.0, 0.1"),
    ((["ood_exact_match"], 0.1, 1.0, "welch", "holm"),
     "need 0 < alpha < 1 and min_effect >= 0, got 1.0, 0.1"),
    ((["ood_exact_match"], -0.01, 0.05, "welch", "holm"),
     "need 0 < alpha < 1 and min_effect >= 0, got 0.05, -0.01"),
    (([], 0.1, 0.05, "welch", "holm"), "metrics must be a non-empty list of metric names"),
    (("ood_exact_match", 0.1, 0.05, "welch", "holm"),
     "metrics must be a non-empty list of metric names"),
])
def test_compare_refuses_bad_arguments(arguments, message):
    metrics, min_effect, alpha, test, correction = arguments
    with pytest.raises(ValueError) as error:
        compare_with_baseline([], {"runs": []}, metrics, min_effect, alpha, test, correction)
    assert str(error.value) == message


def test_a_min_effect_of_zero_is_allowed_and_identical_seeds_are_no_change():
    runs = [_run(s, v) for s, v in enumerate(FRESH)]
    [verdict] = compare_with_baseline(runs, {"runs": runs}, ["bio_first_token_test"], 0.0, 0.05,
                                      "welch")
    assert verdict.outcome == "no_change" and verdict.basis is not None
    assert verdict.basis.identical


def test_constant_seeds_that_differ_less_than_min_effect_are_no_change_without_a_p_value():
    # welch has no p-value (zero variance in both groups): the outcome is decided here, not
    # re-decided by the correction, and the test's note reaches the detail.
    fresh = [_run(s, 0.5) for s in range(3)]
    baseline = {"runs": [_run(s, 0.7) for s in range(3)]}
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.5, 0.05,
                                      "welch")
    assert verdict.p_value is None
    assert (verdict.status, verdict.outcome) == ("pass", "no_change")
    assert verdict.detail.endswith("; zero variance in both groups with different means")


# --- groups, attributes and the correction -----------------------------------------------------


def test_attributes_are_compared_only_where_both_sides_have_them():
    fresh = [_run(s, 0.5, attribute_value=0.5) for s in range(3)]
    baseline = {"runs": [{**_run(s, 0.5), "per_attribute": {"bio_first_token_test": {
        "birth_city": {"value": 0.5}}}} for s in range(3)]}
    verdicts = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                     "welch", per_attribute=True)
    assert [v.name for v in verdicts] == ["mixed/m bio_first_token_test"]


def test_a_group_on_one_side_only_is_undecided_also_per_attribute():
    fresh = [_run(s, 0.5, attribute_value=0.5) for s in range(3)]
    baseline = {"runs": [_run(s, 0.5, strategy="two-stage", attribute_value=0.5)
                         for s in range(3)]}
    verdicts = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                     "welch", per_attribute=True)
    assert [(v.name, v.detail[:38]) for v in verdicts] == [
        ("two-stage/m bio_first_token_test", "no results for fresh two-stage/m"),
        ("mixed/m baseline", "no baseline for these settings: the st")]
    assert [v.status for v in verdicts] == ["inconclusive", "inconclusive"]


def test_the_chosen_correction_is_applied():
    fresh = [_run(s, v) for s, v in enumerate(FRESH)] + [
        _run(s, v, strategy="two-stage") for s, v in enumerate(FRESH)]
    baseline = {"runs": [_run(s, v) for s, v in enumerate(BASE)] + [
        _run(s, v + 0.01, strategy="two-stage") for s, v in enumerate(FRESH)]}
    raw = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05, "welch",
                                "none")
    assert [v.p_adjusted for v in raw] == [v.p_value for v in raw]
    holm = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05, "welch")
    assert holm[0].p_adjusted == pytest.approx(2 * raw[0].p_value)
    bh = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05, "welch", "bh")
    assert [v.p_adjusted for v in bh] == pytest.approx(
        stats.benjamini_hochberg([v.p_value for v in raw]))


# --- which baseline entry a run is compared with -----------------------------------------------


def test_an_entry_without_an_identity_is_matched_by_strategy_model_and_seed():
    # Two models, same strategy and seeds, entries written before entries stored an identity: each
    # fresh run must meet its own model's entry (equal values: no change on either model).
    runs = [{**_run(s, v), "model": model} for model, values in (("m", FRESH), ("n", BASE))
            for s, v in enumerate(values)]
    verdicts = compare_with_baseline(runs, {"runs": runs}, ["bio_first_token_test"], 0.1, 0.05,
                                     "welch")
    assert [(v.name, v.outcome, v.effect) for v in verdicts] == [
        ("mixed/m bio_first_token_test", "no_change", 0.0),
        ("mixed/n bio_first_token_test", "no_change", 0.0)]


def test_runs_paired_by_identity_but_of_other_seeds_are_not_compared():
    fresh = [_run(s, 0.5, training_identity=f"t{s}") for s in range(2)]
    baseline = {"runs": [_run(s + 5, 0.5, training_identity=f"t{s}") for s in range(2)]}
    [verdict] = compare_with_baseline(fresh, baseline, ["bio_first_token_test"], 0.1, 0.05,
                                      "welch")
    assert (verdict.outcome, verdict.detail) == (
        "undecided", "no fresh run matches a baseline run by model and seed")


LONG = "0123456789abcdef"
"""A training identity longer than the 12 characters a detail shows."""


def test_what_a_run_without_a_baseline_entry_is_told():
    fresh = [_run(s, 0.5, training_identity=f"{tag}{LONG}") for s, tag in ((2, "b"), (1, "a"))]
    [own] = compare_with_baseline(fresh, {"runs": []}, ["bio_first_token_test"], 0.1, 0.05,
                                  "welch")
    assert own.detail == (
        "no baseline for these settings: the stored baseline holds no run trained as seed(s) 1, 2 "
        "were (training identity a0123456789a, b0123456789a); the suite's runs changed since it "
        "was stored: `factrecall-bench baseline update --suite SUITE` records them")
    [varied] = compare_with_baseline(fresh, {"suite": "cpu", "runs": []},
                                     ["bio_first_token_test"], 0.1, 0.05, "welch",
                                     own_identities=frozenset())
    assert varied.detail == (
        "no baseline for these settings: the cpu baseline holds no run trained as seed(s) 1, 2 "
        "were (training identity a0123456789a, b0123456789a); a run is compared only with a "
        "baseline entry trained as it was, never with runs of other settings")
    assert (own.status, varied.status) == ("inconclusive", "no_baseline")
    for verdict in (own, varied):  # a baseline check with nothing to test: no metric, no test
        assert (verdict.name, verdict.kind, verdict.expect, verdict.metric, verdict.test) == (
            "mixed/m baseline", "regression", "no_change", "-", "-")
