"""Labelled tables: a title, column labels and rows of text (pure), and how a view draws them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class LabelledTable:
    """What a view shows as one table; `note` is a line under it (what to read it with)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def rich_table(table: LabelledTable) -> Table:
    """The first column left-aligned (labels), the others right-aligned (numbers)."""
    drawn = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for index, label in enumerate(table.columns):
        drawn.add_column(label, justify="left" if index == 0 else "right")
    for row in table.rows:
        drawn.add_row(*row)
    return drawn


def table_parts(table: LabelledTable) -> list[RenderableType]:
    """Its title and note as lines of their own, so they wrap at the view's width, not the
    table's."""
    parts: list[RenderableType] = [Text(table.title, style="bold"), rich_table(table)]
    return parts + ([Text(table.note, style="dim")] if table.note else [])


def tables_group(heading: str, tables: Sequence[LabelledTable]) -> Group:
    """A heading line, then the tables, a blank line before each."""
    parts: list[RenderableType] = [Text(heading)] if heading else []
    for table in tables:
        parts += [Text(""), *table_parts(table)]
    return Group(*parts)
