"""View 4, verdicts: every suite's verdicts.json as written, one row per verdict, its detail below."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.events import Resize
from textual.widgets import DataTable, Static

from factrecall_bench.tui.format import (
    DASH,
    fmt_ci,
    fmt_num,
    fmt_p,
    status_counts_text,
    verdict_label,
    verdict_text,
)
from factrecall_bench.tui.reader import SuiteVerdicts
from factrecall_bench.tui.tables import LabelledTable, table_parts
from factrecall_bench.tui.values import as_float
from factrecall_bench.tui.widgets import RowTable, fill_table, styled

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


def definition_table(verdict: Mapping[str, Any]) -> LabelledTable | None:
    """A trace claim judged under each trace definition (verdict["definitions"], the main one
    first), as written; None for a verdict without them."""
    raw = verdict.get("definitions")
    entries = [d for d in raw if isinstance(d, dict)] if isinstance(raw, list) else []
    if not entries:
        return None
    rows = tuple((verdict_text(d, "definition"), verdict_text(d, "outcome").replace("_", " "),
                  fmt_num(as_float(d.get("effect")), 3), fmt_p(as_float(d.get("p_value"))),
                  fmt_p(as_float(d.get("p_adjusted")))) for d in entries)
    return LabelledTable("the claim under each trace definition",
                         ("trace definition", "outcome", "effect", "p", "p adj (Holm)"), rows)


def verdict_detail(verdict: Mapping[str, Any], suite: str) -> Group:
    """The whole name on a line of its own (the table may cut it), the verdict, its numbers and
    detail, and its per-definition table where it has one."""
    def num(key: str) -> float | None:
        return as_float(verdict.get(key))

    lines = (
        f"{verdict_text(verdict, 'name')}\n"
        f"{suite}: {verdict_text(verdict, 'kind')}, {verdict_text(verdict, 'test')} on "
        f"{verdict_text(verdict, 'metric')}: {verdict_label(verdict)}\n"
        f"effect {fmt_num(num('effect'), 3)} {fmt_ci(num('ci_low'), num('ci_high'))} · "
        f"p {fmt_p(num('p_value'))} · p adjusted {fmt_p(num('p_adjusted'))}\n"
        f"{verdict_text(verdict, 'detail')}"
    )
    table = definition_table(verdict)
    return Group(Text(lines), *([Text(""), *table_parts(table)] if table else []))


class VerdictsView(Vertical):
    def __init__(self) -> None:
        super().__init__()
        self._verdicts: list[dict[str, Any]] = []
        self._suites: list[str] = []
        self._shown: Any = None

    def compose(self) -> ComposeResult:
        yield Static(id="verdicts-title", classes="view-title", markup=False)
        yield RowTable(id="verdicts-table", cursor_type="row")
        with VerticalScroll(id="verdict-detail-box"):
            yield Static(id="verdict-detail", markup=False)

    def on_mount(self) -> None:
        self.query_one("#verdict-detail-box").can_focus = False

    def on_resize(self, event: Resize) -> None:
        self._fill(event.size.width)

    def show(self, suites: Sequence[SuiteVerdicts]) -> None:
        verdicts = [v for suite in suites for v in suite.verdicts]
        self._suites = [suite.suite for suite in suites for _ in suite.verdicts]
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
        detail: RenderableType = ""
        if 0 <= index < len(self._verdicts):
            detail = verdict_detail(self._verdicts[index], self._suites[index])
        self.query_one("#verdict-detail", Static).update(detail)
