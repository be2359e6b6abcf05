"""Tests of baseline files (factrecall_bench.verdicts.baselines): round trip, strict validation, atomic
writes, and regression checks against a baseline read from disk."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factrecall_bench import io as atomic_io
from factrecall_bench.identity import training_identity
from factrecall_bench.verdicts import compare_with_baseline, status_label, suite_exit_code
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


# ---------------------------------------------------------------------------------------------
# A baseline speaks only for the settings it was made with (issue 29)

TWO_STAGE_PHASES = [{"name": "bio", "epochs": {"bio": 16.0}, "mix": {}, "lr": 0.001},
                    {"name": "qa", "epochs": {"qa_train": 16.0}, "mix": {}, "lr": 0.001}]


def _trained_as(result: dict[str, Any], stage2_lr: float = 0.001) -> dict[str, Any]:
    """The result with a config (as result.json has it): two-stage phases at this stage-2 rate,
    a lower batch size than the default, and the result's seed."""
    phases = copy.deepcopy(TWO_STAGE_PHASES)
    phases[1]["lr"] = stage2_lr
    config = {"suite": "cpu", "variant": "base", "seed": result["seed"], "phases": phases,
              "train": {"batch_size": 8, "stage2_lr": stage2_lr, "log_every": 3},
              "trace": {"enabled": True}}
    return {**result, "config": config}


def _two_stage(accuracy: float, rng_seed: int, stage2_lr: float = 0.001) -> list[dict[str, Any]]:
    rng = np.random.default_rng(rng_seed)
    return [_trained_as(_result("two-stage", seed,
                                (rng.random(150) < accuracy).astype(int).tolist()), stage2_lr)
            for seed in range(3)]


def _regressions(fresh: list[dict[str, Any]], baseline: dict[str, Any],
                 own_identities: frozenset[str] | None = None) -> list[Any]:
    return compare_with_baseline(fresh, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], own_identities=own_identities)


def test_a_baseline_entry_stores_the_runs_training_identity() -> None:
    baseline = _baseline(_two_stage(0.7, 1))
    # What decides the trained model, by hand: no data digest or model set (defaults), the
    # phases, the train settings other than the strategy's (stage2_lr) and bookkeeping
    # (log_every), the seed; never the suite, variant or trace.
    settings = {"data": {}, "model": {}, "model_revision": "", "phases": TWO_STAGE_PHASES,
                "train": {"batch_size": 8}, "eval": {}, "seed": 0}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert baseline["runs"][0]["seed"] == 0
    assert baseline["runs"][0]["training_identity"] == expected


def test_a_variation_with_another_identity_gets_no_baseline_not_a_failure() -> None:
    baseline = _baseline(_two_stage(0.7, 1))
    variation = _two_stage(0.2, 2, stage2_lr=3e-4)  # much worse: other settings, not a regression
    verdicts = _regressions(variation, baseline, own_identities=frozenset())
    assert [(v.name, v.status, v.outcome) for v in verdicts] == [
        ("two-stage/tiny-llama baseline", "no_baseline", "no_baseline")]
    assert verdicts[0].detail.startswith("no baseline for these settings: the cpu baseline holds "
                                         "no run trained as seed(s) 0, 1, 2 were")
    assert status_label(verdicts[0].to_dict()) == "no baseline"
    assert suite_exit_code(verdicts) == 0


def test_an_entry_of_the_same_identity_is_compared_even_in_a_variation() -> None:
    baseline = _baseline(_two_stage(0.7, 1))
    worse = _two_stage(0.2, 2)  # same settings as the baseline's, much worse answers
    verdicts = _regressions(worse, baseline, own_identities=frozenset())
    assert sorted((v.name, v.status) for v in verdicts) == [
        ("two-stage/tiny-llama id_exact_match", "pass"),
        ("two-stage/tiny-llama ood_exact_match", "fail")]


def test_an_old_entry_without_identity_matches_only_the_suites_own_settings() -> None:
    old = _baseline(_two_stage(0.7, 1))
    for run in old["runs"]:
        del run["training_identity"]  # as baselines/cpu.json was written
    worse = _two_stage(0.2, 2)
    unmodified = _regressions(worse, old)  # no --set: matched by strategy, model, seed
    assert [v.status for v in unmodified if "ood" in v.name] == ["fail"]
    own = frozenset({"0" * 64})  # a variation whose runs are not the suite's own settings
    varied = _regressions(worse, old, own_identities=own)
    assert [(v.name, v.status) for v in varied] == [("two-stage/tiny-llama baseline",
                                                     "no_baseline")]
    # A variation that leaves these runs' training alone (e.g. --set trace.*) is the suite's own.
    same_training = frozenset(training_identity(run["config"]) for run in worse)
    kept = _regressions(worse, old, own_identities=same_training)
    assert [v.status for v in kept if "ood" in v.name] == ["fail"]


def test_a_suites_own_run_missing_from_its_baseline_is_inconclusive() -> None:
    baseline = _baseline(_two_stage(0.7, 1))
    changed = _two_stage(0.7, 1, stage2_lr=3e-4)  # the suite file changed, no --set
    verdicts = _regressions(changed, baseline)
    assert [(v.name, v.status) for v in verdicts] == [("two-stage/tiny-llama baseline",
                                                       "inconclusive")]
    assert "baseline update --suite cpu" in verdicts[0].detail
    assert suite_exit_code(verdicts) == 3


def test_a_variation_without_any_baseline_file_is_no_baseline(tmp_path: Path) -> None:
    from factrecall_bench.suite import load_suite
    from factrecall_bench.verdicts.judging import judge_baseline
    from tests.conftest import TINY_SUITE

    results = [{**result, "environment": {"hardware": "cpu:x86_64"}} for result in _results()]
    suite = load_suite(str(TINY_SUITE))
    [own] = judge_baseline(suite.baseline_subject, results, tmp_path)
    assert (own.status, own.name) == ("inconclusive", "tiny baseline")
    variation = load_suite(str(TINY_SUITE), ["train.stage2_lr=3e-4"])
    [varied] = judge_baseline(variation.baseline_subject, results, tmp_path)
    assert varied.status == "no_baseline"
    assert varied.detail == f"no baseline for these settings: no baseline at {tmp_path}/tiny.json: " \
        "create one with `factrecall-bench baseline update --suite tiny`"
