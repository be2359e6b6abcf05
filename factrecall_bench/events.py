"""The event log: the one contract between a run and whoever watches it (CLI, TUI, reports).

Append-only JSON lines, one flushed write per event (see docs/formats.md). Readers skip lines
they cannot parse and report them, so a truncated last line never breaks anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EventSink = Callable[[dict[str, Any]], None]

EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "run_start": ("suite", "variant", "strategy", "model", "seed", "config_hash", "phases",
                  "total_steps", "resumed_from_step"),
    "resume": ("step", "path"),
    "phase_start": ("phase", "phase_index", "steps"),
    "step": ("phase", "step", "loss", "lr", "tokens_per_s"),
    "checkpoint": ("step", "path"),
    "phase_end": ("phase", "step"),
    "eval": ("phase", "step", "metrics"),
    "trace": ("summary",),
    "run_end": ("step", "wall_s", "metrics"),
    "run_failed": ("reason",),
    "warning": ("message",),
}
"""Every kind of event a run writes and the keys each always has (besides `t`, `event` and
`run_id`); docs/formats.md lists the same, and a test checks that the two agree. Readers ignore
kinds and keys they do not know."""


def check_event(event: str, fields: dict[str, Any]) -> None:
    """A writer's bug, caught where it is made: an unknown kind, or a kind without its keys."""
    if event not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {event!r} (known: {', '.join(EVENT_KINDS)})")
    missing = [key for key in EVENT_KINDS[event] if key not in fields]
    if missing:
        raise ValueError(f"event {event!r} is missing {', '.join(missing)}")


@dataclass
class EventLog:
    """Writes events of one run to its `events.jsonl` and forwards them to listeners."""

    path: Path
    run_id: str
    listeners: list[EventSink] = field(default_factory=list)
    writes: bool = True
    """False in the non-main processes of a multi-process run: only the main one writes."""

    def emit(self, event: str, **fields: Any) -> None:
        check_event(event, fields)
        if not self.writes:
            return
        record = {"t": round(time.time(), 3), "event": event, "run_id": self.run_id, **fields}
        line = json.dumps(record, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab", buffering=0) as handle:
            size_before = handle.tell()
            try:
                handle.write(line.encode("utf-8"))
                os.fsync(handle.fileno())
            except OSError:
                # A full disk may have taken half the line: cut it off, so the next event (e.g.
                # run_failed, once space is back) starts on a line of its own.
                with contextlib.suppress(OSError):
                    os.ftruncate(handle.fileno(), size_before)
                raise
        for listener in self.listeners:
            listener(record)


@dataclass(frozen=True)
class ReadEvents:
    events: list[dict[str, Any]]
    bad_lines: list[int]
    """1-based numbers of lines that were not valid JSON objects."""


def read_events(path: Path) -> ReadEvents:
    events: list[dict[str, Any]] = []
    bad: list[int] = []
    if not path.exists():
        return ReadEvents(events, bad)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            record = parse_event(raw)
            if record is None:
                bad.append(number)
            else:
                events.append(record)
    return ReadEvents(events, bad)


class LogTail:
    """Incremental reader of an append-only JSONL file.

    Remembers its byte offset; keeps a partial last line (no trailing newline) for the next read,
    since the writer may be halfway through it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.line_no = 0

    def read_lines(self) -> tuple[list[tuple[int, str]], bool]:
        """New complete lines as (line number, text), and whether the file was rewritten."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return [], False
        restarted = size < self.offset
        if restarted:
            self.offset, self.partial, self.line_no = 0, b"", 0
        if size == self.offset:
            return [], restarted
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        lines = []
        for raw in complete:
            self.line_no += 1
            lines.append((self.line_no, raw.decode("utf-8", errors="replace").rstrip("\r")))
        return lines, restarted


def parse_event(raw: bytes | str) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("event"), str) else None


def iter_kind(events: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (event for event in events if event["event"] == kind)


def loss_curve(events: list[dict[str, Any]]) -> list[list[float]]:
    """(step, loss) pairs; for a resumed run the latest attempt's value of a step wins."""
    by_step = {event["step"]: event["loss"] for event in iter_kind(events, "step")
               if isinstance(event.get("step"), int) and isinstance(event.get("loss"), float | int)}
    return [[step, by_step[step]] for step in sorted(by_step)]


def phase_evals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(event.get("phase"), event.get("step")): event for event in iter_kind(events, "eval")}
    return [{"phase": e.get("phase"), "step": e.get("step"), "metrics": e.get("metrics", {})}
            for e in sorted(by_key.values(), key=lambda e: e.get("step") or 0)]
