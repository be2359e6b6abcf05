"""The TUI: its pure state layer on the recorded runs folder, and the app driven through Pilot.

The recorded runs folder, tests/data/tui_runs, is a real run of tests/data/suites/tui.toml written
by scripts/regenerate_tui_fixtures.py (see its docstring for what it normalizes and shapes); the
tests below read the expected numbers from its documents, and check that they are still what the
code writes.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from rich.console import Console
from textual.widgets import DataTable, Log, Static

from factrecall_bench.events import EVENT_KINDS, LogTail, check_event, read_events
from factrecall_bench.runfolder import (
    ResultDocument,
    RunFolder,
    SuiteFolder,
    VerdictsDocument,
)
from factrecall_bench.tui.app import FactRecallApp
from factrecall_bench.tui.curves_view import CurvePanel
from factrecall_bench.tui.format import (
    fmt_duration,
    fmt_interval,
    fmt_num,
    fmt_p,
    loss_scale,
    spark_text,
    status_counts_text,
    verdict_label,
)
from factrecall_bench.tui.help_screen import HelpScreen
from factrecall_bench.tui.launcher import SuiteLauncher
from factrecall_bench.tui.reader import RunsReader, lock_is_free
from factrecall_bench.tui.run_state import EVENT_HANDLERS, RunState
from factrecall_bench.tui.state import RunsState, load_runs
from factrecall_bench.tui.trace_view import NO_TRACE, trace_content
from factrecall_bench.tui.values import Interval, wilson_interval
from tests.conftest import ROOT, TESTS

RUNS = TESTS / "data" / "tui_runs"
SUITE = "tui"
SUITE_DIR = RUNS / SUITE
SIZE = (80, 24)
LOCK_FILE = RunFolder.LOCK


def recorded_run_id(strategy: str, seed: int) -> str:
    """Run ids carry the config hash, so the tests find the recorded runs by strategy and seed."""
    (run_id,) = [p.name for p in SUITE_DIR.iterdir()
                 if p.is_dir() and p.name.startswith(f"{strategy}-tiny-llama-s{seed}-")]
    return run_id


MIXED_0 = recorded_run_id("mixed", 0)
MIXED_1 = recorded_run_id("mixed", 1)  # finished; its last line (run_end) cut short
TWO_STAGE_0 = recorded_run_id("two-stage", 0)
TWO_STAGE_1 = recorded_run_id("two-stage", 1)  # unfinished: events up to a step of its QA phase


def recorded_events(run_id: str) -> list[dict[str, Any]]:
    return read_events(SUITE_DIR / run_id / RunFolder.EVENTS).events


def recorded_result(run_id: str) -> ResultDocument:
    result = RunFolder(SUITE_DIR / run_id).read_result()
    assert result is not None
    return result


def recorded_verdicts() -> VerdictsDocument:
    verdicts = SuiteFolder(SUITE_DIR).read_verdicts()
    assert verdicts is not None
    return verdicts


UNFINISHED_STEPS = [e for e in recorded_events(TWO_STAGE_1) if e["event"] == "step"]
UNFINISHED_EVAL = [e for e in recorded_events(TWO_STAGE_1) if e["event"] == "eval"][-1]
TOTAL_STEPS = recorded_events(TWO_STAGE_1)[0]["total_steps"]
STOP_STEP = UNFINISHED_STEPS[-1]["step"]
FROZEN = recorded_events(TWO_STAGE_1)[-1]["t"] + 5  # 5 s after the unfinished run's last event


def sync(test):
    """Run an async Pilot test without an asyncio pytest plugin (none is a test dependency)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def frozen() -> float:
    return FROZEN


def step_line(run_id: str, step: int, t: float, loss: float = 1.0) -> str:
    event = {
        "t": t,
        "event": "step",
        "run_id": run_id,
        "phase": "qa",
        "step": step,
        "loss": loss,
        "lr": 0.001,
        "tokens_per_s": 9000.0,
    }
    return json.dumps(event) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def runs_copy(tmp_path: Path) -> Iterator[Path]:
    """The recorded runs, with TWO_STAGE_1's lock held as its runner holds it while it trains (in
    the recording itself nobody holds it: there TWO_STAGE_1 is an interrupted run)."""
    runs = Path(shutil.copytree(RUNS, tmp_path / "tui_runs"))
    with FileLock(str(runs / SUITE / TWO_STAGE_1 / LOCK_FILE)):
        yield runs


@pytest.fixture
def state(runs_copy: Path) -> RunsState:
    return load_runs(runs_copy)


def by_id(state: RunsState, run_id: str) -> RunState:
    run = state.run(run_id)
    assert run is not None
    return run


# -- the recorded runs are what the code writes ---------------------------------------------------
def recorded_run_dirs() -> list[Path]:
    return sorted(p for p in SUITE_DIR.iterdir() if p.is_dir())


def test_recorded_documents_read_through_their_owners() -> None:
    """Every document through runfolder's typed readers, with exactly the typed keys."""
    assert set(recorded_verdicts()) == set(VerdictsDocument.__annotations__)
    assert [p.name for p in recorded_run_dirs()] == sorted([MIXED_0, MIXED_1, TWO_STAGE_0,
                                                            TWO_STAGE_1])
    for run_dir in recorded_run_dirs():
        folder = RunFolder(run_dir)
        config = folder.read_config()
        assert config is not None and config["run_id"] == run_dir.name
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(
            [RunFolder.CONFIG, RunFolder.EVENTS]
            + ([] if run_dir.name == TWO_STAGE_1 else [RunFolder.RESULT]))
        if run_dir.name != TWO_STAGE_1:
            result = recorded_result(run_dir.name)
            # reused_from: only in a run reused from another folder (integration/test_run_store.py)
            assert set(result) == set(ResultDocument.__annotations__) - {"reused_from"}
            assert (result["run_id"], result["config"]) == (run_dir.name, config)


def test_recorded_traces_have_the_shape_the_trace_writes() -> None:
    from factrecall_bench.trace.summary import flat_summary

    for run_id in (MIXED_0, MIXED_1, TWO_STAGE_0):
        trace = recorded_result(run_id)["trace"]
        assert trace is not None and trace["summary"] == flat_summary(trace)
        for entry in trace["per_k"].values():
            heads = entry["location"]["heads"]
            assert len(heads) == 2 and all(len(row) == 4 for row in heads)  # 2 layers, 4 heads


def test_recorded_events_are_kinds_the_code_emits() -> None:
    for run_dir in recorded_run_dirs():
        read = read_events(run_dir / RunFolder.EVENTS)
        damaged = run_dir.name == MIXED_1
        lines = (run_dir / RunFolder.EVENTS).read_text("utf-8").splitlines()
        assert read.bad_lines == ([len(lines)] if damaged else [])
        for event in read.events:
            extra = {k: v for k, v in event.items() if k not in ("t", "event", "run_id")}
            check_event(event["event"], extra)
            assert event["run_id"] == run_dir.name
    assert set(EVENT_HANDLERS) <= set(EVENT_KINDS)  # the TUI folds no kind nobody writes


def test_recorded_runs_are_normalized() -> None:
    """No absolute path, no machine in them (see scripts/regenerate_tui_fixtures.py)."""
    for path in RUNS.rglob("*.json*"):
        assert '"/' not in path.read_text("utf-8"), path
    environment = recorded_result(MIXED_0)["environment"]
    assert environment["git_revision"] == "normalized"
    assert set(environment["versions"].values()) == {"normalized"}


def json_shape(value: Any) -> Any:
    """A document's keys and value types, without the values."""
    if isinstance(value, dict):
        return {key: json_shape(item) for key, item in value.items()}
    return [json_shape(item) for item in value] if isinstance(value, list) else type(value).__name__


def recorded_files(root: Path) -> dict[str, Path]:
    """The files of a runs folder by their path, each run's folder named without its config hash."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = list(path.relative_to(root).parts)
        if len(parts) == 3:  # <suite>/<run_id>/<file>
            parts[1] = parts[1].rsplit("-", 1)[0]
        files["/".join(parts)] = path
    return files


@pytest.mark.slow
def test_the_script_writes_the_recorded_runs(tmp_path: Path) -> None:
    """Regenerating gives the same files, documents with the same keys and types, the same events
    (values may move with the code: a failure here means `python scripts/regenerate_tui_fixtures.py`
    and `pytest tests/integration/test_tui_snapshots.py --snapshot-update`)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "regenerate_tui_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=600)
    written, recorded = recorded_files(tmp_path), recorded_files(RUNS)
    assert list(written) == list(recorded)
    for name, path in written.items():
        if path.suffix == ".json":
            new, old = (json.loads(p.read_text("utf-8")) for p in (path, recorded[name]))
            assert json_shape(new) == json_shape(old), name
        else:
            kinds = [[(e["event"], sorted(e)) for e in read_events(p).events]
                     for p in (path, recorded[name])]
            assert kinds[0] == kinds[1], name


# -- the state layer ------------------------------------------------------------------------------
def test_log_tail_keeps_a_partial_line_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    tail = LogTail(path)
    assert tail.read_lines() == ([(1, '{"a": 1}')], False)
    assert tail.read_lines() == ([], False)
    append(path, '2}\n{"c": 3}\n')
    assert tail.read_lines() == ([(2, '{"b": 2}'), (3, '{"c": 3}')], False)


def test_log_tail_starts_over_when_the_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    tail = LogTail(path)
    tail.read_lines()
    path.write_text('{"c": 3}\n')
    assert tail.read_lines() == ([(1, '{"c": 3}')], True)


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


def test_verdict_labels_and_counts_come_from_the_file() -> None:
    reported = {"status": "reported", "outcome": "does_not_hold", "expect": "report",
                "effect": -0.105}
    assert verdict_label(reported).startswith("reported (does not hold")
    # a status is shown as written, never re-decided from the outcome or expectation
    assert verdict_label({"status": "pass", "outcome": "does_not_hold", "expect": "holds"}) == "pass"
    verdicts = [{"status": "pass"}] * 10 + [reported, {"status": "fail"}]
    assert status_counts_text(verdicts) == ["10 pass", "1 reported", "1 fail"]


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


def test_interval_fills_missing_wilson_bounds() -> None:
    interval = Interval.parse({"value": 0.5, "n": 100})
    assert interval is not None
    assert (interval.low, interval.high) == pytest.approx(wilson_interval(50, 100))
    assert interval.low == pytest.approx(0.4038, abs=1e-4)
    assert Interval.parse({}) is None and Interval.parse("x") is None


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


def test_curves_have_a_fixed_scale() -> None:
    assert spark_text([0.0], 6, 0.0, 1.0) == "▁" * 6  # one 0.00 eval: a floor, not a full bar
    assert spark_text([0.0, 0.0, 0.0], 3, 0.0, 1.0) == "▁▁▁"
    assert spark_text([0.0, 0.5, 1.0], 3, 0.0, 1.0) == "▁▅█"
    assert spark_text([0.2, 0.2, 1.0, 1.0], 2, 0.0, 1.0) == "▂█"  # each cell the mean of its share
    assert spark_text([], 5, 0.0, 1.0) == ""
    assert loss_scale([3.0]) == (0.0, 6.0)  # a single loss sits at mid height
    assert spark_text([3.0], 4, *loss_scale([3.0])) == "▅▅▅▅"
    assert spark_text([0.0], 4, *loss_scale([0.0])) == "▁▁▁▁"
    assert spark_text([6.0, 3.0], 2, *loss_scale([6.0, 3.0])) == "█▅"


def test_formatting_helpers() -> None:
    assert [fmt_duration(s) for s in (None, 5, 144.06, 3900)] == ["–", "5s", "2m24s", "1h05m"]


# -- the app through Pilot ------------------------------------------------------------------------
def make_app(runs_dir: Path = RUNS, **kwargs) -> FactRecallApp:
    kwargs.setdefault("clock", frozen)
    kwargs.setdefault("poll_interval", None)
    app = FactRecallApp(runs_dir, **kwargs)
    app.animation_level = "none"  # tab underlines would otherwise slide on every switch
    return app


async def loaded(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def matrix_rows(app: FactRecallApp) -> dict[str, list[str]]:
    table = app.query_one("#matrix-table", DataTable)
    return {row.key.value: [str(c) for c in table.get_row(row.key)] for row in table.ordered_rows}


def text_of(app: FactRecallApp, selector: str) -> str:
    return str(app.query_one(selector, Static).content)


def rendered(app: FactRecallApp, selector: str) -> str:
    """A Static's content (text or tables) as plain text, on lines long enough not to wrap."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.query_one(selector, Static).content)
    return console.export_text()


@sync
async def test_matrix_shows_every_run_with_progress_and_eta(runs_copy: Path) -> None:
    app = make_app(runs_copy)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        rows = matrix_rows(app)
        assert list(rows) == [MIXED_0, MIXED_1, TWO_STAGE_0, TWO_STAGE_1]
        assert rows[TWO_STAGE_1] == [
            "two-stage",
            "1",
            "tiny-llama",
            "running",
            "qa",
            f"{STOP_STEP}/{TOTAL_STEPS}",
            fmt_num(UNFINISHED_STEPS[-1]["loss"]),
            fmt_duration((TOTAL_STEPS - STOP_STEP) / 2.0 - 5),  # 2 steps/s, last step 5 s ago
            "12.0k",
        ]
        assert rows[MIXED_0][3:6] == ["finished", "mixed", f"{TOTAL_STEPS}/{TOTAL_STEPS}"]
        status = text_of(app, "#matrix-status")
        assert "4 runs: 1 running, 3 finished" in status and "last event 5s ago" in status
        assert app.poll_errors == []


@sync
async def test_a_run_nobody_holds_shows_as_interrupted() -> None:
    app = make_app(RUNS, clock=lambda: FROZEN + 48)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert matrix_rows(app)[TWO_STAGE_1][3:8] == [
            "interrupted", "qa", f"{STOP_STEP}/{TOTAL_STEPS}",
            fmt_num(UNFINISHED_STEPS[-1]["loss"]), "–"]
        status = text_of(app, "#matrix-status")
        assert "1 interrupted (rerun to resume), 3 finished" in status
        assert "last event 53s ago" in status
        await pilot.press("down", "down", "down", "enter")
        await pilot.pause()
        checkpoint = [e for e in recorded_events(TWO_STAGE_1) if e["event"] == "checkpoint"][-1]
        assert (
            "interrupted: no process holds its lock; rerun to resume from its checkpoint at step "
            f"{checkpoint['step']}" in text_of(app, "#details-title")
        )


@sync
async def test_selecting_a_run_shows_its_config_and_log() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.selected_run_id == MIXED_0
        await pilot.press("down", "down", "down", "enter")
        await pilot.pause()
        assert app.selected_run_id == TWO_STAGE_1
        assert app.active_view == "details"
        config = json.loads(text_of(app, "#details-config"))
        assert (config["strategy"], config["seed"]) == ("two-stage", 1)
        assert TWO_STAGE_1 in text_of(app, "#details-title")
        log_lines = app.query_one("#details-log", Log).lines
        assert f'"step": {STOP_STEP}' in log_lines[-1] and '"event": "step"' in log_lines[-1]
        await pilot.press("up")  # up/down keep selecting runs in the details view
        await pilot.pause()
        config = json.loads(text_of(app, "#details-config"))
        assert (config["strategy"], config["seed"]) == ("two-stage", 0)


@sync
async def test_every_view_is_reachable_by_number_and_tab() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        seen = []
        for key in "123456":
            await pilot.press(key)
            seen.append(app.active_view)
        assert seen == ["matrix", "curves", "results", "verdicts", "trace", "details"]
        await pilot.press("tab")
        assert app.active_view == "matrix"
        await pilot.press("shift+tab")
        assert app.active_view == "details"


@sync
async def test_a_single_zero_eval_is_not_drawn_as_a_full_bar(runs_copy: Path) -> None:
    new = runs_copy / SUITE / "mixed-tiny-llama-s2-00000000"
    new.mkdir()
    events = [
        {"t": FROZEN, "event": "run_start", "strategy": "mixed", "model": "tiny-llama", "seed": 2,
         "total_steps": 600},
        {"t": FROZEN, "event": "eval", "step": 0, "metrics": {"ood_exact_match": 0.0}},
    ]
    (new / RunFolder.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    app = make_app(runs_copy)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("2")
        await pilot.pause()
        panel = next(p for p in app.query(CurvePanel) if p.run_id == new.name)
        ood = panel.sparks["ood_exact_match"]
        drawn = ood.render().plain
        assert ood.data == [0.0] and set(drawn) == {"▁"} and len(drawn) == ood.size.width > 0
        assert str(panel.values["ood_exact_match"].content) == "0.00"
        assert panel.sparks["loss"].render().plain == ""  # no loss yet: nothing drawn


@sync
async def test_curves_show_loss_and_exact_match_per_run() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("2")
        await pilot.pause()
        panels = list(app.query(CurvePanel))
        assert [p.run_id for p in panels] == [MIXED_0, TWO_STAGE_0, MIXED_1, TWO_STAGE_1]
        first = panels[0]
        assert first.has_class("selected")
        steps = [e for e in recorded_events(MIXED_0) if e["event"] == "step"]
        assert first.sparks["loss"].data == [e["loss"] for e in steps]
        final_ood = recorded_result(MIXED_0)["phase_evals"][-1]["metrics"]["ood_exact_match"]
        assert list(first.sparks["ood_exact_match"].data or [])[-1] == pytest.approx(final_ood)
        assert str(first.values["ood_exact_match"].content) == fmt_num(final_ood, 2)
        await pilot.press("down")  # select mixed s1: seed 1 panels come first
        await pilot.pause()
        assert [p.run_id for p in app.query(CurvePanel)][:2] == [MIXED_1, TWO_STAGE_1]


def result_row(run_id: str) -> list[str]:
    metrics = recorded_result(run_id)["metrics"]
    seed = recorded_result(run_id)["seed"]
    return [recorded_result(run_id)["strategy"], str(seed),
            fmt_interval(Interval(**metrics["id_exact_match"])),
            fmt_interval(Interval(**metrics["ood_exact_match"])),
            fmt_num(metrics["bio_first_token_train"]["value"], 2),
            fmt_num(metrics["bio_first_token_test"]["value"], 2)]


@sync
async def test_results_and_verdicts_views() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("3")
        results = app.query_one("#results-table", DataTable)
        rows = [[str(c) for c in results.get_row_at(i)] for i in range(results.row_count)]
        assert rows[:3] == [result_row(MIXED_0), result_row(MIXED_1), result_row(TWO_STAGE_0)]
        assert rows[-1][:2] == ["mixed", "mean"]
        assert len(rows) == 4  # three finished runs and one mean (two-stage has one seed done)
        attributes = app.query_one("#attribute-table", DataTable)
        per_attribute = recorded_result(MIXED_0)["per_attribute"]
        assert attributes.row_count == sum(len(by_attr) for by_attr in per_attribute.values())
        await pilot.press("4")
        verdicts = app.query_one("#verdicts-table", DataTable)
        written = recorded_verdicts()["verdicts"]
        assert verdicts.row_count == len(written) == 5
        first = written[0]
        assert [str(c) for c in verdicts.get_row_at(0)][2:] == [
            f"{first['effect']:+.2f}",
            f"[{first['ci_low']:+.2f},{first['ci_high']:+.2f}]",
            f"{fmt_p(first['p_value'])} ({fmt_p(first['p_adjusted'])})",
        ]
        title = text_of(app, "#verdicts-title")
        assert title == "tui: exit code 1 · 2 pass · 1 reported · 1 fail · 1 inconclusive"
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert written[3]["status"] == "reported"
        assert verdict_label(written[3]) in rendered(app, "#verdict-detail")
        await pilot.press("down")
        await pilot.pause()
        assert "tui baseline" in rendered(app, "#verdict-detail")


REPORTED_NAME = "mixed beats two-stage on OOD exact match"
REPORTED_ROW = 3


def verdict_cells(app: FactRecallApp, row: int) -> list[str]:
    table = app.query_one("#verdicts-table", DataTable)
    return [str(c) for c in table.get_row_at(row)]


@sync
async def test_verdict_names_use_the_width_there_is() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        await pilot.pause()
        table = app.query_one("#verdicts-table", DataTable)
        assert verdict_cells(app, REPORTED_ROW)[1] == REPORTED_NAME  # 40 characters, uncut
        assert verdict_cells(app, REPORTED_ROW)[0].startswith("reported (holds")
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= 120
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        name = verdict_cells(app, REPORTED_ROW)[1]
        assert name.endswith("…") and REPORTED_NAME.startswith(name[:-1])
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= SIZE[0]


def many_verdicts(runs: Path, count: int) -> None:
    path = runs / SUITE / "verdicts.json"
    document = json.loads(path.read_text())
    first = document["verdicts"][0]
    document["verdicts"] = [{**first, "name": f"claim number {i}"} for i in range(count)]
    path.write_text(json.dumps(document))


@sync
async def test_verdicts_below_the_fold_are_reached_by_keyboard(runs_copy: Path) -> None:
    many_verdicts(runs_copy, 30)
    app = make_app(runs_copy)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        table = app.query_one("#verdicts-table", DataTable)
        assert app.focused is table and table.max_scroll_y > 0
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_row == 29 and table.scroll_y == table.max_scroll_y
        assert "claim number 29" in rendered(app, "#verdict-detail")
        assert app.query_one("#verdict-detail-box").region.bottom <= app.screen.region.bottom - 1


def more_finished_runs(runs: Path, seeds: range) -> None:
    """Copies of the finished mixed s0 run under other seeds: more rows and columns of results."""
    for seed in seeds:
        run_dir = Path(shutil.copytree(runs / SUITE / MIXED_0, runs / SUITE / f"mixed-s{seed}"))
        result = json.loads((run_dir / RunFolder.RESULT).read_text())
        (run_dir / RunFolder.RESULT).write_text(json.dumps({**result, "seed": seed}))
        (run_dir / RunFolder.EVENTS).unlink()


@sync
async def test_results_below_the_fold_are_reached_by_keyboard(runs_copy: Path) -> None:
    more_finished_runs(runs_copy, range(2, 6))
    app = make_app(runs_copy)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("3")
        scroll = app.query_one("#results-scroll")
        attributes = app.query_one("#attribute-table", DataTable)
        assert app.focused is scroll and scroll.max_scroll_y > 0 and scroll.scroll_y == 0
        assert attributes.region.bottom > scroll.region.bottom  # the last rows are out of sight
        await pilot.press("down", "pagedown")
        await pilot.pause()
        assert scroll.scroll_y > 0
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
        assert attributes.region.bottom <= scroll.region.bottom  # its last row is on screen
        assert scroll.max_scroll_x > 0  # seven runs' columns are wider than 80
        await pilot.press("right", "right")
        await pilot.pause()
        assert scroll.scroll_x > 0


@sync
async def test_trace_scrolls_by_keyboard_and_arrows_still_select_runs() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        scroll = app.query_one("#trace-scroll")
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert scroll.scroll_y > 0
        await pilot.press("end")
        await pilot.pause()
        tables = app.query_one("#trace-tables")
        assert scroll.scroll_y == scroll.max_scroll_y
        assert tables.region.bottom <= scroll.region.bottom  # the last row is on screen
        await pilot.press("home")
        await pilot.pause()
        assert scroll.scroll_y == 0
        await pilot.press("down")
        await pilot.pause()
        assert app.selected_run_id == MIXED_1


@sync
async def test_trace_view_shows_labelled_tables() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        trace = recorded_result(MIXED_0)["trace"]
        assert trace is not None
        shown = rendered(app, "#trace-tables")
        for k in trace["per_k"]:
            assert f"shared per query/output heads, layer x head (k={k})" in shown
            assert f"ablation (k={k}): {trace['ablation'][k]['count']} shared parameters" in shown
        assert "BIO-only drop" in shown and "random drop" in shown
        await pilot.press("down", "down", "down")  # two-stage s1: no result.json yet
        await pilot.pause()
        assert NO_TRACE in rendered(app, "#trace-tables")


@sync
async def test_filter_narrows_the_matrix(runs_copy: Path) -> None:
    app = make_app(runs_copy)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("3", "slash")
        assert app.active_view == "matrix"
        await pilot.press(*"two")
        await pilot.pause()
        assert list(matrix_rows(app)) == [TWO_STAGE_0, TWO_STAGE_1]
        assert app.selected_run_id == TWO_STAGE_0
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.focused is app.query_one("#matrix-table")
        await pilot.press("slash", "backspace", "backspace", "backspace", *"running")
        await pilot.pause()
        assert list(matrix_rows(app)) == [TWO_STAGE_1]
        await pilot.press("escape")
        await pilot.pause()
        assert len(matrix_rows(app)) == 4


@sync
async def test_malformed_line_is_notified_as_a_warning() -> None:
    app = make_app()
    notes: list[tuple[str, str]] = []
    app.notify = lambda message, **kw: notes.append((message, kw.get("severity", "")))
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert len(notes) == 1 and notes[0][1] == "warning"
        assert MIXED_1 in notes[0][0] and "not valid JSON" in notes[0][0]
        assert "1 warning(s)" in text_of(app, "#matrix-status")
        await pilot.press("6", "end")
        await pilot.pause()
        await pilot.press("down")
        await pilot.pause()
        assert "not valid JSON" in text_of(app, "#details-title")
        assert app.poll_errors == []


@sync
async def test_new_event_lines_show_after_a_poll(runs_copy: Path) -> None:
    app = make_app(runs_copy, poll_interval=0.05)
    log = runs_copy / SUITE / TWO_STAGE_1 / RunFolder.EVENTS
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert matrix_rows(app)[TWO_STAGE_1][5] == f"{STOP_STEP}/{TOTAL_STEPS}"
        later = f"{STOP_STEP + 5}/{TOTAL_STEPS}"
        append(log, step_line(TWO_STAGE_1, STOP_STEP + 5, FROZEN - 4, loss=0.987)
               + '{"t": 1, "event": "st')
        for _ in range(200):  # up to 10 s on a loaded machine; usually two polls
            await pilot.pause(0.05)
            if matrix_rows(app)[TWO_STAGE_1][5] == later:
                break
        assert matrix_rows(app)[TWO_STAGE_1][5:7] == [later, "0.987"]
        append(log, step_line(TWO_STAGE_1, STOP_STEP + 10, FROZEN - 2)[len('{"t": 1, "event": "st') :])
        await pilot.press("r")
        await loaded(pilot)
        # the partial line was completed into garbage+valid JSON: one new warning, no crash
        assert len(app.state.warnings) == 2 and app.poll_errors == []
        (runs_copy / SUITE / TWO_STAGE_1 / RunFolder.RESULT).write_text(
            (runs_copy / SUITE / MIXED_0 / RunFolder.RESULT).read_text()
        )
        await pilot.press("r")
        await loaded(pilot)
        assert matrix_rows(app)[TWO_STAGE_1][3] == "finished"


@sync
async def test_a_new_run_folder_appears(runs_copy: Path) -> None:
    app = make_app(runs_copy)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        new = runs_copy / SUITE / "mixed-tiny-llama-s2-00000000"
        new.mkdir()
        start = {
            "t": FROZEN,
            "event": "run_start",
            "run_id": new.name,
            "suite": SUITE,
            "strategy": "mixed",
            "model": "tiny-llama",
            "seed": 2,
            "config_hash": "0",
            "phases": [{"name": "mixed", "steps": 600}],
            "total_steps": 600,
            "resumed_from_step": None,
        }
        (new / RunFolder.EVENTS).write_text(json.dumps(start) + "\n")
        with FileLock(str(new / LOCK_FILE)):  # its runner holds it
            await pilot.press("r")
            await loaded(pilot)
        assert matrix_rows(app)[new.name][:6] == [
            "mixed",
            "2",
            "tiny-llama",
            "running",
            "–",
            "0/600",
        ]


@sync
async def test_missing_runs_folder_is_empty_not_an_error(tmp_path: Path) -> None:
    app = make_app(tmp_path / "nothing-here")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for key in "123456":
            await pilot.press(key)
        assert matrix_rows(app) == {} and app.poll_errors == []
        assert "no verdicts.json" in text_of(app, "#verdicts-title")


@sync
async def test_help_screen_lists_the_keys() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help-text", Static).content)
        for key in ("q ", "1-6, tab", "up/down", "enter", "/ ", "s ", "r ", "?"):
            assert key in help_text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@sync
async def test_s_without_a_launch_command_only_notifies() -> None:
    app = make_app()
    notes: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        app.notify = lambda message, **kw: notes.append(message)
        await pilot.press("s")
        assert app.launcher is None and "--suite" in notes[-1]


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def kill_group(launcher: SuiteLauncher | None) -> None:
    if launcher is not None and launcher.running and launcher.process is not None:
        os.killpg(launcher.process.pid, signal.SIGKILL)
        launcher.process.wait(5)


SLEEPER = [sys.executable, "-c", "import time; print('suite up', flush=True); time.sleep(60)"]


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
@sync
async def test_s_starts_and_stops_the_launched_suite(tmp_path: Path) -> None:
    log_path = tmp_path / "launch.log"
    app = make_app(RUNS, launch_command=SLEEPER, launch_log=log_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            assert "suite not started" in text_of(app, "#matrix-status")
            await pilot.press("s")
            assert app.launcher is not None and app.launcher.running
            assert "suite running (pid" in text_of(app, "#matrix-status")
            assert wait_for(lambda: "suite up" in log_path.read_text())
            await pilot.press("s")
            assert app.launcher.process is not None
            assert app.launcher.process.wait(10) == -signal.SIGTERM
            await pilot.press("r")
            await loaded(pilot)
            assert "suite stopped" in text_of(app, "#matrix-status")
    finally:
        kill_group(app.launcher)


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
@sync
async def test_quitting_leaves_a_running_suite_alone(tmp_path: Path) -> None:
    app = make_app(RUNS, launch_command=SLEEPER, launch_log=tmp_path / "launch.log")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            await pilot.press("s")
            await pilot.press("q")
        assert app.launcher is not None and app.launcher.running
        assert app.launcher.process is not None
        assert os.getpgid(app.launcher.process.pid) != os.getpgid(0)  # its own session
    finally:
        kill_group(app.launcher)
