"""The TUI's file side: which runs a runs folder holds and what is new in their files since the
last poll. Meant to run in a worker thread; it reads through factrecall_bench.runfolder (the owner
of every file name and document) and events (the event log) and never writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from factrecall_bench.events import LogTail
from factrecall_bench.runfolder import (
    RESULT_SCHEMA_VERSION,
    VERDICTS_SCHEMA_VERSION,
    ResultDocument,
    RunFolder,
    SuiteFolder,
    VerdictsDocument,
)
from factrecall_bench.tui.pending import PlannedRun
from factrecall_bench.tui.values import as_int

RUN_MARKERS = (RunFolder.EVENTS, RunFolder.RESULT)  # not config.json alone: model folders have one
SKIP_DIRS = {RunFolder.CHECKPOINTS, ".git", "__pycache__"}
TERMINAL_EVENTS = {"run_end", "run_failed"}


@dataclass(frozen=True)
class SuiteVerdicts:
    """A suite's verdicts.json: each verdict is its entry as written (the TUI decides nothing)."""

    suite: str
    exit_code: int | None
    verdicts: tuple[dict[str, Any], ...]

    @classmethod
    def from_document(cls, document: VerdictsDocument, suite: str) -> SuiteVerdicts:
        raw: Any = document.get("verdicts")
        items = [dict(v) for v in raw if isinstance(v, dict)] if isinstance(raw, list) else []
        return cls(str(document.get("suite") or suite), as_int(document.get("exit_code")),
                   tuple(items))


@dataclass
class RunUpdate:
    """What one poll read for one run."""

    run_dir: Path
    restarted: bool = False
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    result: ResultDocument | None = None
    result_changed: bool = False
    partial_line: bool = False
    lock_free: bool = False


@dataclass
class PollBatch:
    runs: list[RunUpdate] = field(default_factory=list)
    verdicts: dict[Path, SuiteVerdicts | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    planned: list[PlannedRun] | None = None
    """The suite's runs, in the first poll only (None when the reader has no plan)."""


def find_run_dirs(root: Path) -> Iterator[Path]:
    """Folders under root (at any depth) that hold a run's files; checkpoints are not entered."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        if any(name in filenames for name in RUN_MARKERS):
            dirnames[:] = []
            yield Path(dirpath)
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def lock_is_free(path: Path) -> bool:
    """Whether no process holds the lock file at `path` (one that does not exist is free).

    Tries the lock without waiting and lets it go at once: while it holds it, a runner starting
    that very run would see it busy and skip it, so callers probe as rarely as they can.
    """
    if not path.exists():
        return True
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    except OSError:
        return False  # cannot tell (e.g. a read-only folder): do not call a live run dead
    lock.release()
    return True


def parse_event_line(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(event, None) for a valid line, (None, warning) for junk, (None, None) for a blank line."""
    if not text.strip():
        return None, None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None, f"not valid JSON: {text[:60]!r}"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    return event, None


class RunsReader:
    """The file side: which runs exist and what is new in their files since the last poll."""

    def __init__(self, root: Path, suite: str | None = None,
                 plan: Callable[[], list[PlannedRun]] | None = None) -> None:
        self.root = Path(root)
        self.suite = suite
        self.plan = plan
        """Lists the suite's runs (`pending.suite_plan`); called once, by the first poll."""
        self.tails: dict[Path, LogTail] = {}
        self.stats: dict[Path, tuple[int, int] | None] = {}
        self.ended: dict[Path, bool] = {}  # the last event was run_end / run_failed
        self.lock_free: dict[Path, bool] = {}

    def run_dirs(self) -> list[Path]:
        dirs = find_run_dirs(self.root)
        if self.suite is not None:
            wanted = self.suite
            dirs = (d for d in dirs if wanted in (d.parent.name, self.root.name))
        return sorted(dirs)

    def poll(self) -> PollBatch:
        batch = PollBatch()
        if self.plan is not None:
            batch.planned = self._read_plan(batch.warnings)
        run_dirs = self.run_dirs()
        for gone in set(self.tails) - set(run_dirs):
            del self.tails[gone]
            self.ended.pop(gone, None)
            self.lock_free.pop(gone, None)
        for run_dir in run_dirs:
            batch.runs.append(self._poll_run(RunFolder(run_dir)))
        for suite_dir in sorted({d.parent for d in run_dirs} | {self.root}):
            suite = SuiteFolder(suite_dir)
            changed, verdicts, warning = self._poll_document(
                suite.verdicts, suite.read_verdicts, VERDICTS_SCHEMA_VERSION)
            if changed:
                batch.verdicts[suite_dir] = (
                    None if verdicts is None else SuiteVerdicts.from_document(verdicts, suite_dir.name))
            if warning:
                batch.warnings.append(warning)
        return batch

    def _read_plan(self, warnings: list[str]) -> list[PlannedRun]:
        plan, self.plan = self.plan, None
        try:
            return plan() if plan is not None else []
        except Exception as err:  # the runs on disk still show; only the pending ones are missing
            warnings.append(f"cannot list the suite's runs, so none shows as pending: {err}")
            return []

    def _lock_free(self, run: RunFolder) -> bool:
        """Whether nobody holds the run's lock, probed only where it can matter: an unfinished
        run not already found free since its log last grew (a run that comes back to life writes
        run_start, and the lock is probed again after that)."""
        if self.ended.get(run.path) or run.result.exists():
            return False
        if self.lock_free.get(run.path):
            return True
        return lock_is_free(run.lock)

    def _poll_document(self, path: Path, read: Callable[[], Any],
                       schema_version: int | None = None) -> tuple[bool, Any, str | None]:
        """Re-read a document only when its mtime/size changed, through its runfolder reader:
        (changed, document or None, warning)."""
        key = _stat_key(path)
        if path in self.stats and self.stats[path] == key:
            return False, None, None
        self.stats[path] = key
        if key is None:
            return True, None, None
        document = read()
        if document is not None:
            return True, document, None
        version = "" if schema_version is None else f" of schema_version {schema_version}"
        return True, None, f"{path}: cannot read it as a JSON object{version}"

    def _poll_run(self, run: RunFolder) -> RunUpdate:
        update = RunUpdate(run.path)
        first_read = run.path not in self.tails
        # The lock before the log: a run that ends between the two reads shows its last events.
        lock_free = self._lock_free(run)
        tail = self.tails.setdefault(run.path, LogTail(run.events))
        lines, update.restarted = tail.read_lines()
        for line_no, text in lines:
            update.lines.append(text)
            event, warning = parse_event_line(text)
            if event is not None:
                update.events.append(event)
            elif warning:
                update.warnings.append(f"{run.path.name}: {RunFolder.EVENTS} line {line_no}: {warning}")
        update.partial_line = bool(tail.partial.strip())
        if update.events:
            self.ended[run.path] = str(update.events[-1].get("event")) in TERMINAL_EVENTS
        if lines and not first_read:
            lock_free = False  # someone is writing: look at the lock again next poll
        self.lock_free[run.path] = update.lock_free = lock_free
        changed, config, warning = self._poll_document(run.config, run.read_config)
        update.config = config if changed else None
        update.warnings.extend([warning] if warning else [])
        update.result_changed, update.result, warning = self._poll_document(
            run.result, run.read_result, RESULT_SCHEMA_VERSION)
        update.warnings.extend([warning] if warning else [])
        return update
