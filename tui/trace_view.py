"""View 5, trace: the selected run's cross-task gradient trace and mechanism analyses as labelled
tables (trace_tables), or, before its result.json, the numbers of its trace event."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from factrecall_bench.tui.format import fmt_num
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.tables import LabelledTable, tables_group
from factrecall_bench.tui.trace_tables import analyses_tables, trace_heading, trace_tables
from factrecall_bench.tui.widgets import run_label

NO_TRACE = "no trace yet (the run has not finished, or its trace is off)"


def event_summary_table(summary: dict[str, float]) -> LabelledTable:
    """The trace event's flat numbers: all there is until result.json is written."""
    rows = tuple((name, fmt_num(value)) for name, value in sorted(summary.items()))
    return LabelledTable("trace event summary (result.json not written yet)", ("key", "value"),
                         rows)


def trace_content(run: RunState | None) -> tuple[str, list[LabelledTable]]:
    """(heading, tables) of what the trace view shows for a run."""
    if run is None:
        return "no run selected", []
    analyses = analyses_tables(run.analyses or {})
    if run.trace is not None:
        return trace_heading(run.trace), trace_tables(run.trace) + analyses
    if analyses:
        return "mechanism analyses (no gradient trace)", analyses
    if run.trace_summary:
        return "trace", [event_summary_table(run.trace_summary)]
    return NO_TRACE, []


class TraceView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="trace-title", classes="view-title", markup=False)
        with VerticalScroll(id="trace-scroll"):
            yield Static(id="trace-tables")

    def on_mount(self) -> None:
        self.query_one("#trace-scroll").can_focus = False

    def show(self, run: RunState | None) -> None:
        title = f"trace of {run_label(run)} ({run.model})" if run else "trace"
        heading, tables = trace_content(run)
        self.query_one("#trace-title", Static).update(title)
        self.query_one("#trace-tables", Static).update(tables_group(heading, tables))
