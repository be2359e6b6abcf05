"""Reading runs (verdicts/evidence.py) as mutation testing (docs/mutation.md) found it unpinned:
an attribute's value, a trace metric stored under metrics, the attribute of a question id, why a
run failed (the words a user reads), and how runs of a and b are paired by model and seed."""

from __future__ import annotations

from factrecall_bench.verdicts.evidence import (
    metric_value,
    paired_outcomes,
    question_outcomes,
    run_failure,
    seed_values,
)


def _run(run_id: str = "r0", seed: int = 0, ids=None, correct=None, **extra) -> dict:
    ids = ids if ids is not None else ["p1/birth_city", "p1/major", "p2/birth_city"]
    correct = correct if correct is not None else [1, 0, 1]
    return {"run_id": run_id, "model": "tiny-llama", "seed": seed,
            "per_question": {"ood": {"question_ids": ids, "exact_match": correct}}, **extra}


# --- metric_value ------------------------------------------------------------------------------


def test_an_attributes_value_is_read_from_per_attribute():
    run = {"metrics": {"ood_exact_match": {"value": 0.5}},
           "per_attribute": {"ood_exact_match": {"birth_city": {"value": 0.75},
                                                 "major": {"value": 0.25}},
                             "id_exact_match": {"birth_city": {"value": 1.0}}}}
    assert metric_value(run, "ood_exact_match", "birth_city") == 0.75
    assert metric_value(run, "ood_exact_match", "major") == 0.25
    assert metric_value(run, "ood_exact_match") == 0.5
    assert metric_value(run, "ood_exact_match", "university") is None
    assert metric_value({"metrics": {}}, "ood_exact_match", "major") is None


def test_a_trace_metric_stored_under_metrics_wins_over_the_trace_summary():
    run = {"metrics": {"trace.gini": 0.25}, "trace": {"summary": {"gini": 0.75}}}
    assert metric_value(run, "trace.gini") == 0.25
    assert metric_value({"trace": {"summary": {"gini": 0.75}}}, "trace.gini") == 0.75


# --- question_outcomes -------------------------------------------------------------------------


def test_the_attribute_of_a_question_is_the_last_part_of_its_id():
    run = _run(ids=["s/p1/birth_city", "s/p1/major", "birth_city"], correct=[1, 0, 0])
    assert question_outcomes(run, "ood_exact_match", "birth_city") == {
        "s/p1/birth_city": True, "birth_city": False}
    assert question_outcomes(run, "ood_exact_match", "major") == {"s/p1/major": False}


def test_outcomes_need_both_the_ids_and_the_values_as_lists():
    run = _run()
    run["per_question"]["ood"]["exact_match"] = "101"  # as long as the ids, but not a list
    assert question_outcomes(run, "ood_exact_match") is None
    run = _run()
    run["per_question"]["ood"]["question_ids"] = None
    assert question_outcomes(run, "ood_exact_match") is None


# --- run_failure -------------------------------------------------------------------------------


def test_why_a_run_failed_in_the_words_a_user_reads():
    assert run_failure({"run_id": "r7", "error": "CUDA out of memory"}) == (
        "run r7 failed: CUDA out of memory")
    assert run_failure({"run_id": "r7", "status": "failed"}) == "run r7 failed: run failed"
    assert run_failure({"status": "failed", "reason": "diverged"}) == "run ? failed: diverged"
    assert run_failure({"run_id": "r7", "status": "finished"}) is None


# --- pairing -----------------------------------------------------------------------------------


def test_runs_of_a_without_a_partner_are_skipped_not_the_end_of_the_pairing():
    a = [_run("a0", seed=5), _run("a1", seed=1)]
    b = [_run("b1", seed=1)]
    pairs = paired_outcomes(a, b, "ood_exact_match")
    assert not isinstance(pairs, str)
    assert (pairs.a, pairs.b, pairs.n_runs) == ([True, False, True], [True, False, True], 1)


def test_unmatched_questions_are_added_up_over_seeds():
    a = [_run("a0", 0, ids=["p1/x", "p2/x"], correct=[1, 1]),
         _run("a1", 1, ids=["p1/x", "p3/x"], correct=[1, 0])]
    b = [_run("b0", 0, ids=["p1/x"], correct=[0]),
         _run("b1", 1, ids=["p1/x", "p4/x", "p5/x"], correct=[1, 1, 1])]
    pairs = paired_outcomes(a, b, "ood_exact_match")
    assert not isinstance(pairs, str)
    assert pairs.unmatched_questions == 1 + 3
    assert (pairs.a, pairs.b, pairs.n_runs) == ([True, True], [False, True], 2)


def test_pairing_by_attribute_reads_that_attribute_on_both_sides():
    a = [_run("a0", ids=["p1/birth_city", "p1/major"], correct=[1, 0])]
    b = [_run("b0", ids=["p1/birth_city", "p1/major"], correct=[0, 1])]
    pairs = paired_outcomes(a, b, "ood_exact_match", "major")
    assert not isinstance(pairs, str)
    assert (pairs.a, pairs.b, pairs.unmatched_questions) == ([False], [True], 0)
    b_more = [_run("b0", ids=["p1/birth_city", "p1/major", "p2/birth_city"], correct=[0, 1, 1])]
    pairs = paired_outcomes(a, b_more, "ood_exact_match", "major")
    assert not isinstance(pairs, str) and pairs.unmatched_questions == 0


def test_a_partner_without_per_question_data_is_named():
    a = [_run("a0")]
    b = [{"run_id": "b0", "model": "tiny-llama", "seed": 0}]
    assert paired_outcomes(a, b, "ood_exact_match") == (
        "no per-question data for ood_exact_match in run a0")
    no_id = [{k: v for k, v in _run().items() if k != "run_id"}]
    assert paired_outcomes(no_id, b, "ood_exact_match") == (
        "no per-question data for ood_exact_match in run ?")


# --- seed_values -------------------------------------------------------------------------------


def test_seed_values_of_an_attribute_and_the_run_without_one():
    runs = [{"run_id": "r0", "metrics": {"ood_exact_match": 0.5},
             "per_attribute": {"ood_exact_match": {"major": {"value": 0.25}}}},
            {"run_id": "r1", "metrics": {"ood_exact_match": 0.5},
             "per_attribute": {"ood_exact_match": {"major": {"value": 0.75}}}}]
    assert seed_values(runs, "ood_exact_match", "major") == [0.25, 0.75]
    assert seed_values(runs, "ood_exact_match") == [0.5, 0.5]
    assert seed_values([{"metrics": {}}], "ood_exact_match") == (
        "run ? has no value for ood_exact_match")
