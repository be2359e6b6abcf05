"""The TUI's text helpers (tui/format.py): verdict labels and counts, sparklines, durations.
"""

from __future__ import annotations

from factrecall_bench.tui.format import (
    fmt_duration,
    loss_scale,
    spark_text,
    status_counts_text,
    verdict_label,
)


def test_verdict_labels_and_counts_come_from_the_file() -> None:
    reported = {"status": "reported", "outcome": "does_not_hold", "expect": "report",
                "effect": -0.105}
    assert verdict_label(reported).startswith("reported (does not hold")
    # a status is shown as written, never re-decided from the outcome or expectation
    assert verdict_label({"status": "pass", "outcome": "does_not_hold", "expect": "holds"}) == "pass"
    verdicts = [{"status": "pass"}] * 10 + [reported, {"status": "fail"}]
    assert status_counts_text(verdicts) == ["10 pass", "1 reported", "1 fail"]


def test_curves_have_a_fixed_scale() -> None:
    assert spark_text([0.0], 6, 0.0, 1.0) == "▁" * 6  # one 0.00 eval: a floor, not a full bar
    assert spark_text([0.0, 0.0, 0.0], 3, 0.0, 1.0) == "▁▁▁"
    assert spark_text([0.0, 0.5, 1.0], 3, 0.0, 1.0) == "▁▅█"
    assert spark_text([0.2, 0.2, 1.0, 1.0], 2, 0.0, 1.0) == "▂█"  # each cell the mean of its share
    assert spark_text([], 5, 0.0, 1.0) == ""
    assert loss_scale([3.0]) == (0.0, 6.0)  # a single loss sits at mid height
    assert spark_text([3.0], 4, *loss_scale([3.0])) == "▅▅▅▅"
    assert spark_text([0.0], 4, *loss_scale([0.0])) == "▁▁▁▁"
    assert spark_text([6.0, 3.0], 2, *loss_scale([6.0, 3.0])) == "█▅"


def test_formatting_helpers() -> None:
    assert [fmt_duration(s) for s in (None, 5, 144.06, 3900)] == ["–", "5s", "2m24s", "1h05m"]
