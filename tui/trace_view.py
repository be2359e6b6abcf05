"""View 5, trace: the selected run's layer x head maps of shared parameters per k, and its trace's
ablation and summary numbers (result["trace"] and the trace event)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from factrecall_bench.tui.format import head_map_lines
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.widgets import run_label


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
