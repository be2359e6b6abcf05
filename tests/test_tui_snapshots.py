"""Snapshots of stable TUI screens: the recorded runs folder, a frozen clock, no polling timer.

Regenerate after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from textual.pilot import Pilot

from factrecall_bench.tui.app import FactRecallApp
from factrecall_bench.tui.state import LOCK_FILE

RUNS = Path(__file__).parent / "data" / "tui_runs"
FROZEN = 1767226716.52  # 5 s after the running run's last event: ETA 2m24s, "5s ago"
SIZE = (80, 24)
RUNNING = "mixed-tiny-llama-s1-9e03b5d8"


@pytest.fixture
def live_runs(tmp_path: Path) -> Iterator[Path]:
    """The recorded runs (same folder name, shown in the header) with the unfinished run's lock
    held, as its runner holds it while it trains."""
    runs = Path(shutil.copytree(RUNS, tmp_path / RUNS.name))
    with FileLock(str(runs / "cpu" / RUNNING / LOCK_FILE)):
        yield runs


def recorded_app(runs: Path) -> FactRecallApp:
    app = FactRecallApp(runs, clock=lambda: FROZEN, poll_interval=None)
    app.animation_level = "none"
    return app


async def settle(pilot: Pilot) -> None:
    """Wait for the one poll, then drop the malformed line's toast (it would time out later)."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    pilot.app.clear_notifications()
    await pilot.pause()


def test_run_matrix(snap_compare, live_runs: Path) -> None:
    assert snap_compare(recorded_app(live_runs), terminal_size=SIZE, run_before=settle)


def test_results_view(snap_compare, live_runs: Path) -> None:
    assert snap_compare(recorded_app(live_runs), press=["3"], terminal_size=SIZE, run_before=settle)


def test_verdicts_view(snap_compare, live_runs: Path) -> None:
    assert snap_compare(recorded_app(live_runs), press=["4"], terminal_size=SIZE, run_before=settle)


def test_trace_view(snap_compare, live_runs: Path) -> None:
    assert snap_compare(recorded_app(live_runs), press=["5"], terminal_size=SIZE, run_before=settle)
