"""View 1, the run matrix: one row per run with its status, progress, loss, ETA and throughput."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from factrecall_bench.tui.format import DASH, fmt_duration, fmt_num, fmt_rate, fmt_steps
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.widgets import RowTable, seed_text, several_suites, styled

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
SUITE_COLUMN = ("suite", "suite")


def matrix_columns(runs: Sequence[RunState]) -> tuple[tuple[str, str], ...]:
    """MATRIX_COLUMNS, after a suite column when the runs are of several suites."""
    return ((SUITE_COLUMN,) if several_suites(runs) else ()) + MATRIX_COLUMNS


def matrix_row(run: RunState, now: float, with_suite: bool = False) -> tuple[str | Text, ...]:
    return (
        *((run.suite,) if with_suite else ()),
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
        self._columns: tuple[tuple[str, str], ...] = ()
        self.query_one("#filter", Input).display = False

    def show(self, runs: Sequence[RunState], selected: str | None, now: float, status: str) -> None:
        table = self.query_one("#matrix-table", DataTable)
        columns = matrix_columns(runs)
        if columns != self._columns:
            self._columns = columns
            table.clear(columns=True)
            for key, label in columns:
                table.add_column(label, key=key)
        with_suite = SUITE_COLUMN in columns
        rows = {run.run_id: matrix_row(run, now, with_suite) for run in runs}
        if list(rows) != [row.key.value for row in table.ordered_rows]:
            table.clear()
            for run_id, cells in rows.items():
                table.add_row(*cells, key=run_id)
        else:
            self._update_cells(table, rows)
        if selected in rows and table.cursor_row != list(rows).index(selected):
            table.move_cursor(row=list(rows).index(selected), animate=False)
        self.query_one("#matrix-status", Static).update(status)

    def _update_cells(self, table: DataTable, rows: dict[str, tuple[str | Text, ...]]) -> None:
        for run_id, cells in rows.items():
            for (column, _), cell in zip(self._columns, cells, strict=True):
                if table.get_cell(run_id, column) != cell:
                    table.update_cell(run_id, column, cell, update_width=True)

    def action_clear_filter(self) -> None:
        filter_input = self.query_one("#filter", Input)
        filter_input.value = ""
        filter_input.display = False
        self.query_one("#matrix-table", DataTable).focus()
