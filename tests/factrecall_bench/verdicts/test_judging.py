"""A suite's verdicts (verdicts/judging.py) as mutation testing (docs/mutation.md) found them
unpinned: every claim is judged and Holm-corrected as one family, the baseline comparison uses the
stored minimum effect and level with the suite's test, correction and per-attribute setting, and
what a user is told when the baseline is missing, malformed or for another suite, or when the
suite changed since it was stored."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.suite import load_suite
from factrecall_bench.verdicts import compare_with_baseline
from factrecall_bench.verdicts.baselines import baseline_from_results, write_baseline
from factrecall_bench.verdicts.claims import Claim
from factrecall_bench.verdicts.judging import judge_baseline, judge_claims
from factrecall_bench.verdicts.regressions import BaselineSubject, RegressionSettings
from tests.conftest import TINY_SUITE
from tests.factrecall_bench.verdicts.test_baselines import _results
from tests.factrecall_bench.verdicts.test_verdicts import (
    _seeds_at,
    _trace_results,
    at_least_claim,
    make_result,
)

# --- claims ------------------------------------------------------------------------------------


def _two_claim_results() -> tuple[list[dict], list[Claim]]:
    first = _trace_results("score_a", [0.9, 1.0, 1.1], [0.7, 0.8, 0.9])
    second = _trace_results("score_b", [1.0, 1.1, 1.25], [0.8, 0.9, 1.0])
    results = [{**a, "trace": {"summary": {**a["trace"]["summary"], **b["trace"]["summary"]}}}
               for a, b in zip(first, second, strict=True)]
    claims = [Claim.from_dict({"name": f"mixed higher on {key}", "metric": f"trace.{key}",
                               "kind": "greater", "a": "mixed", "b": "two-stage",
                               "min_effect": 0.0, "test": "welch", "why": "judging"})
              for key in ("score_a", "score_b")]
    return results, claims


def test_every_claim_gets_a_verdict_holm_corrected_as_one_family():
    results, claims = _two_claim_results()
    verdicts = judge_claims(claims, results)
    assert [v.name for v in verdicts] == ["mixed higher on score_a", "mixed higher on score_b"]
    raw = sorted(v.p_value for v in verdicts)
    assert raw[0] < raw[1] < 0.05  # each passes alone
    # Holm: the smaller p times 2, the larger times 1, then the running maximum.
    expected = sorted([min(1.0, 2 * raw[0]), max(min(1.0, 2 * raw[0]), raw[1])])
    assert sorted(v.p_adjusted for v in verdicts) == pytest.approx(expected)
    assert [v.status for v in verdicts] == ["inconclusive", "inconclusive"]


def test_a_suite_without_claims_has_no_claim_verdicts():
    assert judge_claims((), []) == []


def test_a_strict_expected_failure_that_holds_still_fails_after_the_correction():
    # Seeds at 2%, 3% and 1% against "at most 10%": it holds, though the paper's number fails here.
    results = _seeds_at("two-stage", [0.02, 0.03, 0.01])
    claims = [at_least_claim(name=f"{strict}", kind="at_most", strategies=["two-stage"],
                             threshold=0.10, test="t", expect="fails", strict=strict)
              for strict in (True, False)]
    verdicts = judge_claims(claims, results)
    assert [(v.outcome, v.status) for v in verdicts] == [("holds", "fail"), ("holds", "xpass")]
    assert all(v.p_adjusted is not None for v in verdicts)


def _traced(strategy: str, seed: int, main: str, counts: dict[str, float]) -> dict:
    """A run whose trace recorded shared_count@0.01 under each definition of `counts`; its own
    summary is the one of `main`."""
    result = make_result(strategy, seed, [1] * 10)
    result["trace"] = {"definition": main, "summary": {"shared_count@0.01": counts[main]},
                       "definitions": {name: {"summary": {"shared_count@0.01": value}}
                                       for name, value in counts.items()}}
    return result


def _definition_runs(main_of_last: str = "u") -> list[dict]:
    # Under "u" mixed is ahead on every seed (by 90), under "g" behind (by 90).
    runs = [_traced("mixed", s, "u", {"u": 100.0 + s, "g": 10.0 + s}) for s in range(4)]
    runs += [_traced("two-stage", s, "u", {"u": 10.0 + s, "g": 100.0 + s}) for s in range(3)]
    return runs + [_traced("two-stage", 3, main_of_last, {"u": 13.0, "g": 103.0})]


TRACE_CLAIM = Claim.from_dict({"name": "mixed shares more", "metric": "trace.shared_count@0.01",
                               "kind": "greater", "a": "mixed", "b": "two-stage",
                               "min_effect": 0.0, "test": "welch", "why": "judging"})


def test_a_trace_claim_is_decided_under_the_main_definition_and_says_how_the_others_judge_it():
    [verdict] = judge_claims((TRACE_CLAIM,), _definition_runs())
    assert (verdict.outcome, verdict.status) == ("holds", "pass")
    assert [(row["definition"], row["outcome"]) for row in verdict.definitions] == [
        ("u", "holds"), ("g", "does_not_hold")]
    assert verdict.definitions[0]["effect"] == pytest.approx(90.0)
    assert verdict.definitions[1]["effect"] == pytest.approx(-90.0)
    assert verdict.detail.startswith("mixed 102 vs two-stage 11.5 over 4 vs 4 seeds; welch ")
    assert verdict.detail.endswith("; holds under 1 of 2 trace definitions (Holm over 2); "
                                   "under the main one (u): holds")


def test_runs_of_different_main_definitions_have_no_main_one_to_name():
    [verdict] = judge_claims((TRACE_CLAIM,), _definition_runs(main_of_last="g"))
    assert verdict.detail.endswith("; holds under 1 of 2 trace definitions (Holm over 2)")


def test_a_claim_on_a_plain_metric_has_no_definitions_line():
    claim = dataclasses.replace(TRACE_CLAIM, metric="ood_exact_match")
    [verdict] = judge_claims((claim,), _definition_runs())
    assert verdict.definitions == () and "trace definitions" not in verdict.detail


# --- baseline ----------------------------------------------------------------------------------


def _stderr(monkeypatch) -> io.StringIO:
    """The notes go to sys.stderr; read them from a stand-in (pytest's capture is not always on:
    mutmut runs the tests with its own)."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def _tiny_subject(**regression) -> BaselineSubject:
    """The tiny suite as the baseline comparison reads it, with these regression settings."""
    settings = RegressionSettings(**{"enabled": True, **regression})
    return dataclasses.replace(load_suite(str(TINY_SUITE)).baseline_subject, settings=settings)


RUNS_HARDWARE = "cpu:x86_64"
"""What tests.test_baselines._result records as environment.hardware."""


def _stored(suite, tmp_path: Path, *, name: str | None = None, suite_hash: str | None = None,
            hardware: str | None = None, results=None) -> Path:
    baseline = baseline_from_results(
        name or suite.suite_name, suite_hash or suite.suite_hash, results or _results(0.7),
        hardware or RUNS_HARDWARE, alpha=0.05, min_effect=0.05,
        metrics=["ood_exact_match", "id_exact_match"])
    path = tmp_path / "baselines" / f"{name or suite.suite_name}.json"
    write_baseline(path, baseline)
    return path


def test_no_regression_table_means_no_baseline_verdicts(tmp_path):
    suite = _tiny_subject()
    _stored(suite, tmp_path)
    disabled = dataclasses.replace(suite, settings=RegressionSettings())
    assert judge_baseline(disabled, _results(0.2), tmp_path / "baselines") == []


def test_a_missing_baseline_is_one_inconclusive_verdict_that_says_how_to_make_it(tmp_path):
    suite = _tiny_subject()
    [verdict] = judge_baseline(suite, _results(0.7), tmp_path / "baselines")
    path = tmp_path / "baselines" / "tiny.json"
    assert verdict.name == "tiny baseline"
    assert (verdict.kind, verdict.status, verdict.expect, verdict.outcome) == (
        "regression", "inconclusive", "no_change", "undecided")
    assert (verdict.test, verdict.metric) == ("-", "-")
    assert verdict.detail == (f"no baseline at {path}: create one with "
                              f"`factrecall-bench baseline update --suite {TINY_SUITE}`")
    [explicit] = judge_baseline(suite, [], tmp_path, baseline_file=tmp_path / "other.json")
    assert explicit.detail.startswith(f"no baseline at {tmp_path / 'other.json'}: ")


def test_stored_effect_and_level_decide_with_the_suites_test_correction_and_attributes(
        tmp_path, monkeypatch):
    stderr = _stderr(monkeypatch)
    # The suite asks for a looser gate (min_effect 0.5, alpha 0.2) and one metric: the stored
    # baseline's 0.05 / 0.05 and its two metrics decide, so a drop from 0.7 to 0.4 fails.
    suite = _tiny_subject(min_effect=0.5, alpha=0.2, metrics=("id_exact_match",), test="welch",
                   correction="none", per_attribute=True)
    path = _stored(suite, tmp_path)
    fresh = _results(0.4, seed=1)
    verdicts = judge_baseline(suite, fresh, tmp_path / "baselines")
    from factrecall_bench.verdicts.baselines import read_baseline
    baseline = read_baseline(path)
    assert verdicts == compare_with_baseline(fresh, baseline, ["ood_exact_match", "id_exact_match"],
                                             0.05, 0.05, "welch", "none", per_attribute=True)
    names = [v.name for v in verdicts]
    assert "mixed/tiny-llama ood_exact_match[birth_city]" in names
    assert "mixed/tiny-llama id_exact_match" in names
    assert {v.test for v in verdicts} == {"welch"}
    assert all(v.p_adjusted == v.p_value for v in verdicts)  # correction "none"
    ood = next(v for v in verdicts if v.name == "mixed/tiny-llama ood_exact_match")
    assert ood.status == "fail"
    assert stderr.getvalue() == ""  # same suite hash, same hardware: no note


def test_an_explicit_baseline_file_may_be_of_another_suite(tmp_path):
    suite = _tiny_subject()
    path = _stored(suite, tmp_path, name="elsewhere")
    verdicts = judge_baseline(suite, _results(0.7), tmp_path / "unused", baseline_file=path)
    assert len(verdicts) == 4 and all(v.kind == "regression" for v in verdicts)
    # found by suite name in the folder, a baseline of another suite is refused
    (tmp_path / "baselines" / "tiny.json").write_text(path.read_text("utf-8"), "utf-8")
    with pytest.raises(UserError) as error:
        judge_baseline(suite, _results(0.7), tmp_path / "baselines")
    assert str(error.value) == (f"{tmp_path / 'baselines' / 'tiny.json'}: baseline is for suite "
                                "'elsewhere', not 'tiny'")


def test_a_malformed_baseline_is_a_user_error_naming_the_file(tmp_path):
    suite = _tiny_subject()
    path = _stored(suite, tmp_path)
    path.write_text("{", "utf-8")
    with pytest.raises(UserError, match=str(path)):
        judge_baseline(suite, _results(0.7), tmp_path / "baselines")


def test_a_note_when_the_suite_changed_since_the_baseline(tmp_path, monkeypatch):
    suite = _tiny_subject()
    stderr = _stderr(monkeypatch)
    _stored(suite, tmp_path, suite_hash="0ld")
    verdicts = judge_baseline(suite, _results(0.7), tmp_path / "baselines")
    assert len(verdicts) == 4  # still compared
    assert stderr.getvalue() == "note: the suite tiny changed since its baseline was stored\n"


# --- baselines per hardware class --------------------------------------------------------------

H100 = "cuda:NVIDIA H100 80GB HBM3"


def _on(hardware: str, results: list[dict]) -> list[dict]:
    return [{**r, "environment": {**r["environment"], "hardware": hardware}} for r in results]


def test_runs_on_several_hardware_classes_are_named(tmp_path):
    results = _results(0.7)
    mixed = _on(H100, results[:3]) + results[3:]
    [verdict] = judge_baseline(_tiny_subject(), mixed, tmp_path / "baselines")
    assert verdict.detail == ("the runs were made on 2 hardware classes "
                              "(cpu, cuda-nvidia-h100-80gb-hbm3), and a baseline holds one")


def test_a_missing_class_names_the_suites_other_baselines(tmp_path):
    suite = _tiny_subject()
    folder = tmp_path / "baselines"
    [verdict] = judge_baseline(suite, _on(H100, _results(0.7)), folder)
    path = folder / "tiny@cuda-nvidia-h100-80gb-hbm3.json"
    how = f"create one with `factrecall-bench baseline update --suite {TINY_SUITE}`"
    assert verdict.detail == (f"no baseline for cuda-nvidia-h100-80gb-hbm3 hardware at {path}: "
                              f"{how} on cuda-nvidia-h100-80gb-hbm3 hardware")
    _stored(suite, tmp_path)  # tiny.json
    for other in ("tiny@cuda-a100.json", "tinyer.json"):
        (folder / other).write_text("{}", "utf-8")
    [verdict] = judge_baseline(suite, _on(H100, _results(0.7)), folder)
    assert verdict.detail == (
        f"no baseline for cuda-nvidia-h100-80gb-hbm3 hardware at {path} (this suite's other "
        f"baselines: tiny.json, tiny@cuda-a100.json): {how} on cuda-nvidia-h100-80gb-hbm3 hardware")


def test_a_run_without_a_recorded_hardware_string_counts_as_this_machines():
    from factrecall_bench.environment import hardware_class
    from factrecall_bench.verdicts.judging import runs_hardware

    assert runs_hardware([{"environment": {"hardware": 7}}, {"environment": {"hardware": ""}},
                          {}, {"environment": {"hardware": H100}}]) == [
        hardware_class(), hardware_class(), hardware_class(), H100]
    assert runs_hardware([]) == [hardware_class()]


def test_the_note_names_every_machine_of_the_same_class(tmp_path, monkeypatch):
    suite = _tiny_subject()
    _stored(suite, tmp_path)
    results = _results(0.7)
    runs = _on("cpu:arm64", results[:3]) + results[3:]
    stderr = _stderr(monkeypatch)
    verdicts = judge_baseline(suite, runs, tmp_path / "baselines")
    assert len(verdicts) == 4
    assert stderr.getvalue() == ("note: baseline made on cpu:x86_64, this is cpu:arm64,cpu:x86_64: "
                                 "numbers may differ\n")


# --- a suite that extends another --------------------------------------------------------------


def _trained_as(results: list[dict], prefix: str) -> list[dict]:
    """The runs with a training identity each (what a baseline entry speaks for)."""
    return [{**r, "training_identity": f"{prefix}-{r['strategy']}-{r['seed']}"} for r in results]


def _child(**fields) -> BaselineSubject:
    settings = RegressionSettings(enabled=True, min_effect=0.5, alpha=0.2,
                                  metrics=("id_exact_match",), test="welch", correction="none",
                                  per_attribute=True)
    return BaselineSubject(**{"suite_name": "child", "suite_hash": "c", "settings": settings,
                              **fields})


def _store(folder: Path, suite: str, results: list[dict], suite_hash: str = "p") -> None:
    write_baseline(folder / f"{suite}.json", baseline_from_results(
        suite, suite_hash, results, RUNS_HARDWARE, alpha=0.05, min_effect=0.05,
        metrics=["ood_exact_match", "id_exact_match"]))


def _mean_ood(runs: list[dict]) -> float:
    return sum(run["metrics"]["ood_exact_match"]["value"] for run in runs) / len(runs)


def test_a_suite_without_a_baseline_of_its_own_is_judged_by_the_extended_suites(
        tmp_path, monkeypatch):
    folder = tmp_path / "baselines"
    parent_runs = _trained_as(_results(0.7), "parent")
    _store(folder, "parent", parent_runs)
    # The child trains mixed as the parent does (and it dropped from 0.7 to 0.4), and two-stage
    # with settings of its own.
    mixed = _trained_as([r for r in _results(0.4, seed=1) if r["strategy"] == "mixed"], "parent")
    own = _trained_as([r for r in _results(0.7, seed=2) if r["strategy"] == "two-stage"], "child")
    subject = _child(extends="parent", extended_identities=frozenset(
        run["training_identity"] for run in parent_runs))
    stderr = _stderr(monkeypatch)
    verdicts = judge_baseline(subject, mixed + own, folder)
    assert stderr.getvalue() == ("note: suite child has no baseline of its own; its runs trained "
                                 "as suite parent's are compared with parent's baseline\n")
    # The parent's stored metrics, minimum effect 0.05 and level 0.05 decide, with the child's
    # test (welch), correction (none) and per-attribute setting.
    assert [(v.name, v.test, v.status) for v in verdicts] == [
        ("mixed/tiny-llama ood_exact_match", "welch", "fail"),
        ("mixed/tiny-llama ood_exact_match[birth_city]", "welch", "fail"),
        ("mixed/tiny-llama id_exact_match", "welch", "pass"),
        ("two-stage/tiny-llama baseline", "-", "no_baseline")]
    assert all(v.p_adjusted == v.p_value for v in verdicts)
    parent_mixed = [r for r in parent_runs if r["strategy"] == "mixed"]
    assert verdicts[0].effect == pytest.approx(_mean_ood(mixed) - _mean_ood(parent_mixed))
    assert verdicts[3].detail.startswith("no baseline for these settings: the parent baseline "
                                         "holds no run trained as seed(s) 0, 1, 2 were")


def test_a_suite_with_a_baseline_of_its_own_is_judged_by_it_not_the_extended_suites(
        tmp_path, monkeypatch):
    folder = tmp_path / "baselines"
    runs = _trained_as(_results(0.7), "parent")
    _store(folder, "parent", _trained_as(_results(0.1, seed=3), "parent"))
    _store(folder, "child", runs, suite_hash="c")
    stderr = _stderr(monkeypatch)
    subject = _child(extends="parent", extended_identities=frozenset(
        run["training_identity"] for run in runs))
    verdicts = judge_baseline(subject, runs, folder)
    assert stderr.getvalue() == ""
    assert len(verdicts) == 6 and {v.status for v in verdicts} == {"pass"}


def test_the_extended_suites_baseline_must_be_that_suites(tmp_path):
    folder = tmp_path / "baselines"
    runs = _trained_as(_results(0.7), "parent")
    _store(folder, "elsewhere", runs)
    (folder / "parent.json").write_text((folder / "elsewhere.json").read_text("utf-8"), "utf-8")
    with pytest.raises(UserError) as error:
        judge_baseline(_child(extends="parent"), runs, folder)
    assert str(error.value) == (f"{folder / 'parent.json'}: baseline is for suite 'elsewhere', "
                                "not 'parent'")


def test_without_either_baseline_the_hint_names_the_suite_by_default(tmp_path):
    [verdict] = judge_baseline(_child(extends="parent"), _results(0.7), tmp_path)
    assert verdict.detail == (f"no baseline at {tmp_path / 'child.json'}: create one with "
                              "`factrecall-bench baseline update --suite child`")
    assert _child().command_arguments == "--suite child"
    assert _child(command_arguments="--suite my/child.toml").command_arguments == (
        "--suite my/child.toml")


def test_a_variations_runs_of_other_settings_have_no_baseline_not_a_doubt(tmp_path):
    folder = tmp_path / "baselines"
    runs = _trained_as(_results(0.7), "suite")
    _store(folder, "child", runs, suite_hash="c")
    mixed = [r for r in runs if r["strategy"] == "mixed"]
    varied = _trained_as([r for r in runs if r["strategy"] == "two-stage"], "varied")
    subject = _child(variation=True, own_identities=frozenset(
        run["training_identity"] for run in mixed))
    verdicts = judge_baseline(subject, mixed + varied, folder)
    assert [(v.name, v.status) for v in verdicts] == [
        ("mixed/tiny-llama ood_exact_match", "pass"),
        ("mixed/tiny-llama ood_exact_match[birth_city]", "pass"),
        ("mixed/tiny-llama id_exact_match", "pass"),
        ("two-stage/tiny-llama baseline", "no_baseline")]
