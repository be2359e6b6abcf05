"""View 6, details: the selected run's folder, state, warnings, config and the tail of its log."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Log, Static

from factrecall_bench.tui.run_state import LOG_TAIL_LINES, RunState
from factrecall_bench.tui.widgets import INTERRUPTED_HINT


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
