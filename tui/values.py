"""Values read from the runs' files, trusted no further than their types: finite numbers, the
metric intervals of result.json, the trace's layer x head grids (pure Python, no Textual)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def as_float(value: Any) -> float | None:
    """A finite float, or None for anything else (readers must not trust the log's types)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else int(number)


def float_dict(raw: dict[str, Any]) -> dict[str, float]:
    """The entries of `raw` that are finite numbers, as floats."""
    numbers = {str(k): as_float(v) for k, v in raw.items()}
    return {k: v for k, v in numbers.items() if v is not None}


def grid(rows: Any) -> list[list[float]] | None:
    """A non-empty list of lists of numbers as floats (anything else in a cell is 0), else None."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        return None
    return [[as_float(v) or 0.0 for v in row] for row in rows]


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
