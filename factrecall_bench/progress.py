"""Progress bars on stderr, fed by the runs' event logs (the same files the TUI reads)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from factrecall_bench.events import read_events


def run_progress(events: list[dict]) -> tuple[int, int, str]:
    """(steps done, total steps, status text) of one run from its events."""
    done, total, status = 0, 0, "waiting"
    for event in events:
        kind = event["event"]
        if kind == "run_start":
            total, status = int(event.get("total_steps") or 0), "training"
        elif kind == "step":
            done, status = int(event.get("step") or 0), f"{event.get('phase')} loss {event.get('loss'):.3f}"
        elif kind == "run_end":
            done, status = total, "done"
        elif kind == "run_failed":
            status = f"failed: {event.get('reason')}"
    return done, total, status


class EventProgress:
    """A background thread that polls event logs and draws one bar per run."""

    def __init__(self, event_files: dict[str, Path], enabled: bool = True, interval: float = 0.5):
        self.event_files = event_files
        self.enabled = enabled
        self.interval = interval
        self._stop = threading.Event()
        self._progress = Progress(TextColumn("{task.description:40.40s}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                  TimeElapsedColumn(), console=Console(stderr=True),
                                  disable=not enabled)
        self._tasks = {run_id: self._progress.add_task(run_id, total=None, status="waiting")
                       for run_id in event_files}
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> EventProgress:
        if self.enabled:
            self._progress.start()
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)
            self.refresh()
            self._progress.stop()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self) -> None:
        for run_id, path in self.event_files.items():
            done, total, status = run_progress(read_events(path).events)
            self._progress.update(self._tasks[run_id], completed=done, total=total or None,
                                  status=status)
