"""The decision rule (verdicts/decision.py): outcome -> status, the correction, what a verdict records
(written for the survivors of mutation testing, docs/mutation.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from factrecall_bench.verdicts.decision import (
    DecisionBasis,
    Verdict,
    adjust_verdicts,
    claim_outcome,
    claim_status,
    status_label,
    suite_exit_code,
    verdicts_document,
)


def _basis(**overrides) -> DecisionBasis:
    fields = {"alpha": 0.05, "level_reachable": True, "effect_large_enough": True,
              "interval_rules_out": False}
    return DecisionBasis(**{**fields, **overrides})


def test_p_equal_to_alpha_is_not_significant():
    assert claim_outcome(0.05, _basis()) == "undecided"
    assert claim_outcome(0.0499, _basis()) == "holds"


def _verdict(p_value, basis=None, detail="d") -> Verdict:
    return Verdict(name="c", kind="claim", status="pass", expect="holds", outcome="holds",
                   test="welch", metric="ood_exact_match", effect=0.4, p_value=p_value,
                   detail=detail, basis=basis)


def test_verdict_entry_keeps_its_detail_and_the_document_its_keys():
    verdict = _verdict(0.01, _basis(), detail="mixed 0.7 vs two-stage 0.1")
    assert verdict.to_dict()["detail"] == "mixed 0.7 vs two-stage 0.1"
    document = verdicts_document("cpu", [verdict])
    assert document["suite"] == "cpu" and document["verdicts"] == [verdict.to_dict()]


def test_status_label_of_a_reported_claim_without_outcome_or_effect():
    assert status_label({"status": "reported"}) == "reported (undecided)"
    assert status_label(SimpleNamespace(status="reported", outcome="holds")) == "reported (holds)"


def test_correction_defaults_to_holm_and_redecides_the_outcome_too():
    verdicts = [_verdict(0.03, _basis()), _verdict(0.04, _basis())]
    corrected = adjust_verdicts(verdicts)
    assert [v.p_adjusted for v in corrected] == pytest.approx([0.06, 0.06])
    assert [(v.outcome, v.status) for v in corrected] == [("undecided", "inconclusive")] * 2


def test_correction_keeps_a_p_value_of_zero_and_fills_verdicts_without_a_basis():
    [zero] = adjust_verdicts([_verdict(0.0, _basis())], "none")
    assert zero.p_adjusted == 0.0 and zero.status == "pass"
    [bare] = adjust_verdicts([_verdict(0.02)], "holm")
    assert bare.p_adjusted == 0.02 and bare.name == "c" and bare.status == "pass"


def test_bad_correction_and_unknown_status_are_named():
    with pytest.raises(ValueError, match="correction must be one of holm, bh, none, got 'bonf'"):
        adjust_verdicts([], "bonf")
    odd = Verdict(name="c", kind="claim", status="maybe", expect="holds", outcome="holds",
                  test="welch", metric="m")
    with pytest.raises(ValueError, match="verdict 'c' has unknown status 'maybe'"):
        suite_exit_code([odd])


def test_a_claim_expected_to_fail_that_holds_is_an_unexpected_pass_unless_strict():
    assert claim_status("holds", "fails") == "xpass"
    assert claim_status("holds", "fails", strict=True) == "fail"
    assert claim_status("does_not_hold", "fails") == "xfail"


def test_a_verdict_entry_lists_its_definitions_rows_as_given():
    rows = ({"definition": "u", "outcome": "holds", "effect": 0.4, "p_value": 0.01,
             "p_adjusted": 0.02},
            {"definition": "g", "outcome": "undecided", "effect": None, "p_value": None,
             "p_adjusted": None})
    entry = Verdict(name="c", kind="claim", status="pass", expect="holds", outcome="holds",
                    test="welch", metric="trace.k", definitions=rows).to_dict()
    assert entry["definitions"] == [
        {"definition": "u", "outcome": "holds", "effect": 0.4, "p_value": 0.01, "p_adjusted": 0.02},
        {"definition": "g", "outcome": "undecided", "effect": None, "p_value": None,
         "p_adjusted": None}]
    assert "definitions" not in _verdict(0.01).to_dict()
