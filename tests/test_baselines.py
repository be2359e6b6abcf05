"""Tests of baseline files (factrecall_bench.verdicts.baselines): round trip, strict validation, atomic
writes, and regression checks against a baseline read from disk."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factrecall_bench import io as atomic_io
from factrecall_bench.verdicts import compare_with_baseline, suite_exit_code
from factrecall_bench.verdicts.baselines import (
    BaselineError,
    baseline_from_results,
    baseline_path,
    read_baseline,
    write_baseline,
)
from factrecall_bench.verdicts.stats import wilson_interval

METRICS = ["ood_exact_match", "id_exact_match"]


def _result(strategy: str, seed: int, correct: list[int], revision: str = "abc123") -> dict:
    """A result.json as the runner writes it: ID questions about P_train people (all right), OOD
    about P_test people (`correct`), versions under environment["versions"]."""
    def metric(answers: list[int]) -> dict[str, float]:
        low, high = wilson_interval(sum(answers), len(answers))
        return {"value": sum(answers) / len(answers), "low": low, "high": high, "n": len(answers)}

    id_correct = [1] * len(correct)
    return {
        "schema_version": 1, "run_id": f"{strategy}-tiny-llama-s{seed}", "suite": "cpu",
        "strategy": strategy, "model": "tiny-llama", "seed": seed, "config_hash": "c0ffee",
        "metrics": {"ood_exact_match": metric(correct), "id_exact_match": metric(id_correct)},
        "per_attribute": {"ood_exact_match": {"birth_city": metric(correct)}},
        "per_question": {
            "id": {"question_ids": [f"p{i}/birth_city" for i in range(len(correct))],
                   "exact_match": id_correct, "first_token": id_correct},
            "ood": {"question_ids": [f"p{10_000 + i}/birth_city" for i in range(len(correct))],
                    "exact_match": correct, "first_token": correct}},
        "environment": {"python": "3.11.7", "git_revision": revision, "hardware": "cpu:x86_64",
                        "versions": {"torch": "2.4.0", "transformers": "4.56.0"}},
    }


def _results(accuracy: float = 0.7, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [_result(strategy, s, (rng.random(150) < accuracy).astype(int).tolist())
            for strategy in ("mixed", "two-stage") for s in range(3)]


def _baseline(results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return baseline_from_results("cpu", "suitehash", results or _results(), "cpu:x86_64",
                                 alpha=0.05, min_effect=0.05, metrics=METRICS)


def test_baseline_round_trip(tmp_path: Path) -> None:
    baseline = _baseline()
    path = baseline_path(tmp_path / "baselines", "cpu")
    write_baseline(path, baseline)
    assert path == tmp_path / "baselines" / "cpu.json"
    assert read_baseline(path, expected_suite="cpu") == baseline
    assert sorted(p.name for p in path.parent.iterdir()) == ["cpu.json"]  # no temp file left
    text = path.read_text("utf-8")
    assert text.count("\n") == 11 + 1 + 6 + 2  # header keys, "runs": [, one line per run, ]}


def test_baseline_records_what_regressions_need() -> None:
    baseline = _baseline()
    assert baseline["schema_version"] == 1
    assert (baseline["suite"], baseline["suite_hash"], baseline["hardware_class"]) == (
        "cpu", "suitehash", "cpu:x86_64")
    assert baseline["git_revision"] == "abc123"
    assert baseline["versions"] == {"python": "3.11.7", "torch": "2.4.0",
                                    "transformers": "4.56.0"}
    run = baseline["runs"][0]
    assert set(run) == {"run_id", "strategy", "model", "seed", "config_hash", "metrics",
                        "per_question", "per_attribute"}
    assert set(run["metrics"]) == set(METRICS)
    assert isinstance(run["metrics"]["ood_exact_match"], float)


def test_mixed_revisions_are_all_recorded() -> None:
    results = _results()
    results[0] = {**results[0], "environment": {**results[0]["environment"],
                                                "git_revision": "def456"}}
    assert _baseline(results)["git_revision"] == "abc123,def456"


def test_baseline_refuses_runs_without_a_metric_or_failed_runs() -> None:
    results = _results()
    del results[2]["metrics"]["id_exact_match"]
    with pytest.raises(BaselineError, match="has no value for id_exact_match"):
        _baseline(results)
    failed = _results()
    failed[0]["status"] = "failed"
    with pytest.raises(BaselineError, match="failed run"):
        _baseline(failed)


def _mutate(path: tuple, value: Any) -> Any:
    def apply(baseline: dict[str, Any]) -> None:
        target = baseline
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


DELETE = object()
MALFORMED = [
    (_mutate(("schema_version",), 2), "schema_version must be 1, got 2"),
    (_mutate(("schema_version",), DELETE), "schema_version must be 1, got null"),
    (_mutate(("suite",), 7), "baseline.suite must be str, got int"),
    (_mutate(("alpha",), True), "baseline.alpha must be a finite number"),
    (_mutate(("alpha",), 2.0), "need 0 < alpha < 1"),
    (_mutate(("created",), "yesterday"), "created must be an ISO date-time"),
    (_mutate(("runs",), []), "runs is empty"),
    (_mutate(("runs",), {}), "baseline.runs must be list"),
    (_mutate(("metrics",), ["ood_exact_match", "ood_exact_match"]), "lists a metric twice"),
    (_mutate(("hardware_class",), DELETE), "baseline is missing hardware_class"),
    (_mutate(("surprise",), 1), "unknown key(s) surprise"),
    (_mutate(("runs", 0, "seed"), "0"), "runs[0].seed must be int, got str"),
    (_mutate(("runs", 0, "metrics", "ood_exact_match"), None), "must be a finite number"),
    (_mutate(("runs", 1, "metrics", "id_exact_match"), DELETE), "has no value for metric"),
    (_mutate(("runs", 0, "per_question", "ood", "exact_match"), [1, 0]), "as long as question"),
    (_mutate(("runs", 0, "per_question", "ood", "exact_match", 0), 2), "only 0/1"),
    (_mutate(("runs", 0, "per_attribute", "ood_exact_match", "birth_city"), {}), "with a value"),
    (_mutate(("runs", 1, "seed"), 0), "two runs for strategy 'mixed'"),
    (_mutate(("versions", "torch"), 2.4), "versions must map package names"),
]


@pytest.mark.parametrize(("mutate", "message"), MALFORMED)
def test_malformed_baselines_raise_one_clear_line(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    baseline = copy.deepcopy(_baseline())
    mutate(baseline)
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(baseline), "utf-8")
    with pytest.raises(BaselineError) as caught:
        read_baseline(path)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"{path}: ") and "\n" not in text


@pytest.mark.parametrize(("content", "message"), [
    ("{\"schema_version\": 1,", "invalid JSON at line 1 column"),
    ("[1, 2]", "must be a JSON object, got list"),
    ("", "invalid JSON"),
])
def test_unreadable_baselines_raise(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cpu.json"
    path.write_text(content, "utf-8")
    with pytest.raises(BaselineError, match=message):
        read_baseline(path)


def test_missing_baseline_and_wrong_suite(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="no baseline file"):
        read_baseline(tmp_path / "absent.json")
    path = tmp_path / "cpu.json"
    write_baseline(path, _baseline())
    with pytest.raises(BaselineError, match="baseline is for suite 'cpu', not 'gpu'"):
        read_baseline(path, expected_suite="gpu")
    assert isinstance(BaselineError("x"), ValueError)


def test_write_refuses_an_invalid_baseline_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "cpu.json"
    write_baseline(path, _baseline())
    before = path.read_bytes()
    broken = {**_baseline(), "schema_version": 3}
    with pytest.raises(BaselineError, match="schema_version"):
        write_baseline(path, broken)
    assert path.read_bytes() == before


def test_interrupted_write_keeps_the_old_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cpu.json"
    write_baseline(path, _baseline())
    before = path.read_bytes()

    def crash(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_baseline(path, _baseline(_results(accuracy=0.2)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.json"]


def test_regressions_against_a_baseline_read_from_disk(tmp_path: Path) -> None:
    results = _results()
    path = tmp_path / "cpu.json"
    write_baseline(path, _baseline(results))
    baseline = read_baseline(path, expected_suite="cpu")
    same = compare_with_baseline(results, baseline, baseline["metrics"],
                                 baseline["min_effect"], baseline["alpha"])
    assert suite_exit_code(same) == 0 and len(same) == 4
    rng = np.random.default_rng(5)
    worse = [_result("mixed", r["seed"], (rng.random(150) < 0.3).astype(int).tolist())
             if r["strategy"] == "mixed" else r for r in results]
    verdicts = compare_with_baseline(worse, baseline, baseline["metrics"],
                                     baseline["min_effect"], baseline["alpha"])
    failed = sorted(v.name for v in verdicts if v.status == "fail")
    assert failed == ["mixed/tiny-llama ood_exact_match"]  # only OOD got worse
    assert suite_exit_code(verdicts) == 1
