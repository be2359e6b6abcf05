"""View 3, results: finished runs' exact match with Wilson intervals, BIO first-token retention,
per-strategy means, and per-attribute scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.containers import ScrollableContainer, Vertical
from textual.widgets import DataTable, Static

from factrecall_bench.metrics import shown_metrics
from factrecall_bench.tui.format import DASH, fmt_interval, fmt_num, metric_label
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.values import Interval
from factrecall_bench.tui.widgets import fill_table, run_label, seed_text, several_suites

FIRST_COLUMNS = ("strategy", "seed")


def result_columns_of_metrics() -> list[str]:
    """The results table's metric columns: the registry's shown metrics (`Metric.shown`)."""
    return [metric.column for metric in shown_metrics()]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def result_rows(runs: Sequence[RunState]) -> list[tuple[str, ...]]:
    """One row per finished run, then a mean row per suite and strategy with two or more seeds;
    each row starts with its suite when the runs are of several suites."""
    finished = [r for r in runs if r.status == "finished" and r.metrics]
    suite_cells = several_suites(finished)
    rows: list[tuple[str, ...]] = []
    for run in finished:
        rows.append((*_suite_cell(run.suite, suite_cells), run.strategy, seed_text(run),
                     *_metric_cells(run)))
    for suite, strategy in sorted({(r.suite, r.strategy) for r in finished}):
        group = [r for r in finished if (r.suite, r.strategy) == (suite, strategy)]
        if len(group) > 1:
            cells = []
            for metric in (shown.name for shown in shown_metrics()):
                values = [r.metrics[metric].value for r in group if metric in r.metrics]
                cells.append(fmt_num(mean(values), 2) if values else DASH)
            rows.append((*_suite_cell(suite, suite_cells), strategy, "mean", *cells))
    return rows


def _metric_cells(run: RunState) -> list[str]:
    """A finished run's shown metrics: with their interval where declared, else the value."""
    cells = []
    for metric in shown_metrics():
        interval = run.metrics.get(metric.name)
        cells.append(fmt_interval(interval) if metric.with_interval
                     else fmt_num(_value(interval), 2))
    return cells


def result_columns(runs: Sequence[RunState]) -> list[str]:
    finished = [r for r in runs if r.status == "finished" and r.metrics]
    return [*_suite_cell("suite", several_suites(finished)), *FIRST_COLUMNS,
            *result_columns_of_metrics()]


def _suite_cell(suite: str, shown: bool) -> tuple[str, ...]:
    return (suite,) if shown else ()


def _value(interval: Interval | None) -> float | None:
    return None if interval is None else interval.value


def attribute_rows(runs: Sequence[RunState]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Columns (one per finished run) and rows (metric x attribute) of per-attribute scores,
    each metric named for what it is (BIO recall is no exact match)."""
    finished = [r for r in runs if r.status == "finished" and r.per_attribute]
    keys: list[tuple[str, str]] = []
    for run in finished:
        for metric, by_attr in run.per_attribute.items():
            keys.extend((metric, a) for a in by_attr if (metric, a) not in keys)
    rows = []
    for metric, attr in keys:
        cells = [fmt_num(_value(r.per_attribute.get(metric, {}).get(attr)), 2) for r in finished]
        rows.append((f"{metric_label(metric)}: {attr}", *cells))
    prefix = several_suites(finished)
    return [f"{r.suite} {run_label(r)}" if prefix else run_label(r) for r in finished], rows


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
            yield Static("per attribute: ID and OOD exact match, BIO first-token recall",
                         classes="view-title")
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
        fill_table(self.query_one("#results-table", DataTable), result_columns(runs), rows)
        fill_table(self.query_one("#attribute-table", DataTable), ["attribute", *columns], attr_rows)
