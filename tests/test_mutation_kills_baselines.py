"""Tests written for the survivors of mutation testing of factrecall_bench/verdicts/baselines.py
(docs/mutation.md, third round): the hardware class and file name of a baseline, what a baseline
records from its runs, every message of the strict validation (exact text, one line naming the
file), and the file's exact layout."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factrecall_bench import environment
from factrecall_bench.verdicts import baselines as bl
from factrecall_bench.verdicts.baselines import (
    BaselineError,
    baseline_class,
    baseline_from_results,
    baseline_path,
    baseline_text,
    read_baseline,
    validate_baseline,
    write_baseline,
)


def _run(strategy: str = "mixed", seed: int = 0, **extra: Any) -> dict[str, Any]:
    run = {"run_id": f"{strategy}-s{seed}", "strategy": strategy, "model": "m", "seed": seed,
           "config_hash": "h", "metrics": {"ood_exact_match": 0.5},
           "per_question": {"ood": {"question_ids": ["p1/a", "p2/a"],
                                    "exact_match": [1, 0]}}}
    run.update(extra)
    return run


def _doc(**extra: Any) -> dict[str, Any]:
    doc = {"schema_version": 1, "suite": "s", "suite_hash": "x", "hardware_class": "cpu",
           "created": "2026-01-02T03:04:05+00:00", "git_revision": "r", "versions": {},
           "alpha": 0.05, "min_effect": 0.05, "metrics": ["ood_exact_match"],
           "runs": [_run()]}
    doc.update(extra)
    return doc


def _problem(doc: Any) -> str:
    with pytest.raises(BaselineError) as caught:
        validate_baseline(doc, "SRC")
    text = str(caught.value)
    assert text.startswith("SRC: ")
    return text.removeprefix("SRC: ")


def _result(strategy: str, seed: int, model: str = "m", **extra: Any) -> dict[str, Any]:
    result = {"run_id": f"{strategy}-{model}-s{seed}", "strategy": strategy, "model": model,
              "seed": seed, "config_hash": "c",
              "metrics": {"ood_exact_match": {"value": 0.25 + seed / 100}, "loss": 1.0}}
    result.update(extra)
    return result


# --------------------------------------------------------------------------- classes and paths


@pytest.mark.parametrize("hardware, klass", [
    (" CPU:arm64 ", "cpu"), ("cpu:x86_64:avx2", "cpu"), (":x", "cpu"),
    ("cuda:a:b", "cuda-a-b"), ("ROCm:MI300X", "rocm-mi300x"), ("mps:", "mps"),
    ("cuda:  NVIDIA__H100  ", "cuda-nvidia-h100"), ("xpu", "xpu"),
])
def test_baseline_class_edges(hardware: str, klass: str) -> None:
    assert baseline_class(hardware) == klass


def test_this_machines_class_and_the_default_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "hardware_class", lambda: "cuda:Tesla T4")
    assert bl.this_machines_class() == "cuda-tesla-t4"
    assert baseline_path(tmp_path, "tiny") == tmp_path / "tiny@cuda-tesla-t4.json"
    assert baseline_path(str(tmp_path), "tiny", "cpu:arm64") == tmp_path / "tiny.json"
    assert baseline_path(tmp_path, "tiny", "rocm:X") == tmp_path / "tiny@rocm-x.json"
    monkeypatch.setattr(environment, "hardware_class", lambda: "cpu:x86_64")
    assert bl.this_machines_class() == "cpu"
    assert baseline_path(tmp_path, "tiny") == tmp_path / "tiny.json"


# --------------------------------------------------------------------------- building


def test_joined_and_versions() -> None:
    assert bl._joined([]) == "unknown"
    assert bl._joined(["b", "a", "b"]) == "a,b"
    env = {"versions": {"torch": "2.4", "numpy": 2}, "torch": "2.5", "python": "3.11"}
    assert bl._versions(env) == {"torch": "2.5", "numpy": "2", "python": "3.11"}
    assert bl._versions({"versions": "2.4", "transformers": 4}) == {"transformers": "4"}
    assert bl._common_versions([
        {"environment": {"python": "3.11", "versions": {"torch": "2.4"}}},
        {"environment": {"python": "3.12"}},
        {"environment": None},
    ]) == {"python": "3.11,3.12", "torch": "2.4"}


def test_a_baseline_from_results_records_sorted_runs_and_exact_fields() -> None:
    results = [
        _result("two-stage", 0, environment={"git_revision": "b"}),
        _result("mixed", 2),
        _result("mixed", 10, environment={"git_revision": "a"}),
        _result("mixed", 2, model="a-model"),
    ]
    results[0]["per_attribute"] = {"ood_exact_match": {"city": {"value": 0.5}},
                                   "loss": {"city": {"value": 1.0}}}
    baseline = baseline_from_results("s", "hash", results, "cpu", alpha=np.float32(0.25),
                                     min_effect=0, metrics=("ood_exact_match",))
    assert [(r["strategy"], r["model"], r["seed"]) for r in baseline["runs"]] == [
        ("mixed", "a-model", 2), ("mixed", "m", 10), ("mixed", "m", 2), ("two-stage", "m", 0)]
    assert baseline["git_revision"] == "a,b,unknown"
    assert baseline["versions"] == {}
    assert type(baseline["alpha"]) is float and baseline["alpha"] == 0.25
    assert type(baseline["min_effect"]) is float and baseline["min_effect"] == 0.0
    assert baseline["metrics"] == ["ood_exact_match"] and type(baseline["metrics"]) is list
    first = baseline["runs"][3]
    assert first == {"run_id": "two-stage-m-s0", "strategy": "two-stage", "model": "m",
                     "seed": 0, "config_hash": "c", "metrics": {"ood_exact_match": 0.25},
                     "per_question": {},
                     "per_attribute": {"ood_exact_match": {"city": {"value": 0.5}}}}
    assert "per_attribute" not in baseline["runs"][0]
    assert baseline["created"].endswith("+00:00") and len(baseline["created"]) == 25


def test_building_refuses_with_exact_messages() -> None:
    no_value = _result("mixed", 0)
    del no_value["run_id"]
    del no_value["metrics"]["ood_exact_match"]
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("s", "h", [no_value], "cpu", 0.05, 0.05, ["ood_exact_match"])
    assert str(caught.value) == "cannot make a baseline: run ? has no value for ood_exact_match"
    named = _result("mixed", 0)
    del named["metrics"]["ood_exact_match"]
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("s", "h", [named], "cpu", 0.05, 0.05, ["ood_exact_match"])
    assert str(caught.value) == (
        "cannot make a baseline: run mixed-m-s0 has no value for ood_exact_match")
    failed = _result("mixed", 0, status="failed", reason="oom")
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("s", "h", [failed], "cpu", 0.05, 0.05, ["ood_exact_match"])
    assert str(caught.value) == (
        "cannot make a baseline from a failed run: run mixed-m-s0 failed: oom")
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("tiny", "h", [_result("mixed", 0)], "cpu", 1.0, 0.05,
                              ["ood_exact_match"])
    assert str(caught.value) == (
        "new baseline for suite 'tiny': need 0 < alpha < 1 and min_effect >= 0, got 1.0, 0.05")


# --------------------------------------------------------------------------- validating


def test_a_minimal_baseline_is_valid_and_its_edges() -> None:
    validate_baseline(_doc(), "SRC")
    validate_baseline(_doc(min_effect=0, alpha=0.999), "SRC")
    validate_baseline(_doc(runs=[_run(per_question={})]), "SRC")
    validate_baseline(_doc(runs=[_run(per_attribute={"m": {"a": {"value": 1}}})]), "SRC")
    validate_baseline(_doc(runs=[_run(seed=0), _run(seed=1), _run("b", 0)]), "SRC")


@pytest.mark.parametrize("doc, message", [
    ("x", "must be a JSON object, got str"),
    (None, "must be a JSON object, got null"),
    (_doc(schema_version="1"), 'schema_version must be 1, got "1"'),
    ({"schema_version": 1}, "baseline is missing suite, suite_hash, hardware_class, created, "
                            "git_revision, versions, alpha, min_effect, metrics, runs"),
    (_doc(zeta=1, beta=2), "baseline has unknown key(s) beta, zeta"),
    (_doc(suite=None), "baseline.suite must be str, got null null"),
    (_doc(alpha=True), "baseline.alpha must be a finite number, got bool true"),
    (_doc(alpha=float("nan")), "baseline.alpha must be a finite number, got float NaN"),
    (_doc(alpha=float("inf")), "baseline.alpha must be a finite number, got float Infinity"),
    (_doc(alpha="0.05"), 'baseline.alpha must be a finite number, got str "0.05"'),
    (_doc(versions=["a" * 60]), 'baseline.versions must be dict, got list ["' + "a" * 38),
    (_doc(created="2026-13-01"), "created must be an ISO date-time, got '2026-13-01'"),
    (_doc(alpha=0), "need 0 < alpha < 1 and min_effect >= 0, got 0, 0.05"),
    (_doc(alpha=1), "need 0 < alpha < 1 and min_effect >= 0, got 1, 0.05"),
    (_doc(min_effect=-0.01), "need 0 < alpha < 1 and min_effect >= 0, got 0.05, -0.01"),
    (_doc(versions={"torch": 2}), "versions must map package names to version strings"),
    (_doc(metrics=[]), "metrics must be a non-empty list of metric names"),
    (_doc(metrics=[""]), "metrics must be a non-empty list of metric names"),
    (_doc(metrics=["ood_exact_match", 3]), "metrics must be a non-empty list of metric names"),
    (_doc(metrics=["a", "a"]), "metrics lists a metric twice"),
    (_doc(runs=[]), "runs is empty"),
    (_doc(runs=[[1]]), "runs[0] must be an object, got list"),
    (_doc(runs=[_run(), 3]), "runs[1] must be an object, got int"),
    (_doc(runs=[{"run_id": "a"}]), "runs[0] is missing strategy, model, seed, config_hash, "
                                   "metrics, per_question"),
    (_doc(runs=[_run(extra=1, also=2)]), "runs[0] has unknown key(s) also, extra"),
    (_doc(runs=[_run(seed=True)]), "runs[0].seed must be int, got bool true"),
    (_doc(runs=[_run(seed=1.0)]), "runs[0].seed must be int, got float 1.0"),
    (_doc(runs=[_run(per_attribute=[])]), "runs[0].per_attribute must be dict, got list []"),
    (_doc(runs=[_run(metrics={})]), "runs[0] (mixed-s0) has no value for metric ood_exact_match"),
    (_doc(runs=[_run(metrics={"ood_exact_match": "1"})]),
     'runs[0].metrics.ood_exact_match must be a finite number, got str "1"'),
    (_doc(runs=[_run(per_question={"ood": []})]),
     "runs[0].per_question.ood must be an object with a question_ids list"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": "a"}})]),
     "runs[0].per_question.ood must be an object with a question_ids list"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": ["a", 1]}})]),
     "runs[0].per_question.ood.question_ids must be distinct strings"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": ["a", "a"]}})]),
     "runs[0].per_question.ood.question_ids must be distinct strings"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": ["a"], "em": (1,)}})]),
     "runs[0].per_question.ood.em must be a list as long as question_ids (1)"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": ["a", "b"], "em": [1]}})]),
     "runs[0].per_question.ood.em must be a list as long as question_ids (2)"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": ["a"], "em": [1.0]}})]),
     "runs[0].per_question.ood.em must hold only 0/1 or true/false"),
    (_doc(runs=[_run(per_question={"ood": {"question_ids": ["a"], "em": [-1]}})]),
     "runs[0].per_question.ood.em must hold only 0/1 or true/false"),
    (_doc(runs=[_run(per_attribute={"m": []})]), "runs[0].per_attribute.m must be an object"),
    (_doc(runs=[_run(per_attribute={"m": {"a": []}})]),
     "runs[0].per_attribute.m.a must be an object with a value"),
    (_doc(runs=[_run(per_attribute={"m": {"a": {"v": 1}}})]),
     "runs[0].per_attribute.m.a must be an object with a value"),
    (_doc(runs=[_run(per_attribute={"m": {"a": {"value": None}}})]),
     "runs[0].per_attribute.m.a.value must be a finite number, got null null"),
    (_doc(runs=[_run("b", 1), _run("b", 1), _run("a", 2), _run("a", 2)]),
     "two runs for strategy 'a', model 'm', seed 2"),
])
def test_every_validation_message(doc: Any, message: str) -> None:
    problem = _problem(copy.deepcopy(doc))
    assert problem == message


def test_long_values_are_cut_to_40_characters() -> None:
    assert _problem(_doc(git_revision=["x" * 60])) == (
        'baseline.git_revision must be str, got list ["' + "x" * 38)


def test_true_and_false_are_valid_outcomes() -> None:
    runs = [_run(per_question={"ood": {"question_ids": ["a", "b"], "em": [True, False]}})]
    validate_baseline(_doc(runs=runs), "SRC")


def test_per_attribute_problems_come_after_per_question_ones() -> None:
    run = _run(per_question={"ood": []}, per_attribute={"m": []})
    assert _problem(_doc(runs=[run])) == (
        "runs[0].per_question.ood must be an object with a question_ids list")
    # the first run's problem is the one named
    assert _problem(_doc(runs=[_run(seed="a"), _run(seed="b")])) == (
        'runs[0].seed must be int, got str "a"')


# --------------------------------------------------------------------------- reading and writing


def test_the_file_layout_is_exact(tmp_path: Path) -> None:
    doc = _doc(runs=[_run(), _run(seed=1, per_question={})])
    assert baseline_text(doc) == (
        "{\n"
        '  "schema_version": 1,\n  "suite": "s",\n  "suite_hash": "x",\n'
        '  "hardware_class": "cpu",\n  "created": "2026-01-02T03:04:05+00:00",\n'
        '  "git_revision": "r",\n  "versions": {},\n  "alpha": 0.05,\n'
        '  "min_effect": 0.05,\n  "metrics": ["ood_exact_match"],\n'
        '  "runs": [\n'
        '    {"run_id": "mixed-s0", "strategy": "mixed", "model": "m", "seed": 0, '
        '"config_hash": "h", "metrics": {"ood_exact_match": 0.5}, "per_question": '
        '{"ood": {"question_ids": ["p1/a", "p2/a"], "exact_match": [1, 0]}}},\n'
        '    {"run_id": "mixed-s1", "strategy": "mixed", "model": "m", "seed": 1, '
        '"config_hash": "h", "metrics": {"ood_exact_match": 0.5}, "per_question": {}}\n'
        "  ]\n}\n")
    path = tmp_path / "b.json"
    write_baseline(str(path), doc)
    assert path.read_text("utf-8") == baseline_text(doc)
    assert read_baseline(str(path)) == doc
    assert read_baseline(path, expected_suite="s") == doc
    with pytest.raises(ValueError, match="Out of range float"):
        baseline_text({**doc, "runs": [{"x": float("nan")}]})


def test_write_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    with pytest.raises(BaselineError) as caught:
        write_baseline(path, _doc(runs=[]))
    assert str(caught.value) == f"{path}: runs is empty"
    assert not path.exists()


def test_reading_problems_are_one_exact_line(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(BaselineError) as caught:
        read_baseline(missing)
    assert str(caught.value) == f"{missing}: no baseline file (record one first)"
    assert caught.value.__suppress_context__
    with pytest.raises(BaselineError) as caught:
        read_baseline(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: cannot read the baseline: [Errno 21]")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"suite": "caf\xe9"}')
    with pytest.raises(BaselineError) as caught:
        read_baseline(latin)
    assert str(caught.value).startswith(f"{latin}: cannot read the baseline: 'utf-8' codec")
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "a": 1,\n  "b" 2\n}', "utf-8")
    with pytest.raises(BaselineError) as caught:
        read_baseline(broken)
    assert str(caught.value) == (
        f"{broken}: invalid JSON at line 3 column 7: Expecting ':' delimiter")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_doc()), "utf-8")
    with pytest.raises(BaselineError) as caught:
        read_baseline(good, expected_suite="t")
    assert str(caught.value) == f"{good}: baseline is for suite 's', not 't'"
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(_doc(alpha=2.0)), "utf-8")
    with pytest.raises(BaselineError) as caught:
        read_baseline(invalid, expected_suite="s")
    assert str(caught.value) == (
        f"{invalid}: need 0 < alpha < 1 and min_effect >= 0, got 2.0, 0.05")
