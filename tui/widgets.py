"""What the TUI's views share: status colours, run labels, tables of rows to pick from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from factrecall_bench.tui.format import DASH
from factrecall_bench.tui.run_state import RunState

STYLES = {
    "finished": "green",
    "running": "yellow",
    "interrupted": "magenta",
    "failed": "bold red",
    "pending": "dim",
    "pass": "green",
    "fail": "bold red",
    "inconclusive": "yellow",
    "reported": "cyan",
    "xfail": "magenta",
    "xpass": "magenta",
    "no_baseline": "blue",
}
INTERRUPTED_HINT = "rerun to resume"


def styled(text: str, key: str | None = None) -> Text:
    return Text(text, style=STYLES.get(key or text, ""))


def seed_text(run: RunState) -> str:
    return DASH if run.seed is None else str(run.seed)


def several_suites(runs: Sequence[RunState]) -> bool:
    """Whether the runs are of more than one suite: then views show each row's suite."""
    return len({run.suite for run in runs}) > 1


def run_label(run: RunState) -> str:
    return f"{run.label} s{seed_text(run)}"


class RowTable(DataTable):
    """A table of rows to pick from: home/end go to the first/last row (DataTable's own go to
    the first/last column)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]


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
