"""The TUI's state layer (tui/state.py, reader.py, run_state.py) on the recorded runs folder:
status, progress, ETA, results, verdicts, lock probing, incremental polls and damaged files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factrecall_bench.runfolder import (
    RunFolder,
    SuiteFolder,
)
from factrecall_bench.tui.reader import RunsReader, lock_is_free
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.state import RunsState, load_runs
from factrecall_bench.tui.trace_view import NO_TRACE, trace_content
from factrecall_bench.tui.values import Interval
from tests.tui.recorded import (
    FROZEN,
    LOCK_FILE,
    MIXED_0,
    MIXED_1,
    RUNS,
    STOP_STEP,
    SUITE,
    TOTAL_STEPS,
    TWO_STAGE_0,
    TWO_STAGE_1,
    UNFINISHED_EVAL,
    UNFINISHED_STEPS,
    append,
    by_id,
    recorded_result,
    recorded_verdicts,
    step_line,
)


def test_recorded_runs_have_their_status_and_progress(state: RunsState) -> None:
    assert {r.run_id: r.status for r in state.sorted_runs()} == {
        MIXED_0: "finished",
        MIXED_1: "finished",
        TWO_STAGE_0: "finished",
        TWO_STAGE_1: "running",
    }
    running = by_id(state, TWO_STAGE_1)
    assert (running.suite, running.strategy, running.model, running.seed) == (
        SUITE,
        "two-stage",
        "tiny-llama",
        1,
    )
    assert (running.phase, running.step, running.total_steps) == ("qa", STOP_STEP, TOTAL_STEPS)
    assert STOP_STEP < TOTAL_STEPS
    assert running.loss == pytest.approx(UNFINISHED_STEPS[-1]["loss"])
    assert running.tokens_per_s == pytest.approx(12000.0)  # normalized
    assert running.loss_values == [e["loss"] for e in UNFINISHED_STEPS]
    # the BIO phase's eval, the one eval before the end
    assert UNFINISHED_EVAL["phase"] == "bio"
    assert running.metric_history("ood_exact_match") == [UNFINISHED_EVAL["metrics"]["ood_exact_match"]]
    assert by_id(state, TWO_STAGE_0).phase == "qa"


def test_eta_comes_from_the_step_rate_and_the_clock(state: RunsState) -> None:
    running = by_id(state, TWO_STAGE_1)
    rate = running.steps_per_s
    assert rate == pytest.approx(2.0)  # the recording's normalized clock: 0.5 s per step
    last_step_t = running.rate_window[-1][0]
    left = TOTAL_STEPS - STOP_STEP
    assert running.eta_s(last_step_t) == pytest.approx(left / rate)
    assert running.eta_s(last_step_t + 10) == pytest.approx(left / rate - 10)
    assert running.eta_s(last_step_t + 10_000) == 0.0
    assert by_id(state, MIXED_0).eta_s(FROZEN) is None  # finished runs have none


def test_malformed_event_line_is_one_warning_not_a_crash(state: RunsState) -> None:
    assert len(state.warnings) == 1
    assert MIXED_1 in state.warnings[0] and "not valid JSON" in state.warnings[0]
    assert by_id(state, MIXED_1).warnings == state.warnings


def test_results_give_intervals_per_attribute_and_bio_retention(state: RunsState) -> None:
    result = recorded_result(MIXED_0)
    metrics = by_id(state, MIXED_0).metrics
    assert metrics["ood_exact_match"] == Interval(**result["metrics"]["ood_exact_match"])
    assert metrics["bio_first_token_test"].value == result["metrics"]["bio_first_token_test"]["value"]
    per_attribute = by_id(state, MIXED_0).per_attribute
    assert set(per_attribute) == set(result["per_attribute"])
    for metric, by_attr in result["per_attribute"].items():
        assert {a: v.value for a, v in per_attribute[metric].items()} == {
            a: v["value"] for a, v in by_attr.items()}
    # a running run shows its latest eval, without intervals
    ood = UNFINISHED_EVAL["metrics"]["ood_exact_match"]
    assert by_id(state, TWO_STAGE_1).metrics["ood_exact_match"] == Interval(ood)


def test_a_recorded_trace_renders_as_tables_with_or_without_definitions(state: RunsState) -> None:
    trace = recorded_result(MIXED_0)["trace"]
    assert trace is not None
    old = {key: value for key, value in trace.items() if key not in ("definition", "definitions")}
    run = by_id(state, MIXED_0)
    run.result = {**recorded_result(MIXED_0), "trace": old}  # type: ignore[typeddict-item]
    heading, tables = trace_content(run)
    assert heading == f"{trace['n_parameters']} parameters"
    by_title = {table.title: table for table in tables}
    shared = by_title["shared parameters (top k for BIO and for QA) against chance"]
    assert [row[:2] for row in shared.rows] == [
        (k, str(entry["shared"]["count"])) for k, entry in trace["per_k"].items()]
    heads = by_title["shared per query/output heads, layer x head (k=0.05)"]
    assert [row[1:] for row in heads.rows] == [
        tuple(f"{v:.0f}" for v in row) for row in trace["per_k"]["0.05"]["location"]["heads"]]
    assert "shared count / Gini heads per trace definition" not in by_title
    assert trace_content(by_id(state, TWO_STAGE_1)) == (NO_TRACE, [])  # no result.json yet


def test_verdicts_are_read_as_written(state: RunsState) -> None:
    written = recorded_verdicts()
    (suite,) = state.all_verdicts()
    assert (suite.suite, suite.exit_code) == (SUITE, written["exit_code"])
    assert list(suite.verdicts) == written["verdicts"]
    # the suite is made to have one of each status (tests/data/suites/tui.toml)
    assert [v["status"] for v in suite.verdicts] == ["pass", "pass", "fail", "reported",
                                                     "inconclusive"]


def test_the_tui_keeps_no_verdict_class_of_its_own() -> None:
    from factrecall_bench.tui import app, state

    assert not hasattr(state, "Verdict") and not hasattr(app, "Verdict")


LOCK_HOLDER = (
    "import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1])\nlock.acquire()\n"
    "print('locked', flush=True)\ntime.sleep(120)\n"
)


def test_an_unfinished_run_nobody_holds_is_interrupted() -> None:
    state = load_runs(RUNS)  # as recorded: nobody holds TWO_STAGE_1's lock
    run = by_id(state, TWO_STAGE_1)
    assert (run.event_status, run.status, run.eta_s(FROZEN)) == ("running", "interrupted", None)
    assert state.status_counts() == {"interrupted": 1, "finished": 3}
    assert not (RUNS / SUITE / TWO_STAGE_1 / LOCK_FILE).exists()  # probing created no lock file


def test_a_killed_runner_leaves_its_run_interrupted(tmp_path: Path) -> None:
    runs = Path(shutil.copytree(RUNS, tmp_path / "runs"))
    lock = runs / SUITE / TWO_STAGE_1 / LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        reader, state = RunsReader(runs), RunsState()
        state.apply(reader.poll())
        assert by_id(state, TWO_STAGE_1).status == "running" and not lock_is_free(lock)
        holder.kill()  # SIGKILL: no run_failed, no run_end, the lock goes with the process
        holder.wait(10)
        state.apply(reader.poll())
        assert by_id(state, TWO_STAGE_1).status == "interrupted" and lock_is_free(lock)
    finally:
        holder.kill()
        holder.wait(10)


def test_the_lock_is_probed_only_while_it_can_matter(runs_copy: Path, monkeypatch) -> None:
    probes: list[Path] = []

    def probe(path: Path) -> bool:
        probes.append(path)
        return True

    monkeypatch.setattr("factrecall_bench.tui.reader.lock_is_free", probe)
    reader, state = RunsReader(runs_copy), RunsState()
    state.apply(reader.poll())
    assert probes == [runs_copy / SUITE / TWO_STAGE_1 / LOCK_FILE]  # finished runs are not probed
    assert by_id(state, TWO_STAGE_1).status == "interrupted"
    state.apply(reader.poll())
    assert len(probes) == 1  # found free: no more probes while its log stands still
    append(runs_copy / SUITE / TWO_STAGE_1 / RunFolder.EVENTS, step_line(TWO_STAGE_1, STOP_STEP + 5, FROZEN))
    state.apply(reader.poll())
    assert (len(probes), by_id(state, TWO_STAGE_1).status) == (1, "running")  # someone wrote
    state.apply(reader.poll())
    assert (len(probes), by_id(state, TWO_STAGE_1).status) == (2, "interrupted")


def test_event_folding_failed_resumed_and_junk() -> None:
    run = RunState("r", SUITE, Path("r"))
    start = {
        "t": 1.0,
        "event": "run_start",
        "strategy": "mixed",
        "model": "m",
        "seed": 2,
        "total_steps": 100,
        "phases": [{"name": "mixed", "steps": 100}],
        "resumed_from_step": None,
    }
    run.apply_event(start)
    run.apply_event({"t": 2.0, "event": "step", "step": "ten", "loss": None})  # bad types
    run.apply_event({"t": 3.0, "event": "mystery", "x": 1})
    run.apply_event({"t": 4.0, "event": "run_failed", "reason": "CUDA out of memory"})
    assert (run.status, run.failure_reason, run.step) == ("failed", "CUDA out of memory", 0)
    run.apply_event({**start, "t": 5.0, "resumed_from_step": 40})
    assert (run.status, run.step, run.failure_reason) == ("running", 40, None)
    run.apply_event({"t": 6.0, "event": "run_end", "step": 100, "metrics": {"ood": 0.5}})
    assert run.status == "finished" and run.metrics["ood"].value == 0.5
    run.apply_event({"t": 7.0, "event": "warning", "message": "corrupted checkpoint skipped"})
    run.apply_event({"t": 8.0, "event": "resume", "step": 60, "path": "checkpoints/step-60"})
    assert (run.step, run.notes) == (60, ["corrupted checkpoint skipped"])
    unknown = RunState("s", SUITE, Path("s"))
    unknown.apply_event({"t": 1.0, "event": "no_such_kind", "x": 1})  # readers ignore it
    assert unknown.status != "failed"


def test_polls_are_incremental(runs_copy: Path) -> None:
    reader, state = RunsReader(runs_copy), RunsState()
    state.apply(reader.poll())
    version, run = state.version, by_id(state, TWO_STAGE_1)
    lines_before = run.lines_read
    state.apply(reader.poll())
    assert state.version == version and run.lines_read == lines_before  # nothing new
    log = runs_copy / SUITE / TWO_STAGE_1 / RunFolder.EVENTS
    append(log, step_line(TWO_STAGE_1, STOP_STEP + 5, FROZEN) + '{"t": 1, "event": "st')
    state.apply(reader.poll())
    assert state.version == version + 1
    assert (run.step, run.lines_read) == (STOP_STEP + 5, lines_before + 1)
    append(log, f'ep", "step": {STOP_STEP + 10}, "loss": 0.5}}\n')
    state.apply(reader.poll())
    assert (run.step, run.loss, state.warnings[1:]) == (STOP_STEP + 10, 0.5, [])


def test_broken_result_and_verdicts_are_warnings(runs_copy: Path) -> None:
    (runs_copy / SUITE / MIXED_0 / RunFolder.RESULT).write_text('{"schema_version": 1, "met')
    (runs_copy / SUITE / SuiteFolder.VERDICTS).write_text("[1, 2]")
    other_version = {**recorded_result(MIXED_1), "schema_version": 2}  # runfolder refuses it
    (runs_copy / SUITE / MIXED_1 / RunFolder.RESULT).write_text(json.dumps(other_version))
    state = load_runs(runs_copy)
    assert by_id(state, MIXED_0).status == "finished"  # run_end still says so
    assert by_id(state, MIXED_0).metrics["ood_exact_match"].low is None  # from run_end
    cannot_read = ": cannot read it as a JSON object of schema_version 1"
    assert f"{runs_copy / SUITE / MIXED_0 / RunFolder.RESULT}{cannot_read}" in state.warnings
    assert f"{runs_copy / SUITE / MIXED_1 / RunFolder.RESULT}{cannot_read}" in state.warnings
    assert f"{runs_copy / SUITE / SuiteFolder.VERDICTS}{cannot_read}" in state.warnings
    assert by_id(state, MIXED_1).result is None
    assert state.all_verdicts() == []


def test_a_finished_run_with_a_partial_last_line_warns_once(runs_copy: Path) -> None:
    append(runs_copy / SUITE / MIXED_0 / RunFolder.EVENTS, '{"t": 1, "eve')
    reader, state = RunsReader(runs_copy), RunsState()
    state.apply(reader.poll())
    state.apply(reader.poll())
    assert [w for w in state.warnings if "truncated" in w] == [
        f"{MIXED_0}: events.jsonl ends in a truncated line"
    ]


def test_suite_filter_and_nested_layout(tmp_path: Path) -> None:
    shutil.copytree(RUNS / SUITE, tmp_path / "deep" / SUITE)
    shutil.copytree(RUNS / SUITE / MIXED_0, tmp_path / "gpu" / MIXED_0)
    assert len(load_runs(tmp_path).runs) == 5
    assert [r.path.parent.name for r in load_runs(tmp_path, suite="gpu").runs.values()] == ["gpu"]
    assert len(load_runs(tmp_path / "deep" / SUITE, suite=SUITE).runs) == 4
    model_dir = tmp_path / "deep" / SUITE / "some-model"  # a config.json alone is no run
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert len(load_runs(tmp_path).runs) == 5
