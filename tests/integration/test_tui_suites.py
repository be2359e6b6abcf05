"""The TUI with several suites, a suite's runs not started yet, long verdict names, BIO recall
labels and the newer verdict statuses (issue 29, items 3 and 6), through Pilot at 80x24."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Static

from factrecall_bench.tui.app import FactRecallApp
from factrecall_bench.tui.pending import PlannedRun, suite_plan
from factrecall_bench.tui.reader import RunsReader
from factrecall_bench.tui.state import RunsState
from factrecall_bench.tui.widgets import STYLES
from tests.conftest import TESTS

RUNS = TESTS / "data" / "tui_runs"
SIZE = (80, 24)


def sync(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def make_app(runs: Path, **kwargs: Any) -> FactRecallApp:
    app = FactRecallApp(runs, clock=lambda: 100.0, poll_interval=None, **kwargs)
    app.animation_level = "none"
    return app


async def loaded(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def table_rows(app: FactRecallApp, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def columns(app: FactRecallApp, selector: str) -> list[str]:
    return [str(c.label) for c in app.query_one(selector, DataTable).ordered_columns]


def rendered(app: FactRecallApp, selector: str) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.query_one(selector, Static).content)
    return console.export_text()


def write_run(runs: Path, suite: str, run_id: str, result: bool = True) -> None:
    """A started run of strategy mixed, seed 0; finished (with metrics) when `result`."""
    run_dir = runs / suite / run_id
    run_dir.mkdir(parents=True)
    start = {"t": 1.0, "event": "run_start", "run_id": run_id, "suite": suite,
             "strategy": "mixed", "model": "tiny-llama", "seed": 0, "total_steps": 10}
    (run_dir / "events.jsonl").write_text(json.dumps(start) + "\n")
    if result:
        metric = {"value": 0.5, "low": 0.4, "high": 0.6, "n": 100}
        (run_dir / "result.json").write_text(json.dumps({
            "schema_version": 1, "suite": suite, "strategy": "mixed", "model": "tiny-llama",
            "seed": 0, "metrics": {"id_exact_match": metric, "ood_exact_match": metric},
            "trace": None}))


@sync
async def test_runs_of_several_suites_get_a_suite_column(tmp_path: Path) -> None:
    write_run(tmp_path, "cpu", "mixed-tiny-llama-s0-aaaaaaaa")
    write_run(tmp_path, "mine", "mixed-tiny-llama-s0-bbbbbbbb")
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert columns(app, "#matrix-table")[:2] == ["suite", "strategy"]
        assert [row[:3] for row in table_rows(app, "#matrix-table")] == [
            ["cpu", "mixed", "0"], ["mine", "mixed", "0"]]
        await pilot.press("3")
        await pilot.pause()
        assert columns(app, "#results-table")[0] == "suite"
        assert [row[:3] for row in table_rows(app, "#results-table")] == [
            ["cpu", "mixed", "0"], ["mine", "mixed", "0"]]
        await pilot.press("1", "slash")
        await pilot.press(*"mine")
        await pilot.pause()
        assert columns(app, "#matrix-table")[0] == "strategy"  # one suite shown: no column


@sync
async def test_one_suite_has_no_suite_column() -> None:
    app = make_app(RUNS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert "suite" not in columns(app, "#matrix-table")
        await pilot.press("3")
        assert "suite" not in columns(app, "#results-table")


def planned(suite: str, run_id: str, seed: int, runs: Path) -> PlannedRun:
    return PlannedRun(run_id, suite, "base", "two-stage", "tiny-llama", seed, runs / suite / run_id)


@sync
async def test_a_suites_runs_not_started_show_as_pending(tmp_path: Path) -> None:
    started = "mixed-tiny-llama-s0-aaaaaaaa"
    write_run(tmp_path, "cpu", started, result=False)
    plan = [PlannedRun(started, "cpu", "base", "mixed", "tiny-llama", 0,
                       tmp_path / "cpu" / started),
            planned("cpu", "two-stage-tiny-llama-s0-cccccccc", 0, tmp_path),
            planned("cpu", "two-stage-tiny-llama-s1-dddddddd", 1, tmp_path)]
    app = make_app(tmp_path, suite="cpu", plan=lambda: plan)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        rows = {row[0] + " s" + row[1]: row[3] for row in table_rows(app, "#matrix-table")}
        assert rows == {"mixed s0": "interrupted", "two-stage s0": "pending",
                        "two-stage s1": "pending"}
        assert "3 runs: 2 pending, 1 interrupted" in str(
            app.query_one("#matrix-status", Static).content)
        write_run(tmp_path, "cpu", "two-stage-tiny-llama-s0-cccccccc")  # it starts and ends
        app.request_poll()
        await loaded(pilot)
        assert sorted(row[3] for row in table_rows(app, "#matrix-table")) == [
            "finished", "interrupted", "pending"]


def test_a_suite_that_cannot_be_listed_is_one_warning(tmp_path: Path) -> None:
    write_run(tmp_path, "cpu", "mixed-tiny-llama-s0-aaaaaaaa")

    def broken() -> list[PlannedRun]:
        raise ValueError("unknown suite 'cpu'")

    reader, state = RunsReader(tmp_path, "cpu", broken), RunsState()
    warnings = state.apply(reader.poll())
    assert warnings == ["cannot list the suite's runs, so none shows as pending: unknown suite 'cpu'"]
    assert [r.status for r in state.sorted_runs()] == ["finished"]
    assert state.apply(reader.poll()) == []  # the plan is read once


def test_the_plan_is_the_suites_runs_as_run_names_them(tmp_path: Path) -> None:
    plan = suite_plan(str(TESTS / "data" / "suites" / "tui.toml"), tmp_path)
    recorded = sorted(p.name for p in (RUNS / "tui").iterdir() if p.is_dir())
    assert sorted(p.run_id for p in plan) == recorded
    assert {p.folder for p in plan} == {tmp_path / "tui" / run_id for run_id in recorded}


@sync
async def test_bio_recall_is_not_listed_under_exact_match() -> None:
    app = make_app(RUNS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("3")
        await pilot.pause()
        labels = [row[0] for row in table_rows(app, "#attribute-table")]
        bio = [label for label in labels if label.startswith("BIO")]
        assert bio and all(label.startswith("BIO recall P_test: ") for label in bio)
        assert not any("exact match" in label for label in bio)
        assert "ID exact match: birth_city" in labels
        titles = [str(s.content) for s in app.query("#results-scroll .view-title")]
        assert titles[1] == "per attribute: ID and OOD exact match, BIO first-token recall"


LONG_NAME = ("mixed beats two-stage on OOD exact match of the people whose biographies were seen "
             "only in pretraining, by at least five points, on every seed")


def verdicts_copy(tmp_path: Path, verdicts: list[dict[str, Any]]) -> Path:
    runs = Path(shutil.copytree(RUNS, tmp_path / "runs"))
    path = runs / "tui" / "verdicts.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "verdicts": verdicts}))
    return runs


def a_verdict(**fields: Any) -> dict[str, Any]:
    base = {"name": "a claim", "kind": "claim", "status": "pass", "label": "pass",
            "outcome": "holds", "expect": "holds", "test": "welch", "metric": "ood_exact_match",
            "effect": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_value": 0.001,
            "p_adjusted": 0.002, "detail": "one line"}
    return {**base, **fields}


@sync
async def test_a_long_verdict_name_shows_in_full_in_the_detail(tmp_path: Path) -> None:
    runs = verdicts_copy(tmp_path, [a_verdict(name=LONG_NAME)])
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        await pilot.pause()
        cell = table_rows(app, "#verdicts-table")[0][1]
        assert cell.endswith("…") and len(cell) < len(LONG_NAME)  # the table cuts it ...
        assert rendered(app, "#verdict-detail").splitlines()[0].strip() == LONG_NAME  # not here
        box = app.query_one("#verdict-detail-box")
        wrapped_lines = len(LONG_NAME) // (SIZE[0] - 4) + 1
        assert box.region.height - 1 >= wrapped_lines + 3  # the whole name and the verdict fit
        assert box.region.bottom <= app.screen.region.bottom - 1


NEW_STATUSES = [
    a_verdict(name="x fails", status="xfail", outcome="does_not_hold", expect="fails",
              label="expected failure (does not hold)"),
    a_verdict(name="x passes", status="xpass", expect="fails", label="unexpected pass (holds)"),
    a_verdict(name="regression ood", kind="regression", status="no_baseline",
              outcome="no_baseline", expect="no_change", label="no baseline",
              detail="no baseline for these settings: stage2_lr=3e-4"),
]


@sync
async def test_new_statuses_show_their_labels_and_colours(tmp_path: Path) -> None:
    runs = verdicts_copy(tmp_path, NEW_STATUSES)
    app = make_app(runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        await pilot.pause()
        table = app.query_one("#verdicts-table", DataTable)
        cells = [table.get_row_at(i)[0] for i in range(table.row_count)]
        assert [str(c) for c in cells] == [v["label"] for v in NEW_STATUSES]
        styles = [c.style for c in cells if isinstance(c, Text)]
        assert styles == [STYLES["xfail"], STYLES["xpass"], STYLES["no_baseline"]]
        title = str(app.query_one("#verdicts-title", Static).content)
        assert title.endswith("1 xfail · 1 xpass · 1 no baseline")
        await pilot.press("end")
        await pilot.pause()
        assert "no baseline for these settings" in rendered(app, "#verdict-detail")
