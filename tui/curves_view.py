"""View 2, curves: loss, ID and OOD exact match of every run as one-line curves, side by side."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.events import Resize
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Static

from factrecall_bench.metrics import plotted_metrics
from factrecall_bench.tui.format import DASH, fmt_num, loss_scale, spark_text
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.widgets import run_label


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


def curve_rows() -> tuple[tuple[str, str], ...]:
    """(key, label) of a panel's rows: the loss, then the registry's plotted metrics."""
    return (("loss", "loss"), *((metric.name, metric.curve) for metric in plotted_metrics()))


class CurvePanel(Vertical):
    """The loss and the plotted metrics (ID and OOD exact match) of one run as one-line curves
    with their latest values."""

    def __init__(self, run: RunState, selected: bool) -> None:
        super().__init__(classes="curve-panel")
        self.rows = curve_rows()
        self.run_id = run.run_id
        self.title = Label("", classes="curve-title", markup=False)
        self.sparks = {key: Curve(None if key == "loss" else (0.0, 1.0)) for key, _ in self.rows}
        self.values = {key: Label("", classes="curve-value", markup=False) for key, _ in self.rows}
        self._initial = (run, selected)

    def compose(self) -> ComposeResult:
        yield self.title
        for key, label in self.rows:
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
        for key, _ in self.rows[1:]:
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
