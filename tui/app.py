"""The factrecall-bench TUI: follow a runs folder live (runs, curves, results, verdicts, trace).

It only reads the runs' files (and tries an unfinished run's lock for an instant, to tell a live
run from a killed one), so closing it never harms a run and reopening picks them up again.
A worker polls the files; the widgets below only render what `factrecall_bench.tui.state` folded from them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, ScrollableContainer, Vertical, VerticalScroll
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    Log,
    Static,
    TabbedContent,
    TabPane,
)

from factrecall_bench.tui.format import (
    DASH,
    fmt_ago,
    fmt_ci,
    fmt_duration,
    fmt_interval,
    fmt_num,
    fmt_p,
    fmt_rate,
    fmt_steps,
    head_map_lines,
    loss_scale,
    spark_text,
    status_counts_text,
    verdict_label,
    verdict_text,
)
from factrecall_bench.tui.launcher import SuiteLauncher
from factrecall_bench.tui.state import (
    LOG_TAIL_LINES,
    Interval,
    RunsReader,
    RunsState,
    RunState,
    SuiteVerdicts,
    as_float,
)

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
STYLES = {
    "finished": "green",
    "running": "yellow",
    "interrupted": "magenta",
    "failed": "bold red",
    "skipped": "dim",
    "pending": "dim",
    "pass": "green",
    "fail": "bold red",
    "inconclusive": "yellow",
    "reported": "cyan",
}
INTERRUPTED_HINT = "rerun to resume"
SCROLLERS = {  # what pageup/pagedown/home/end scroll in views whose focus does not take them
    "curves": "#curves-scroll",
    "results": "#results-scroll",
    "trace": "#trace-scroll",
    "details": "#details-config-box",
}
MATRIX_COLUMNS = (
    ("strategy", "strategy"),
    ("seed", "seed"),
    ("model", "model"),
    ("status", "status"),
    ("phase", "phase"),
    ("step", "step"),
    ("loss", "loss"),
    ("eta", "ETA"),
    ("tok_s", "tok/s"),
)
HELP_TEXT = """\
The TUI only reads the runs folder: quitting never stops a run.

 q         quit (a suite started with s keeps running)
 1-6, tab  switch view: runs curves results verdicts trace details
 up/down   select a run (in runs, curves, trace and details);
           scroll the results; move through the verdicts
 pgup/pgdn scroll the view; home/end: its top/bottom
 enter     open the selected run's details
 /         filter runs by strategy, model or status (esc clears)
 s         start/stop the suite given with --suite
 r         re-read the runs folder now
 ?, esc    close this help
"""


def styled(text: str, key: str | None = None) -> Text:
    return Text(text, style=STYLES.get(key or text, ""))


def seed_text(run: RunState) -> str:
    return DASH if run.seed is None else str(run.seed)


def run_label(run: RunState) -> str:
    return f"{run.label} s{seed_text(run)}"


class RowTable(DataTable):
    """A table of rows to pick from: home/end go to the first/last row (DataTable's own go to
    the first/last column)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]


# -- 1. run matrix --------------------------------------------------------------------------
def matrix_row(run: RunState, now: float) -> tuple[str | Text, ...]:
    return (
        run.label,
        seed_text(run),
        run.model,
        styled(run.status),
        run.phase or DASH,
        fmt_steps(run.step, run.total_steps),
        fmt_num(run.loss),
        fmt_duration(run.eta_s(now)) if run.status == "running" else DASH,
        fmt_rate(run.tokens_per_s),
    )


class MatrixView(Vertical):
    BINDINGS = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter by strategy, model or status", id="filter")
        yield RowTable(id="matrix-table", cursor_type="row")
        yield Static(id="matrix-status", markup=False)

    def on_mount(self) -> None:
        table = self.query_one("#matrix-table", DataTable)
        for key, label in MATRIX_COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#filter", Input).display = False

    def show(self, runs: Sequence[RunState], selected: str | None, now: float, status: str) -> None:
        table = self.query_one("#matrix-table", DataTable)
        rows = {run.run_id: matrix_row(run, now) for run in runs}
        if list(rows) != [row.key.value for row in table.ordered_rows]:
            table.clear()
            for run_id, cells in rows.items():
                table.add_row(*cells, key=run_id)
        else:
            for run_id, cells in rows.items():
                for (column, _), cell in zip(MATRIX_COLUMNS, cells, strict=True):
                    if table.get_cell(run_id, column) != cell:
                        table.update_cell(run_id, column, cell, update_width=True)
        if selected in rows and table.cursor_row != list(rows).index(selected):
            table.move_cursor(row=list(rows).index(selected), animate=False)
        self.query_one("#matrix-status", Static).update(status)

    def action_clear_filter(self) -> None:
        filter_input = self.query_one("#filter", Input)
        filter_input.value = ""
        filter_input.display = False
        self.query_one("#matrix-table", DataTable).focus()


# -- 2. curves ---------------------------------------------------------------------------------
def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class Curve(Widget):
    """One line of bars on a fixed scale: exact match on 0..1, loss on 0..its highest value."""

    DEFAULT_CSS = "Curve { height: 1; }"
    data: reactive[list[float]] = reactive(list, always_update=True)

    def __init__(self, fixed_scale: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.fixed_scale = fixed_scale

    def render(self) -> Text:
        low, high = self.fixed_scale or loss_scale(self.data)
        return Text(spark_text(self.data, self.size.width, low, high), style="green")


class CurvePanel(Vertical):
    """Loss, ID and OOD exact match of one run as one-line curves with their latest values."""

    ROWS = (("loss", "loss"), ("id_exact_match", "ID"), ("ood_exact_match", "OOD"))

    def __init__(self, run: RunState, selected: bool) -> None:
        super().__init__(classes="curve-panel")
        self.run_id = run.run_id
        self.title = Label("", classes="curve-title", markup=False)
        self.sparks = {key: Curve(None if key == "loss" else (0.0, 1.0)) for key, _ in self.ROWS}
        self.values = {key: Label("", classes="curve-value", markup=False) for key, _ in self.ROWS}
        self._initial = (run, selected)

    def compose(self) -> ComposeResult:
        yield self.title
        for key, label in self.ROWS:
            with Horizontal(classes="curve-row"):
                yield Label(label, classes="curve-label")
                yield self.sparks[key]
                yield self.values[key]

    def on_mount(self) -> None:
        self.show(*self._initial)

    def show(self, run: RunState, selected: bool) -> None:
        marker = "▶ " if selected else "  "
        self.title.update(f"{marker}{run_label(run)} · {run.status} · {run.step} steps")
        self.set_class(selected, "selected")
        histories = {"loss": run.loss_values}
        for key in ("id_exact_match", "ood_exact_match"):
            histories[key] = run.metric_history(key)
        for key, values in histories.items():
            self.sparks[key].data = list(values)
            self.values[key].update(fmt_num(values[-1], 3 if key == "loss" else 2) if values else DASH)


class CurvesView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="curves-title", classes="view-title", markup=False)
        with VerticalScroll(id="curves-scroll"):
            yield Grid(id="curve-grid")

    def on_resize(self, event: Resize) -> None:
        # strategies side by side: as many columns of about 38 cells as the width allows
        columns = max(1, event.size.width // 38)
        self.query_one("#curve-grid", Grid).styles.grid_size_columns = columns

    def show(self, runs: Sequence[RunState], selected: RunState | None) -> None:
        seed = selected.seed if selected else None
        ordered = sorted(runs, key=lambda r: (r.seed != seed, r.seed or 0, r.strategy))
        title = "loss, ID and OOD exact match as evals land"
        if selected is not None:
            title = f"{run_label(selected)} ({selected.model}) first · {title}"
        self.query_one("#curves-title", Static).update(title)
        grid = self.query_one("#curve-grid", Grid)
        panels = list(grid.query(CurvePanel))
        sel_id = selected.run_id if selected else None
        if [p.run_id for p in panels] != [r.run_id for r in ordered]:
            grid.remove_children()
            grid.mount_all([CurvePanel(r, r.run_id == sel_id) for r in ordered])
            return
        for panel, run in zip(panels, ordered, strict=True):
            panel.show(run, run.run_id == sel_id)


# -- 3. results ---------------------------------------------------------------------------------
RESULT_METRICS = (
    "id_exact_match",
    "ood_exact_match",
    "bio_first_token_train",
    "bio_first_token_test",
)


def result_rows(runs: Sequence[RunState]) -> list[tuple[str, ...]]:
    """One row per finished run, then a mean row per strategy with two or more seeds."""
    finished = [r for r in runs if r.status == "finished" and r.metrics]
    rows: list[tuple[str, ...]] = []
    for run in finished:
        m = run.metrics
        rows.append(
            (
                run.strategy,
                seed_text(run),
                fmt_interval(m.get("id_exact_match")),
                fmt_interval(m.get("ood_exact_match")),
                fmt_num(_value(m.get("bio_first_token_train")), 2),
                fmt_num(_value(m.get("bio_first_token_test")), 2),
            )
        )
    for strategy in sorted({r.strategy for r in finished}):
        group = [r for r in finished if r.strategy == strategy]
        if len(group) > 1:
            cells = []
            for metric in RESULT_METRICS:
                values = [r.metrics[metric].value for r in group if metric in r.metrics]
                cells.append(fmt_num(mean(values), 2) if values else DASH)
            rows.append((strategy, "mean", *cells))
    return rows


def _value(interval: Interval | None) -> float | None:
    return None if interval is None else interval.value


def attribute_rows(runs: Sequence[RunState]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Columns (one per finished run) and rows (metric x attribute) of per-attribute scores."""
    finished = [r for r in runs if r.status == "finished" and r.per_attribute]
    keys: list[tuple[str, str]] = []
    for run in finished:
        for metric, by_attr in run.per_attribute.items():
            keys.extend((metric, a) for a in by_attr if (metric, a) not in keys)
    rows = []
    for metric, attr in keys:
        short = metric.removesuffix("_exact_match").upper() if "exact" in metric else metric
        cells = [fmt_num(_value(r.per_attribute.get(metric, {}).get(attr)), 2) for r in finished]
        rows.append((f"{short} {attr}", *cells))
    return [run_label(r) for r in finished], rows


class ResultsView(Vertical):
    def __init__(self) -> None:
        super().__init__()
        self._shown: Any = None

    def compose(self) -> ComposeResult:
        # One scroller for both tables, focused with the view, so every row and column is a key
        # away at 80x24 (the tables themselves take no focus: tab switches views).
        with ScrollableContainer(id="results-scroll"):
            yield Static(
                "exact match with 95% Wilson interval · BIO first-token retention",
                classes="view-title",
            )
            yield DataTable(id="results-table", cursor_type="none")
            yield Static("per attribute (exact match)", classes="view-title")
            yield DataTable(id="attribute-table", cursor_type="none")

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            table.can_focus = False

    def show(self, runs: Sequence[RunState]) -> None:
        rows = result_rows(runs)
        columns, attr_rows = attribute_rows(runs)
        if (rows, columns, attr_rows) == self._shown:
            return
        self._shown = (rows, columns, attr_rows)
        fill_table(
            self.query_one("#results-table", DataTable),
            ["strategy", "seed", "ID EM [95%]", "OOD EM [95%]", "BIO train", "BIO test"],
            rows,
        )
        fill_table(self.query_one("#attribute-table", DataTable), ["attribute", *columns], attr_rows)


def fill_table(
    table: DataTable,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    widths: dict[int, int] | None = None,
) -> None:
    """Replace a table's content; `widths` fixes (and crops) some columns by index."""
    table.clear(columns=True)
    for index, label in enumerate(columns):
        table.add_column(label, width=(widths or {}).get(index))
    for index, row in enumerate(rows):
        table.add_row(*row, key=str(index))


# -- 4. verdicts ------------------------------------------------------------------------------
VERDICT_COLUMNS = ("status", "verdict", "effect", "95% CI", "p (p adj)")


def verdict_rows(verdicts: Sequence[dict[str, Any]]) -> list[tuple[str | Text, ...]]:
    """One row per verdicts.json entry, as written: the status is shown, never decided here."""
    rows: list[tuple[str | Text, ...]] = []
    for v in verdicts:
        effect = as_float(v.get("effect"))
        p_value, p_adjusted = as_float(v.get("p_value")), as_float(v.get("p_adjusted"))
        rows.append(
            (
                styled(verdict_label(v), verdict_text(v, "status")),
                verdict_text(v, "name"),
                DASH if effect is None else f"{effect:+.2f}",
                fmt_ci(as_float(v.get("ci_low")), as_float(v.get("ci_high"))),
                f"{fmt_p(p_value)} ({fmt_p(p_adjusted)})",
            )
        )
    return rows


def verdict_widths(rows: Sequence[Sequence[str | Text]], width: int) -> dict[int, int]:
    """Widths of the status and verdict columns: their content where the screen has room, else
    the name gets what is left beside a status word (at least 12 cells) and the status the rest;
    the numbers keep theirs. The detail line below always shows the whole name and label."""
    content = [
        max([len(label), *(Text(str(row[i])).cell_len for row in rows)])
        for i, label in enumerate(VERDICT_COLUMNS)
    ]
    room = width - 2 * len(VERDICT_COLUMNS) - 2 - sum(content[2:])  # cell padding, scrollbar
    status_word = len("inconclusive")  # the longest status: never cut
    name = min(content[1], max(12, room - min(content[0], status_word)))
    status = min(content[0], max(status_word, room - name))
    return {0: status, 1: name}


def crop(cell: str | Text, width: int | None) -> str | Text:
    """The cell cut to `width` with an ellipsis, so a cut name reads as cut."""
    text = cell.copy() if isinstance(cell, Text) else Text(cell)
    if width is None or text.cell_len <= width:
        return cell
    text.truncate(width, overflow="ellipsis")
    return text if isinstance(cell, Text) else text.plain


class VerdictsView(Vertical):
    def __init__(self) -> None:
        super().__init__()
        self._verdicts: list[dict[str, Any]] = []
        self._shown: Any = None

    def compose(self) -> ComposeResult:
        yield Static(id="verdicts-title", classes="view-title", markup=False)
        yield RowTable(id="verdicts-table", cursor_type="row")
        yield Static(id="verdict-detail", markup=False)

    def on_resize(self, event: Resize) -> None:
        self._fill(event.size.width)

    def show(self, suites: Sequence[SuiteVerdicts]) -> None:
        verdicts = [v for suite in suites for v in suite.verdicts]
        parts = [f"{s.suite}: exit code {s.exit_code}" for s in suites]
        parts += status_counts_text(verdicts)
        self.query_one("#verdicts-title", Static).update(
            " · ".join(parts) if parts else "no verdicts.json yet (run the suite's stats)"
        )
        self._verdicts = verdicts
        self._fill(self.size.width or self.app.size.width)

    def _fill(self, width: int) -> None:
        """(Re)fill the table when the verdicts or the width changed."""
        if not width or (self._verdicts, width) == self._shown:
            return
        self._shown = (self._verdicts, width)
        rows = verdict_rows(self._verdicts)
        widths = verdict_widths(rows, width)
        rows = [tuple(crop(cell, widths.get(i)) for i, cell in enumerate(row)) for row in rows]
        table = self.query_one("#verdicts-table", DataTable)
        cursor = table.cursor_row
        fill_table(table, VERDICT_COLUMNS, rows, widths=widths)
        if 0 < cursor < len(rows):
            table.move_cursor(row=cursor, animate=False)
        self.show_detail(table.cursor_row)

    @on(DataTable.RowHighlighted, "#verdicts-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show_detail(event.cursor_row)

    def show_detail(self, index: int) -> None:
        text = ""
        if 0 <= index < len(self._verdicts):
            v = self._verdicts[index]

            def num(key: str) -> float | None:
                return as_float(v.get(key))

            text = (
                f"{verdict_text(v, 'name')} — {verdict_text(v, 'kind')}, "
                f"{verdict_text(v, 'test')} on {verdict_text(v, 'metric')}: {verdict_label(v)}\n"
                f"effect {fmt_num(num('effect'), 3)} {fmt_ci(num('ci_low'), num('ci_high'))} · "
                f"p {fmt_p(num('p_value'))} · p adjusted {fmt_p(num('p_adjusted'))}\n"
                f"{verdict_text(v, 'detail')}"
            )
        self.query_one("#verdict-detail", Static).update(text)


# -- 5. trace ---------------------------------------------------------------------------------
def trace_text(run: RunState | None) -> tuple[str, str]:
    """(head maps, numbers) of a run's cross-task gradient trace, as plain text."""
    if run is None:
        return "no run selected", ""
    maps = []
    for k, grid in run.head_maps.items():
        maps.append(f"shared parameters, layer x head (k={k})")
        maps.extend(head_map_lines(grid) if grid else ["  no layer x head map in result.json"])
        maps.append("")
    numbers = [f"{name:<28} {value:g}" for name, value in sorted(run.trace_numbers.items())]
    if not maps and not numbers:
        return "no trace yet (the run has not finished, or its trace is off)", ""
    return "\n".join(maps).rstrip(), "\n".join(["ablation and summary numbers", *numbers])


class TraceView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="trace-title", classes="view-title", markup=False)
        with VerticalScroll(id="trace-scroll"):
            yield Static(id="trace-maps", markup=False)
            yield Static(id="trace-numbers", markup=False)

    def on_mount(self) -> None:
        self.query_one("#trace-scroll").can_focus = False

    def show(self, run: RunState | None) -> None:
        title = f"trace of {run_label(run)} ({run.model})" if run else "trace"
        maps, numbers = trace_text(run)
        self.query_one("#trace-title", Static).update(title)
        self.query_one("#trace-maps", Static).update(maps)
        self.query_one("#trace-numbers", Static).update(numbers)


# -- 6. details ---------------------------------------------------------------------------------
class DetailsView(Vertical):
    def __init__(self) -> None:
        super().__init__()
        self._log_run: str | None = None
        self._log_lines = 0

    def compose(self) -> ComposeResult:
        yield Static(id="details-title", markup=False)
        with VerticalScroll(id="details-config-box"):
            yield Static(id="details-config", markup=False)
        yield Log(id="details-log", max_lines=LOG_TAIL_LINES)

    def on_mount(self) -> None:
        self.query_one("#details-config-box").can_focus = False
        self.query_one("#details-log").can_focus = False

    def show(self, run: RunState | None) -> None:
        if run is None:
            self.query_one("#details-title", Static).update("no run selected")
            return
        lines = [f"{run.run_id} · {run.status} · {run.path}"]
        if run.status == "interrupted":
            checkpoint = run.last_checkpoint
            since = "the start" if checkpoint is None else f"its checkpoint at step {checkpoint}"
            lines.append(f"interrupted: no process holds its lock; {INTERRUPTED_HINT} from {since}")
        if run.failure_reason:
            lines.append(f"failed: {run.failure_reason}")
        lines.extend(f"warning: {w}" for w in run.warnings[-3:])
        lines.extend(f"runner: {note}" for note in run.notes[-3:])
        self.query_one("#details-title", Static).update("\n".join(lines))
        self.query_one("#details-config", Static).update(json.dumps(run.shown_config, indent=2))
        self._follow_log(run)

    def _follow_log(self, run: RunState) -> None:
        log = self.query_one("#details-log", Log)
        if run.run_id != self._log_run or run.lines_read < self._log_lines:
            log.clear()
            self._log_run, self._log_lines = run.run_id, 0
        new = min(run.lines_read - self._log_lines, len(run.log_tail))
        if new > 0:
            log.write_lines(list(run.log_tail)[-new:])
        self._log_lines = run.lines_read


# -- help ---------------------------------------------------------------------------------------
class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static(HELP_TEXT, id="help-text", markup=False)


# -- the app ------------------------------------------------------------------------------------
class FactRecallApp(App[None]):
    """Follows RUNS_DIR; `clock` is injectable so tests can freeze ETAs and "ago" labels."""

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
    ) -> None:
        super().__init__()
        self.start_on_open = start_on_open
        self.runs_dir = Path(runs_dir)
        self.clock = clock
        self.poll_interval = poll_interval
        self.reader = RunsReader(self.runs_dir, suite)
        self.state = RunsState()
        self.launcher: SuiteLauncher | None = None
        if launch_command:
            log_path = launch_log or self.runs_dir / (suite or "") / "tui-launch.log"
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
        parts = [f"{len(self.state.runs)} runs: " + ", ".join(counted)]
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


def run_app(runs_dir: Path, suite: str | None = None, launch_command: list[str] | None = None) -> None:
    """Entry point of `factrecall-bench tui`: follow RUNS_DIR (only SUITE when given).

    With `launch_command`, the suite starts as a detached subprocess when the app opens (runs that
    another process is already training are locked and skipped by it); "s" stops and restarts it;
    its output goes to RUNS_DIR/SUITE/tui-launch.log; quitting the TUI leaves it running.
    """
    FactRecallApp(Path(runs_dir), suite, launch_command, start_on_open=bool(launch_command)).run()
