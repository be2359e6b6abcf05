"""Snapshots of stable TUI screens: the recorded runs folder, a frozen clock, no polling timer.

Regenerate after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from tui.app import FactRecallApp

RUNS = Path(__file__).parent / "data" / "tui_runs"
FROZEN = 1767226716.52  # 5 s after the running run's last event: ETA 2m24s, "5s ago"
SIZE = (80, 24)


def recorded_app() -> FactRecallApp:
    app = FactRecallApp(RUNS, clock=lambda: FROZEN, poll_interval=None)
    app.animation_level = "none"
    return app


async def settle(pilot: Pilot) -> None:
    """Wait for the one poll, then drop the malformed line's toast (it would time out later)."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.pause()


def test_run_matrix(snap_compare) -> None:
    assert snap_compare(recorded_app(), terminal_size=SIZE, run_before=settle)


def test_results_view(snap_compare) -> None:
    assert snap_compare(recorded_app(), press=["3"], terminal_size=SIZE, run_before=settle)


def test_verdicts_view(snap_compare) -> None:
    assert snap_compare(recorded_app(), press=["4"], terminal_size=SIZE, run_before=settle)


def test_trace_view(snap_compare) -> None:
    assert snap_compare(recorded_app(), press=["5"], terminal_size=SIZE, run_before=settle)
