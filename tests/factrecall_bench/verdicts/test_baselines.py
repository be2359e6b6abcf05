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

from factrecall_bench import environment
from factrecall_bench import io as atomic_io
from factrecall_bench.identity import training_identity
from factrecall_bench.verdicts import baselines as bl
from factrecall_bench.verdicts import compare_with_baseline, status_label, suite_exit_code
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
        f"create one with `factrecall-bench baseline update --suite {TINY_SUITE}`"


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/verdicts/baselines.py
# (docs/mutation.md, third round): the hardware class and file name of a baseline, what a baseline records
# from its runs, every message of the strict validation (exact text, one line naming the file), and the
# file's exact layout.


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


def _run_entry(strategy: str, seed: int, model: str = "m", **extra: Any) -> dict[str, Any]:
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
        _run_entry("two-stage", 0, environment={"git_revision": "b"}),
        _run_entry("mixed", 2),
        _run_entry("mixed", 10, environment={"git_revision": "a"}),
        _run_entry("mixed", 2, model="a-model"),
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
    no_value = _run_entry("mixed", 0)
    del no_value["run_id"]
    del no_value["metrics"]["ood_exact_match"]
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("s", "h", [no_value], "cpu", 0.05, 0.05, ["ood_exact_match"])
    assert str(caught.value) == "cannot make a baseline: run ? has no value for ood_exact_match"
    named = _run_entry("mixed", 0)
    del named["metrics"]["ood_exact_match"]
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("s", "h", [named], "cpu", 0.05, 0.05, ["ood_exact_match"])
    assert str(caught.value) == (
        "cannot make a baseline: run mixed-m-s0 has no value for ood_exact_match")
    failed = _run_entry("mixed", 0, status="failed", reason="oom")
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("s", "h", [failed], "cpu", 0.05, 0.05, ["ood_exact_match"])
    assert str(caught.value) == (
        "cannot make a baseline from a failed run: run mixed-m-s0 failed: oom")
    with pytest.raises(BaselineError) as caught:
        baseline_from_results("tiny", "h", [_run_entry("mixed", 0)], "cpu", 1.0, 0.05,
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
