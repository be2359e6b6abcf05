"""Snapshots of stable TUI screens: the recorded runs folder, a frozen clock, no polling timer.

The recorded runs folder is written by scripts/regenerate_tui_fixtures.py (a real run of
tests/data/suites/tui.toml). Regenerate the snapshots after an intended change, or after
regenerating the runs, with `pytest tests/integration/test_tui_snapshots.py --snapshot-update`, and look at
the SVGs under tests/integration/__snapshots__/ before committing them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from textual.pilot import Pilot

from factrecall_bench.events import read_events
from factrecall_bench.runfolder import RunFolder
from factrecall_bench.tui.app import FactRecallApp
from tests.conftest import TESTS

RUNS = TESTS / "data" / "tui_runs"
SUITE = "tui"
SIZE = (80, 24)
(RUNNING,) = [p.name for p in (RUNS / SUITE).iterdir()
              if p.is_dir() and not (p / RunFolder.RESULT).exists()]
"""The recording's unfinished run (two-stage, seed 1)."""
FROZEN = read_events(RUNS / SUITE / RUNNING / RunFolder.EVENTS).events[-1]["t"] + 5
"""5 s after the running run's last event: "5s ago", and its ETA 5 s short of the steps left."""


@pytest.fixture
def live_runs(tmp_path: Path) -> Iterator[Path]:
    """The recorded runs (same folder name, shown in the header) with the unfinished run's lock
    held, as its runner holds it while it trains."""
    runs = Path(shutil.copytree(RUNS, tmp_path / RUNS.name))
    with FileLock(str(runs / SUITE / RUNNING / RunFolder.LOCK)):
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
