"""Read a runs folder into per-run state for the TUI: find runs, tail event logs, load results.

Pure Python on purpose (no Textual). `RunsReader` does the file I/O and is meant to run in a worker
thread; `RunsState.apply` folds what it read into plain objects on the UI thread.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from factrecall_bench.events import LogTail
from factrecall_bench.runfolder import RunFolder, SuiteFolder

# The run folder's layout has one owner (factrecall_bench.runfolder); the TUI only reads it.
EVENTS_FILE = RunFolder.EVENTS
CONFIG_FILE = RunFolder.CONFIG
RESULT_FILE = RunFolder.RESULT
VERDICTS_FILE = SuiteFolder.VERDICTS
LOCK_FILE = RunFolder.LOCK  # held by the runner while it trains the run
RUN_MARKERS = (EVENTS_FILE, RESULT_FILE)  # not config.json alone: model folders have one too
SKIP_DIRS = {"checkpoints", ".git", "__pycache__"}

LOG_TAIL_LINES = 200
RATE_WINDOW = 20  # step events used for the step rate behind the ETA
STATUSES = ("pending", "running", "interrupted", "finished", "failed", "skipped")
TERMINAL_EVENTS = {"run_end", "run_failed"}


def as_float(value: Any) -> float | None:
    """A finite float, or None for anything else (readers must not trust the log's types)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else int(number)


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (`successes` may come as value * n)."""
    from factrecall_bench.verdicts import stats  # scipy: loaded only when a result lacks its interval

    return stats.wilson_interval(round(successes), max(n, 0))


@dataclass(frozen=True)
class Interval:
    """A proportion with its 95% Wilson bounds, as result.json stores each metric."""

    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None

    @classmethod
    def parse(cls, raw: Any) -> Interval | None:
        """From `{"value", "low", "high", "n"}` (or a bare float); None when there is no value."""
        if not isinstance(raw, dict):
            value = as_float(raw)
            return None if value is None else cls(value)
        value = as_float(raw.get("value"))
        if value is None:
            return None
        low, high, n = as_float(raw.get("low")), as_float(raw.get("high")), as_int(raw.get("n"))
        if (low is None or high is None) and n:
            low, high = wilson_interval(value * n, n)
        return cls(value, low, high, n)


@dataclass(frozen=True)
class SuiteVerdicts:
    """A suite's verdicts.json: each verdict is its entry as written (the TUI decides nothing)."""

    suite: str
    exit_code: int | None
    verdicts: tuple[dict[str, Any], ...]


@dataclass
class RunState:
    """Everything the TUI shows about one run, folded from its events, config and result."""

    run_id: str
    suite: str
    path: Path
    strategy: str = "?"
    variant: str = "base"
    """The suite variant (e.g. a stage-2 learning rate); `base` when the suite has none."""
    model: str = "?"
    seed: int | None = None
    event_status: str = "pending"
    phase: str = ""
    phases: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    last_event_t: float | None = None
    last_checkpoint: int | None = None
    lock_free: bool = False
    """Whether no process held the run's lock at the last poll (see `RunsReader`)."""
    failure_reason: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    trace_summary: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    lines_read: int = 0
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the run's own "warning" events
    truncated_warned: bool = False
    rate_window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    # -- derived values -------------------------------------------------------------------
    @property
    def status(self) -> str:
        """As the files say; "running" with nobody holding the lock is "interrupted"."""
        if self.result is not None:
            return "finished"
        if self.event_status == "running" and self.lock_free:
            return "interrupted"
        return self.event_status

    @property
    def steps_per_s(self) -> float | None:
        if len(self.rate_window) < 2:
            return None
        (t0, s0), (t1, s1) = self.rate_window[0], self.rate_window[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the recent step rate, minus the time since the last step event."""
        rate = self.steps_per_s
        if self.status != "running" or rate is None or not self.total_steps:
            return None
        remaining = max(0, self.total_steps - self.step) / rate
        since_last = now - self.rate_window[-1][0]
        return max(0.0, remaining - max(0.0, since_last))

    @property
    def metrics(self) -> dict[str, Interval]:
        """result.json metrics, else run_end's flat metrics, else the latest eval."""
        raw = (self.result or {}).get("metrics")
        if isinstance(raw, dict):
            parsed = {k: Interval.parse(v) for k, v in raw.items()}
            return {k: v for k, v in parsed.items() if v is not None}
        flat = self.final_metrics or (self.evals[-1][1] if self.evals else {})
        return {k: Interval(v) for k, v in flat.items()}

    @property
    def per_attribute(self) -> dict[str, dict[str, Interval]]:
        raw = (self.result or {}).get("per_attribute")
        table: dict[str, dict[str, Interval]] = {}
        for metric, by_attr in raw.items() if isinstance(raw, dict) else ():
            if isinstance(by_attr, dict):
                parsed = {a: Interval.parse(v) for a, v in by_attr.items()}
                table[str(metric)] = {a: v for a, v in parsed.items() if v is not None}
        return table

    @property
    def loss_values(self) -> list[float]:
        if self.loss_history:
            return [loss for _, loss in self.loss_history]
        curve = (self.result or {}).get("loss_curve")
        points = curve if isinstance(curve, list) else []
        values = [as_float(p[1]) for p in points if isinstance(p, list) and len(p) == 2]
        return [v for v in values if v is not None]

    @property
    def eval_history(self) -> list[tuple[int, dict[str, float]]]:
        if self.evals:
            return self.evals
        raw = (self.result or {}).get("phase_evals")
        history = []
        for item in raw if isinstance(raw, list) else []:
            if isinstance(item, dict) and isinstance(item.get("metrics"), dict):
                history.append((as_int(item.get("step")) or 0, _float_dict(item["metrics"])))
        return history

    def metric_history(self, name: str) -> list[float]:
        return [m[name] for _, m in self.eval_history if name in m]

    @property
    def trace(self) -> dict[str, Any] | None:
        trace = (self.result or {}).get("trace")
        return trace if isinstance(trace, dict) else None

    @property
    def head_maps(self) -> dict[str, list[list[float]] | None]:
        """Per k, the layer x head grid of shared parameters, or None.

        Read from result["trace"]["per_k"][k]["heads"], or from ["location"]["heads"] under it
        (where factrecall_bench.trace puts it).
        """
        per_k = (self.trace or {}).get("per_k")
        maps: dict[str, list[list[float]] | None] = {}
        for k, entry in per_k.items() if isinstance(per_k, dict) else ():
            entry = entry if isinstance(entry, dict) else {}
            location = entry.get("location")
            heads = entry.get("heads")
            if heads is None and isinstance(location, dict):
                heads = location.get("heads")
            maps[str(k)] = _grid(heads)
        return maps

    @property
    def trace_numbers(self) -> dict[str, float]:
        """The trace event's summary plus every scalar in result["trace"] (per k as name@k)."""
        numbers = dict(self.trace_summary)
        trace = self.trace or {}
        numbers.update(_float_dict(trace))
        summary = trace.get("summary")
        numbers.update(_float_dict(summary) if isinstance(summary, dict) else {})
        per_k = trace.get("per_k")
        for k, entry in per_k.items() if isinstance(per_k, dict) else ():
            if isinstance(entry, dict):
                numbers.update({f"{name}@{k}": v for name, v in _float_dict(entry).items()})
        return numbers

    @property
    def label(self) -> str:
        """Strategy, prefixed by the variant where the suite has variants."""
        return self.strategy if self.variant == "base" else f"{self.variant}/{self.strategy}"

    @property
    def shown_config(self) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        config = (self.result or {}).get("config")
        if isinstance(config, dict):
            return config
        return {"strategy": self.strategy, "model": self.model, "seed": self.seed}

    def matches(self, text: str) -> bool:
        """The run-matrix filter: a case-insensitive substring of strategy, model, status, suite."""
        needle = text.strip().lower()
        haystack = (self.strategy, self.model, self.status, self.suite, self.variant)
        return not needle or any(needle in part.lower() for part in haystack)

    # -- folding events ---------------------------------------------------------------------
    def apply_event(self, event: dict[str, Any]) -> None:
        t = as_float(event.get("t"))
        if t is not None:
            self.last_event_t = t if self.last_event_t is None else max(self.last_event_t, t)
        handler = _EVENT_HANDLERS.get(str(event.get("event")))
        if handler is not None:
            handler(self, event, t)

    def _on_run_start(self, event: dict[str, Any], t: float | None) -> None:
        self.suite = str(event.get("suite") or self.suite)
        self.strategy = str(event.get("strategy") or self.strategy)
        self.variant = str(event.get("variant") or self.variant)
        self.model = str(event.get("model") or self.model)
        self.seed = as_int(event.get("seed"))
        self.total_steps = as_int(event.get("total_steps"))
        phases = event.get("phases")
        self.phases = [p for p in phases if isinstance(p, dict)] if isinstance(phases, list) else []
        self.step = as_int(event.get("resumed_from_step")) or 0
        self.event_status = "running"
        self.failure_reason = None
        self.rate_window.clear()  # a resumed run's rate starts afresh

    def _on_phase_start(self, event: dict[str, Any], t: float | None) -> None:
        self.phase = str(event.get("phase") or "")

    def _on_step(self, event: dict[str, Any], t: float | None) -> None:
        step, loss = as_int(event.get("step")), as_float(event.get("loss"))
        self.phase = str(event.get("phase") or self.phase)
        self.tokens_per_s = as_float(event.get("tokens_per_s"))
        if step is not None:
            self.step = step
            if t is not None:
                self.rate_window.append((t, step))
        if loss is not None:
            self.loss = loss
            self.loss_history.append((self.step, loss))

    def _on_eval(self, event: dict[str, Any], t: float | None) -> None:
        metrics = event.get("metrics")
        if isinstance(metrics, dict):
            self.evals.append((as_int(event.get("step")) or self.step, _float_dict(metrics)))

    def _on_resume(self, event: dict[str, Any], t: float | None) -> None:
        self.step = as_int(event.get("step")) or self.step
        self.rate_window.clear()

    def _on_warning(self, event: dict[str, Any], t: float | None) -> None:
        self.notes.append(str(event.get("message") or ""))

    def _on_checkpoint(self, event: dict[str, Any], t: float | None) -> None:
        self.last_checkpoint = as_int(event.get("step"))

    def _on_trace(self, event: dict[str, Any], t: float | None) -> None:
        summary = event.get("summary")
        if isinstance(summary, dict):
            self.trace_summary.update(_float_dict(summary))

    def _on_run_end(self, event: dict[str, Any], t: float | None) -> None:
        self.event_status = "finished"
        self.step = as_int(event.get("step")) or self.step
        metrics = event.get("metrics")
        self.final_metrics = _float_dict(metrics) if isinstance(metrics, dict) else {}

    def _on_run_failed(self, event: dict[str, Any], t: float | None) -> None:
        self.event_status = "failed"
        self.failure_reason = str(event.get("reason") or "")


_EVENT_HANDLERS: dict[str, Callable[[RunState, dict[str, Any], float | None], None]] = {
    "run_start": RunState._on_run_start,
    "phase_start": RunState._on_phase_start,
    "step": RunState._on_step,
    "eval": RunState._on_eval,
    "checkpoint": RunState._on_checkpoint,
    "resume": RunState._on_resume,
    "warning": RunState._on_warning,
    "trace": RunState._on_trace,
    "run_end": RunState._on_run_end,
    "run_failed": RunState._on_run_failed,
}


def _float_dict(raw: dict[str, Any]) -> dict[str, float]:
    numbers = {str(k): as_float(v) for k, v in raw.items()}
    return {k: v for k, v in numbers.items() if v is not None}


def _grid(heads: Any) -> list[list[float]] | None:
    if not isinstance(heads, list) or not heads or not all(isinstance(r, list) for r in heads):
        return None
    return [[as_float(v) or 0.0 for v in row] for row in heads]


# -- reading files (the I/O half, safe to run in a worker thread) ------------------------------
@dataclass
class RunUpdate:
    """What one poll read for one run."""

    run_dir: Path
    restarted: bool = False
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    result_changed: bool = False
    partial_line: bool = False
    lock_free: bool = False


@dataclass
class PollBatch:
    runs: list[RunUpdate] = field(default_factory=list)
    verdicts: dict[Path, SuiteVerdicts | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(document, None) or (None, one-line warning)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path}: cannot read ({type(err).__name__}: {err})"


class RunsReader:
    """The file side: which runs exist and what is new in their files since the last poll."""

    def __init__(self, root: Path, suite: str | None = None) -> None:
        self.root = Path(root)
        self.suite = suite
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
        run_dirs = self.run_dirs()
        for gone in set(self.tails) - set(run_dirs):
            del self.tails[gone]
            self.ended.pop(gone, None)
            self.lock_free.pop(gone, None)
        for run_dir in run_dirs:
            batch.runs.append(self._poll_run(run_dir))
        for suite_dir in sorted({d.parent for d in run_dirs} | {self.root}):
            changed, verdicts, warning = self._poll_json(suite_dir / VERDICTS_FILE)
            if changed:
                batch.verdicts[suite_dir] = _parse_verdicts(verdicts, suite_dir.name)
            if warning:
                batch.warnings.append(warning)
        return batch

    def _lock_free(self, run_dir: Path) -> bool:
        """Whether nobody holds the run's lock, probed only where it can matter: an unfinished
        run not already found free since its log last grew (a run that comes back to life writes
        run_start, and the lock is probed again after that)."""
        if self.ended.get(run_dir) or (run_dir / RESULT_FILE).exists():
            return False
        if self.lock_free.get(run_dir):
            return True
        return lock_is_free(run_dir / LOCK_FILE)

    def _poll_json(self, path: Path) -> tuple[bool, Any, str | None]:
        """Re-read a JSON file only when its mtime/size changed: (changed, document, warning)."""
        key = _stat_key(path)
        if path in self.stats and self.stats[path] == key:
            return False, None, None
        self.stats[path] = key
        if key is None:
            return True, None, None
        document, warning = _read_json(path)
        if warning is None and not isinstance(document, dict):
            document, warning = None, f"{path}: not a JSON object"
        return True, document, warning

    def _poll_run(self, run_dir: Path) -> RunUpdate:
        update = RunUpdate(run_dir)
        first_read = run_dir not in self.tails
        # The lock before the log: a run that ends between the two reads shows its last events.
        lock_free = self._lock_free(run_dir)
        tail = self.tails.setdefault(run_dir, LogTail(run_dir / EVENTS_FILE))
        lines, update.restarted = tail.read_lines()
        for line_no, text in lines:
            update.lines.append(text)
            event, warning = parse_event_line(text)
            if event is not None:
                update.events.append(event)
            elif warning:
                update.warnings.append(f"{run_dir.name}: events.jsonl line {line_no}: {warning}")
        update.partial_line = bool(tail.partial.strip())
        if update.events:
            self.ended[run_dir] = str(update.events[-1].get("event")) in TERMINAL_EVENTS
        if lines and not first_read:
            lock_free = False  # someone is writing: look at the lock again next poll
        self.lock_free[run_dir] = update.lock_free = lock_free
        changed, config, warning = self._poll_json(run_dir / CONFIG_FILE)
        update.config = config if changed else None
        update.warnings.extend([warning] if warning else [])
        update.result_changed, update.result, warning = self._poll_json(run_dir / RESULT_FILE)
        update.warnings.extend([warning] if warning else [])
        return update


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


def _parse_verdicts(document: Any, suite: str) -> SuiteVerdicts | None:
    if not isinstance(document, dict):
        return None
    raw = document.get("verdicts")
    items = [dict(v) for v in raw if isinstance(v, dict)] if isinstance(raw, list) else []
    return SuiteVerdicts(str(document.get("suite") or suite), as_int(document.get("exit_code")), tuple(items))


# -- the folded state (UI thread) -----------------------------------------------------------------
class RunsState:
    """All runs and verdicts, updated from `PollBatch`es; `version` grows on every change."""

    def __init__(self) -> None:
        self.runs: dict[Path, RunState] = {}
        self.verdicts: dict[Path, SuiteVerdicts] = {}
        self.warnings: list[str] = []
        self.version = 0

    def apply(self, batch: PollBatch) -> list[str]:
        """Fold a poll in; returns the warnings it raised (also kept in `self.warnings`)."""
        new_warnings = list(batch.warnings)
        seen = {update.run_dir for update in batch.runs}
        changed = any(path not in seen for path in self.runs)
        self.runs = {path: run for path, run in self.runs.items() if path in seen}
        for update in batch.runs:
            changed |= self._apply_run(update, new_warnings)
        for suite_dir, verdicts in batch.verdicts.items():
            changed = True
            if verdicts is None:
                self.verdicts.pop(suite_dir, None)
            else:
                self.verdicts[suite_dir] = verdicts
        self.warnings.extend(new_warnings)
        if changed or new_warnings:
            self.version += 1
        return new_warnings

    def _apply_run(self, update: RunUpdate, new_warnings: list[str]) -> bool:
        old = self.runs.get(update.run_dir)
        run = old if old is not None and not update.restarted else self._new_run(update, old)
        for event in update.events:
            run.apply_event(event)
        run.lines_read += len(update.lines)
        run.log_tail.extend(update.lines)
        if update.config is not None:
            run.config = update.config
        changed = run.lock_free != update.lock_free
        run.lock_free = update.lock_free
        if update.result_changed:
            run.result = update.result
            _fill_from_result(run)
        warnings = list(update.warnings)
        writer_gone = run.status in ("finished", "failed")
        if update.partial_line and writer_gone and not run.truncated_warned:
            run.truncated_warned = True  # the writer is gone, so the partial line stays partial
            warnings.append(f"{run.run_id}: events.jsonl ends in a truncated line")
        run.warnings.extend(warnings)
        new_warnings.extend(warnings)
        fresh = old is not run
        changed |= bool(update.lines or update.config or update.result_changed or warnings)
        return fresh or changed

    def _new_run(self, update: RunUpdate, old: RunState | None) -> RunState:
        run = RunState(update.run_dir.name, update.run_dir.parent.name, update.run_dir)
        if old is not None:  # a rewritten log: start over, keep what the other files said
            run.config, run.result = old.config, old.result
        self.runs[update.run_dir] = run
        return run

    # -- views over the state -------------------------------------------------------------------
    def sorted_runs(self, text: str = "") -> list[RunState]:
        runs = [r for r in self.runs.values() if r.matches(text)]
        return sorted(runs, key=lambda r: (r.suite, r.variant, r.strategy, r.seed or 0, r.model,
                                           r.run_id))

    def run(self, run_id: str | None) -> RunState | None:
        return next((r for r in self.runs.values() if r.run_id == run_id), None)

    def all_verdicts(self) -> list[SuiteVerdicts]:
        return [self.verdicts[k] for k in sorted(self.verdicts)]

    def status_counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for run in self.runs.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        return {k: v for k, v in counts.items() if v}

    def last_event_t(self) -> float | None:
        times = [r.last_event_t for r in self.runs.values() if r.last_event_t is not None]
        return max(times) if times else None


def _fill_from_result(run: RunState) -> None:
    """A run known only from result.json still gets its identity."""
    result = run.result or {}
    for attr in ("strategy", "model", "suite"):
        value = result.get(attr)
        if isinstance(value, str) and getattr(run, attr) in ("?", ""):
            setattr(run, attr, value)
    if run.seed is None:
        run.seed = as_int(result.get("seed"))
    if isinstance(result.get("variant"), str) and run.variant == "base":
        run.variant = result["variant"]


def load_runs(root: Path, suite: str | None = None) -> RunsState:
    """Read a runs folder once (for scripts and tests)."""
    state = RunsState()
    state.apply(RunsReader(root, suite).poll())
    return state


def strategies_of(runs: Iterable[RunState]) -> list[str]:
    return sorted({r.strategy for r in runs})
