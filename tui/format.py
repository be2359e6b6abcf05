"""Plain-text formatting of run state for the TUI's cells and panels (pure, no Textual)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from factrecall_bench import metrics as metrics_registry
from factrecall_bench import verdicts as verdicts_module
from factrecall_bench.tui.values import Interval

DASH = "–"
BARS = "▁▂▃▄▅▆▇█"
VERDICT_ORDER = ("pass", "reported", "xfail", "xpass", "no_baseline", "fail", "inconclusive")
METRIC_LABELS = metrics_registry.METRIC_LABELS
"""How tables name a recall metric (`metrics.Metric.label`, read live): BIO recall is the first
token of a biography's attribute value, never an exact match."""


def fmt_num(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def fmt_count(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.0e}" if value < 0.001 else f"{value:.3f}"


def fmt_duration(seconds: float | None) -> str:
    """Compact: 45s, 2m24s, 1h05m."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def fmt_ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{fmt_duration(max(0.0, seconds))} ago"


def fmt_rate(per_s: float | None) -> str:
    if per_s is None:
        return DASH
    return f"{per_s / 1000:.1f}k" if per_s >= 1000 else f"{per_s:.0f}"


def fmt_interval(interval: Interval | None, digits: int = 2) -> str:
    """0.72 [0.63,0.79]; the bounds are dropped when unknown."""
    if interval is None:
        return DASH
    value = f"{interval.value:.{digits}f}"
    if interval.low is None or interval.high is None:
        return value
    return f"{value} [{interval.low:.{digits}f},{interval.high:.{digits}f}]"


def fmt_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return DASH
    return f"[{low:+.2f},{high:+.2f}]"


def fmt_steps(step: int, total: int | None) -> str:
    return f"{step}/{total}" if total else str(step)


def spark_text(values: Sequence[float], width: int, low: float, high: float) -> str:
    """A one-line curve `width` cells wide on the fixed scale low..high (not the data's own
    range, so one point or a flat line sits where its value is): each cell shows the mean of its
    share of the points; a value at `low` or below is the lowest bar, at `high` or above the top."""
    if not values or width <= 0:
        return ""
    span = high - low
    cells = []
    for column in range(width):
        start = column * len(values) // width
        end = max(start + 1, (column + 1) * len(values) // width)
        share = values[start:end]
        ratio = (sum(share) / len(share) - low) / span if span > 0 else 0.0
        cells.append(BARS[round(min(1.0, max(0.0, ratio)) * (len(BARS) - 1))])
    return "".join(cells)


def loss_scale(losses: Sequence[float]) -> tuple[float, float]:
    """Zero to the highest loss; a single loss (nothing to compare it with) sits at mid height."""
    if not losses:
        return 0.0, 1.0
    top = max(losses)
    return 0.0, (2 * top if len(losses) == 1 else top)


def verdict_text(verdict: Mapping[str, Any], key: str) -> str:
    value = verdict.get(key)
    return "" if value is None else str(value)


def _own_status_label(verdict: Mapping[str, Any]) -> str:
    """The status as written; a report-only claim's with its outcome (never re-decided here)."""
    status, outcome = verdict_text(verdict, "status") or "?", verdict_text(verdict, "outcome")
    if status != "reported" or not outcome:
        return status
    return f"{status} ({outcome.replace('_', ' ')})"


def verdict_label(verdict: Mapping[str, Any]) -> str:
    """The label verdicts.json wrote; for a file without one, factrecall_bench.verdicts.
    status_label when the library has it, else the status (with a report-only claim's outcome)."""
    written = verdict.get("label")
    if isinstance(written, str) and written:
        return written
    label: Callable[[Mapping[str, Any]], str] = getattr(
        verdicts_module, "status_label", _own_status_label
    )
    return str(label(verdict))


def status_counts_text(verdicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """"2 pass", "1 reported", ... in VERDICT_ORDER, then any other status; each counted apart."""
    counts: dict[str, int] = {}
    for verdict in verdicts:
        status = verdict_text(verdict, "status") or "?"
        counts[status] = counts.get(status, 0) + 1
    order = [s for s in VERDICT_ORDER if s in counts] + sorted(set(counts) - set(VERDICT_ORDER))
    return [f"{counts[status]} {status.replace('_', ' ')}" for status in order]
