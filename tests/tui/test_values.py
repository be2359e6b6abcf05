"""The TUI's values (tui/values.py): intervals, with Wilson bounds filled in where missing.
"""

from __future__ import annotations

import pytest

from factrecall_bench.tui.values import Interval, wilson_interval


def test_interval_fills_missing_wilson_bounds() -> None:
    interval = Interval.parse({"value": 0.5, "n": 100})
    assert interval is not None
    assert (interval.low, interval.high) == pytest.approx(wilson_interval(50, 100))
    assert interval.low == pytest.approx(0.4038, abs=1e-4)
    assert Interval.parse({}) is None and Interval.parse("x") is None
