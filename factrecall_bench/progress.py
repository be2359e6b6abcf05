"""Progress on stderr, fed by the runs' event logs (the same files the TUI reads): bars on a
terminal; without one (nohup, CI logs, a pipe) plain lines, each run's at most every
`PLAIN_INTERVAL_S` seconds, and at once when a run starts, ends or fails."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from factrecall_bench.events import LogTail, parse_event


def note(text: str) -> None:
    """A progress note for the user (stderr: stdout holds results and verdicts)."""
    print(text, file=sys.stderr, flush=True)


def listed_run_ids(run_ids: list[str], at_most: int = 5) -> str:
    more = len(run_ids) - at_most
    return ", ".join(run_ids[:at_most]) + (f" and {more} more" if more > 0 else "")


@dataclass
class RunProgress:
    """Steps done, total steps and a status line of one run, folded from its events."""

    done: int = 0
    total: int = 0
    status: str = "waiting"

    def apply(self, event: dict) -> None:
        kind = event["event"]
        if kind == "run_start":
            self.total, self.status = int(event.get("total_steps") or 0), "training"
        elif kind == "step":
            self.done = int(event.get("step") or 0)
            self.status = f"{event.get('phase')} loss {event.get('loss'):.3f}"
        elif kind == "run_end":
            self.done, self.status = self.total, "done"
        elif kind == "run_failed":
            self.status = f"failed: {event.get('reason')}"


PLAIN_INTERVAL_S = 30.0


class PlainLines:
    """Progress as plain lines for logs: a run's line when its state changes, at most every
    `interval` seconds while it trains, and at once when it starts, finishes or fails."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S):
        self.interval = interval
        self._last: dict[str, tuple[float, str]] = {}

    def show(self, run_id: str, run: RunProgress) -> None:
        line = f"{run_id}: {run.done}/{run.total or '?'} steps, {run.status}"
        when, shown = self._last.get(run_id, (float("-inf"), ""))
        if run.status == "waiting" or line == shown:
            return
        milestone = run.status in ("training", "done") or run.status.startswith("failed")
        now = time.monotonic()
        if milestone or now - when >= self.interval:
            print(line, file=sys.stderr, flush=True)
            self._last[run_id] = (now, line)


class EventProgress:
    """A background thread that polls event logs and draws one bar per run (plain lines when
    stderr is not a terminal)."""

    def __init__(self, event_files: dict[str, Path], enabled: bool = True, interval: float = 0.5,
                 plain: bool | None = None):
        self.event_files = event_files
        self.enabled = enabled
        self.interval = interval
        self._stop = threading.Event()
        console = Console(stderr=True)
        self._plain = PlainLines() if (not console.is_terminal if plain is None else plain) else None
        self._progress = Progress(TextColumn("{task.description:40.40s}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                  TimeElapsedColumn(), console=console,
                                  disable=not enabled or self._plain is not None)
        self._tasks = {run_id: self._progress.add_task(run_id, total=None, status="waiting")
                       for run_id in event_files}
        self._tails = {run_id: LogTail(path) for run_id, path in event_files.items()}
        self._runs = {run_id: RunProgress() for run_id in event_files}
        for run_id in event_files:
            self._fold_earlier_attempts(run_id)
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

    def _fold_earlier_attempts(self, run_id: str) -> None:
        """What the run's log held before this command: a run this command resumes shows the
        steps it had, but not the failure that ended its last attempt ("interrupted ... rerun to
        resume" is what this command is doing); it waits until its worker starts it again."""
        self._fold(run_id, self._tails[run_id].read_lines()[0])
        run = self._runs[run_id]
        if run.status.startswith("failed"):
            run.status = "waiting"

    def _fold(self, run_id: str, lines: list[tuple[int, str]]) -> None:
        run = self._runs[run_id]
        for _, line in lines:
            event = parse_event(line)
            if event is not None:
                run.apply(event)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def run(self, run_id: str) -> RunProgress:
        return self._runs[run_id]

    def refresh(self) -> None:
        """Reads only what each log gained since the last refresh (cheap for long runs)."""
        for run_id, tail in self._tails.items():
            lines, restarted = tail.read_lines()
            if restarted:
                self._runs[run_id] = RunProgress()
            self._fold(run_id, lines)
            run = self._runs[run_id]
            self._progress.update(self._tasks[run_id], completed=run.done, total=run.total or None,
                                  status=run.status)
            if self._plain is not None and self.enabled:
                self._plain.show(run_id, run)
