"""The factrecall-bench TUI: follow a runs folder live (runs, curves, results, verdicts, trace).

It only reads the runs' files (and tries an unfinished run's lock for an instant, to tell a live
run from a killed one), so closing it never harms a run and reopening picks them up again.
A worker polls the files (`reader`); `state` folds what it read; each view (`*_view`) only renders
that state. This module wires them: the tabs, the keys, the polling and the suite launcher.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, TabbedContent, TabPane

from factrecall_bench.runfolder import SuiteFolder
from factrecall_bench.tui.curves_view import CurvesView
from factrecall_bench.tui.details_view import DetailsView
from factrecall_bench.tui.format import fmt_ago
from factrecall_bench.tui.help_screen import HelpScreen
from factrecall_bench.tui.launcher import SuiteLauncher
from factrecall_bench.tui.matrix_view import MatrixView
from factrecall_bench.tui.pending import PlannedRun, suite_plan
from factrecall_bench.tui.reader import RunsReader
from factrecall_bench.tui.results_view import ResultsView
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.state import RunsState
from factrecall_bench.tui.trace_view import TraceView
from factrecall_bench.tui.verdicts_view import VerdictsView
from factrecall_bench.tui.widgets import INTERRUPTED_HINT

Clock = Callable[[], float]
VIEWS = (
    ("matrix", "1 Runs"),
    ("curves", "2 Curves"),
    ("results", "3 Results"),
    ("verdicts", "4 Verdicts"),
    ("trace", "5 Trace"),
    ("details", "6 Details"),
)
VIEW_IDS = tuple(view for view, _ in VIEWS)
SCROLLERS = {  # what pageup/pagedown/home/end scroll in views whose focus does not take them
    "curves": "#curves-scroll",
    "results": "#results-scroll",
    "trace": "#trace-scroll",
    "details": "#details-config-box",
}


class FactRecallApp(App[None]):
    """Follows RUNS_DIR; `clock` is injectable so tests can freeze ETAs and "ago" labels; `plan`
    lists the suite's runs, shown as pending until they start (`pending.suite_plan`)."""

    CSS_PATH = "app.tcss"
    TITLE = "factrecall-bench"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "toggle_suite", "Start/stop"),
        Binding("r", "refresh", "Refresh"),
        Binding("tab", "next_view(1)", "Next view", priority=True),
        Binding("shift+tab", "next_view(-1)", "Previous view", show=False, priority=True),
        *(Binding(str(i + 1), f"show_view('{v}')", show=False) for i, v in enumerate(VIEW_IDS)),
        Binding("up", "select_run(-1)", "Previous run", show=False),
        Binding("down", "select_run(1)", "Next run", show=False),
        Binding("enter", "show_view('details')", "Details", show=False),
        Binding("pageup", "scroll_view('page_up')", show=False),
        Binding("pagedown", "scroll_view('page_down')", show=False),
        Binding("home", "scroll_view('scroll_home')", show=False),
        Binding("end", "scroll_view('scroll_end')", show=False),
    ]

    def __init__(
        self,
        runs_dir: Path,
        suite: str | None = None,
        launch_command: list[str] | None = None,
        *,
        clock: Clock = time.time,
        poll_interval: float | None = 0.5,
        launch_log: Path | None = None,
        start_on_open: bool = False,
        plan: Callable[[], list[PlannedRun]] | None = None,
    ) -> None:
        super().__init__()
        self.start_on_open = start_on_open
        self.runs_dir = Path(runs_dir)
        self.clock = clock
        self.poll_interval = poll_interval
        self.reader = RunsReader(self.runs_dir, suite, plan)
        self.state = RunsState()
        self.launcher: SuiteLauncher | None = None
        if launch_command:
            log_path = launch_log or SuiteFolder(self.runs_dir / (suite or "")).launch_log
            self.launcher = SuiteLauncher(launch_command, log_path)
        self.selected_run_id: str | None = None
        self.filter_text = ""
        self.polls = 0
        self.poll_errors: list[str] = []
        self._polling = False
        self._rendered: tuple[int, str | None] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        views = {
            "matrix": MatrixView,
            "curves": CurvesView,
            "results": ResultsView,
            "verdicts": VerdictsView,
            "trace": TraceView,
            "details": DetailsView,
        }
        with TabbedContent(id="views"):
            for view_id, title in VIEWS:
                with TabPane(title, id=view_id):
                    yield views[view_id]()
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.runs_dir.name
        self.query_one("#matrix-table", DataTable).focus()
        if self.launcher is not None and self.start_on_open:
            self.action_toggle_suite()
        elif self.launcher is not None:
            self.notify("press s to start the suite; q leaves it running", title="suite")
        self.request_poll()
        if self.poll_interval:
            self.set_interval(self.poll_interval, self.request_poll)

    # -- following the files ----------------------------------------------------------------------
    def request_poll(self) -> None:
        """Start a poll unless one is still reading (a slow disk must not pile them up)."""
        if not self._polling:
            self._polling = True
            self.run_worker(self._poll(), group="poll", exit_on_error=False)

    async def _poll(self) -> None:
        try:
            batch = await asyncio.to_thread(self.reader.poll)
            warnings = self.state.apply(batch)
            self.polls += 1
            for warning in warnings[:3]:
                self.notify(warning, title="warning", severity="warning")
            if len(warnings) > 3:
                self.notify(f"and {len(warnings) - 3} more warnings", severity="warning")
            self.refresh_views()
        except Exception as err:  # a monitor must not die on one bad read; show it instead
            self.poll_errors.append(f"{type(err).__name__}: {err}")
            self.notify(self.poll_errors[-1], title="poll failed", severity="error")
        finally:
            self._polling = False

    # -- rendering --------------------------------------------------------------------------------
    def visible_runs(self) -> list[RunState]:
        return self.state.sorted_runs(self.filter_text)

    def selected_run(self) -> RunState | None:
        return self.state.run(self.selected_run_id)

    def status_line(self, now: float) -> str:
        counts = self.state.status_counts()
        counted = [
            f"{n} {status}" + (f" ({INTERRUPTED_HINT})" if status == "interrupted" else "")
            for status, n in counts.items()
        ]
        parts = [f"{len(self.state.all_runs())} runs: " + ", ".join(counted)]
        if self.state.warnings:
            parts.append(f"{len(self.state.warnings)} warning(s)")
        last = self.state.last_event_t()
        parts.append("last event " + fmt_ago(None if last is None else now - last))
        if self.filter_text:
            parts.append(f"filter '{self.filter_text}'")
        if self.launcher is not None:
            parts.append(f"suite {self.launcher.describe()}")
        return " · ".join(parts)

    def refresh_views(self) -> None:
        if not self.query(MatrixView):
            return  # a late message while the app shuts down
        visible = self.visible_runs()
        if self.selected_run_id not in {r.run_id for r in visible}:
            self.selected_run_id = visible[0].run_id if visible else None
        now = self.clock()
        selected = self.selected_run()
        every_run = self.state.sorted_runs()
        self.query_one(MatrixView).show(visible, self.selected_run_id, now, self.status_line(now))
        key = (self.state.version, self.selected_run_id)
        if key == self._rendered:
            return  # only the clock moved: the other views do not show it
        self._rendered = key
        self.query_one(CurvesView).show(every_run, selected)
        self.query_one(ResultsView).show(every_run)
        self.query_one(VerdictsView).show(self.state.all_verdicts())
        self.query_one(TraceView).show(selected)
        self.query_one(DetailsView).show(selected)

    # -- events -----------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#matrix-table")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if not table.is_valid_coordinate(table.cursor_coordinate) or (
            table.coordinate_to_cell_key(table.cursor_coordinate).row_key != event.row_key
        ):
            return  # stale: the table was refilled or the cursor moved on since
        if event.row_key.value != self.selected_run_id:
            self.selected_run_id = event.row_key.value
            self.refresh_views()

    @on(DataTable.RowSelected, "#matrix-table")
    def _run_selected(self, event: DataTable.RowSelected) -> None:
        self.selected_run_id = event.row_key.value
        self.refresh_views()
        self.action_show_view("details")

    @on(TabbedContent.TabActivated)
    def _view_activated(self, event: TabbedContent.TabActivated) -> None:
        filtering = self.query_one("#filter", Input).display
        focus = {
            "matrix": "#filter" if filtering else "#matrix-table",
            "results": "#results-scroll",
            "verdicts": "#verdicts-table",
        }.get(event.pane.id or "")
        if focus:
            self.query_one(focus).focus()
        else:
            self.set_focus(None)  # so up/down reach the app and select runs

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.refresh_views()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.input.display = False
        self.query_one("#matrix-table", DataTable).focus()

    # -- actions ----------------------------------------------------------------------------------
    @property
    def active_view(self) -> str:
        return self.query_one("#views", TabbedContent).active

    def action_show_view(self, view: str) -> None:
        self.query_one("#views", TabbedContent).active = view

    def action_next_view(self, step: int) -> None:
        index = VIEW_IDS.index(self.active_view) if self.active_view in VIEW_IDS else 0
        self.action_show_view(VIEW_IDS[(index + step) % len(VIEW_IDS)])

    def action_select_run(self, step: int) -> None:
        ids = [r.run_id for r in self.visible_runs()]
        if not ids:
            return
        index = ids.index(self.selected_run_id) if self.selected_run_id in ids else 0
        self.selected_run_id = ids[max(0, min(len(ids) - 1, index + step))]
        self.refresh_views()

    def action_scroll_view(self, how: str) -> None:
        """pageup/pagedown/home/end where the focused widget does not take them itself."""
        selector = SCROLLERS.get(self.active_view)
        if selector is not None:
            getattr(self.query_one(selector), f"action_{how}")()

    def action_filter(self) -> None:
        filter_input = self.query_one("#filter", Input)
        filter_input.display = True
        filter_input.focus()  # and again when the matrix view activates, if it was elsewhere
        self.action_show_view("matrix")

    def action_refresh(self) -> None:
        self.request_poll()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_suite(self) -> None:
        if self.launcher is None:
            self.notify("no suite to start: open the TUI with --suite NAME", severity="warning")
            return
        try:
            if self.launcher.running:
                self.launcher.stop()
                self.notify("stopping the suite (SIGTERM); it resumes from its checkpoints")
            else:
                self.launcher.start()
                self.notify(f"suite started; its output goes to {self.launcher.log_path}")
        except OSError as err:
            self.notify(f"cannot start the suite: {err}", severity="error")
        self.refresh_views()


def run_app(runs_dir: Path, suite: str | None = None, launch_command: list[str] | None = None,
            suite_source: str | None = None) -> None:
    """Entry point of `factrecall-bench tui`: follow RUNS_DIR (only SUITE when given).

    With `launch_command`, the suite starts as a detached subprocess when the app opens (runs that
    another process is already training are locked and skipped by it); "s" stops and restarts it;
    its output goes to RUNS_DIR/SUITE/tui-launch.log; quitting the TUI leaves it running.
    With SUITE, its runs not started yet show as pending (the suite read from `suite_source`, its
    name or path as the user gave it, else from its name).
    """
    source = suite_source or suite
    plan = None if source is None else functools.partial(suite_plan, source, Path(runs_dir))
    FactRecallApp(Path(runs_dir), suite, launch_command, start_on_open=bool(launch_command),
                  plan=plan).run()
