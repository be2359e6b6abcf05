"""The TUI app driven through Pilot (textual's test harness) on the recorded runs folder
(tests/tui/recorded.py): what each view shows, keys, scrolling, polls, the launcher. The state
layer under it is tested in tests/tui/.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock
from rich.console import Console
from textual.widgets import DataTable, Log, Static

from factrecall_bench.runfolder import (
    RunFolder,
)
from factrecall_bench.tui.app import FactRecallApp
from factrecall_bench.tui.curves_view import CurvePanel
from factrecall_bench.tui.format import (
    fmt_duration,
    fmt_interval,
    fmt_num,
    fmt_p,
    verdict_label,
)
from factrecall_bench.tui.help_screen import HelpScreen
from factrecall_bench.tui.launcher import SuiteLauncher
from factrecall_bench.tui.trace_view import NO_TRACE
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
    UNFINISHED_STEPS,
    append,
    frozen,
    recorded_events,
    recorded_result,
    recorded_verdicts,
    step_line,
)

SIZE = (80, 24)


def sync(test):
    """Run an async Pilot test without an asyncio pytest plugin (none is a test dependency)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


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
