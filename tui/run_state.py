"""One run as the TUI knows it: its events folded in order, its config and result.json beside them,
and what the views derive from them (status, ETA, metrics, curves, trace). Pure Python, no I/O."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factrecall_bench.runfolder import ResultDocument
from factrecall_bench.tui.values import Interval, as_float, as_int, float_dict

LOG_TAIL_LINES = 200
RATE_WINDOW = 20  # step events used for the step rate behind the ETA


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
    result: ResultDocument | None = None
    lines_read: int = 0
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the run's own "warning" events
    truncated_warned: bool = False
    rate_window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    # -- derived values -------------------------------------------------------------------
    def written(self, key: str) -> object:
        """A field of result.json as written, None without one (callers check its type)."""
        result: Mapping[str, object] = self.result or {}
        return result.get(key)

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
        raw = self.written("metrics")
        if isinstance(raw, dict):
            parsed = {k: Interval.parse(v) for k, v in raw.items()}
            return {k: v for k, v in parsed.items() if v is not None}
        flat = self.final_metrics or (self.evals[-1][1] if self.evals else {})
        return {k: Interval(v) for k, v in flat.items()}

    @property
    def per_attribute(self) -> dict[str, dict[str, Interval]]:
        raw = self.written("per_attribute")
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
        curve = self.written("loss_curve")
        points = curve if isinstance(curve, list) else []
        values = [as_float(p[1]) for p in points if isinstance(p, list) and len(p) == 2]
        return [v for v in values if v is not None]

    @property
    def eval_history(self) -> list[tuple[int, dict[str, float]]]:
        if self.evals:
            return self.evals
        raw = self.written("phase_evals")
        history = []
        for item in raw if isinstance(raw, list) else []:
            if isinstance(item, dict) and isinstance(item.get("metrics"), dict):
                history.append((as_int(item.get("step")) or 0, float_dict(item["metrics"])))
        return history

    def metric_history(self, name: str) -> list[float]:
        return [m[name] for _, m in self.eval_history if name in m]

    @property
    def trace(self) -> dict[str, Any] | None:
        trace = self.written("trace")
        return trace if isinstance(trace, dict) else None

    @property
    def analyses(self) -> dict[str, Any] | None:
        """The mechanism analyses run at the end of training (result.json `analyses`), or None."""
        analyses = self.written("analyses")
        return analyses if isinstance(analyses, dict) else None

    @property
    def label(self) -> str:
        """Strategy, prefixed by the variant where the suite has variants."""
        return self.strategy if self.variant == "base" else f"{self.variant}/{self.strategy}"

    @property
    def shown_config(self) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        config = self.written("config")
        if isinstance(config, dict):
            return config
        return {"strategy": self.strategy, "model": self.model, "seed": self.seed}

    def matches(self, text: str) -> bool:
        """The run-matrix filter: a case-insensitive substring of strategy, model, status, suite."""
        needle = text.strip().lower()
        haystack = (self.strategy, self.model, self.status, self.suite, self.variant)
        return not needle or any(needle in part.lower() for part in haystack)

    def fill_from_result(self) -> None:
        """A run known only from result.json still gets its identity."""
        result: dict[str, Any] = dict(self.result or {})
        for attr in ("strategy", "model", "suite"):
            value = result.get(attr)
            if isinstance(value, str) and getattr(self, attr) in ("?", ""):
                setattr(self, attr, value)
        if self.seed is None:
            self.seed = as_int(result.get("seed"))
        if isinstance(result.get("variant"), str) and self.variant == "base":
            self.variant = result["variant"]

    # -- folding events ---------------------------------------------------------------------
    def apply_event(self, event: dict[str, Any]) -> None:
        t = as_float(event.get("t"))
        if t is not None:
            self.last_event_t = t if self.last_event_t is None else max(self.last_event_t, t)
        handler = EVENT_HANDLERS.get(str(event.get("event")))
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
            self.evals.append((as_int(event.get("step")) or self.step, float_dict(metrics)))

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
            self.trace_summary.update(float_dict(summary))

    def _on_run_end(self, event: dict[str, Any], t: float | None) -> None:
        self.event_status = "finished"
        self.step = as_int(event.get("step")) or self.step
        metrics = event.get("metrics")
        self.final_metrics = float_dict(metrics) if isinstance(metrics, dict) else {}

    def _on_run_failed(self, event: dict[str, Any], t: float | None) -> None:
        self.event_status = "failed"
        self.failure_reason = str(event.get("reason") or "")


EVENT_HANDLERS: dict[str, Callable[[RunState, dict[str, Any], float | None], None]] = {
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
"""The kinds the TUI folds (a subset of events.EVENT_KINDS: a test checks it); others are skipped."""
