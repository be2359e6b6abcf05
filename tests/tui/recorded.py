"""The recorded runs folder the TUI's tests read: tests/data/tui_runs, a real run of
tests/data/suites/tui.toml written by scripts/regenerate_tui_fixtures.py (see its docstring for
what it normalizes and shapes). The tests read the expected numbers from its documents;
tests/tui/test_recorded_runs.py checks that they are still what the code writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from factrecall_bench.events import read_events
from factrecall_bench.runfolder import (
    ResultDocument,
    RunFolder,
    SuiteFolder,
    VerdictsDocument,
)
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.state import RunsState, load_runs
from tests.conftest import TESTS

RUNS = TESTS / "data" / "tui_runs"
SUITE = "tui"
SUITE_DIR = RUNS / SUITE
LOCK_FILE = RunFolder.LOCK


def recorded_run_id(strategy: str, seed: int) -> str:
    """Run ids carry the config hash, so the tests find the recorded runs by strategy and seed."""
    (run_id,) = [p.name for p in SUITE_DIR.iterdir()
                 if p.is_dir() and p.name.startswith(f"{strategy}-tiny-llama-s{seed}-")]
    return run_id


MIXED_0 = recorded_run_id("mixed", 0)
MIXED_1 = recorded_run_id("mixed", 1)  # finished; its last line (run_end) cut short
TWO_STAGE_0 = recorded_run_id("two-stage", 0)
TWO_STAGE_1 = recorded_run_id("two-stage", 1)  # unfinished: events up to a step of its QA phase


def recorded_events(run_id: str) -> list[dict[str, Any]]:
    return read_events(SUITE_DIR / run_id / RunFolder.EVENTS).events


def recorded_result(run_id: str) -> ResultDocument:
    result = RunFolder(SUITE_DIR / run_id).read_result()
    assert result is not None
    return result


def recorded_verdicts() -> VerdictsDocument:
    verdicts = SuiteFolder(SUITE_DIR).read_verdicts()
    assert verdicts is not None
    return verdicts


UNFINISHED_STEPS = [e for e in recorded_events(TWO_STAGE_1) if e["event"] == "step"]
UNFINISHED_EVAL = [e for e in recorded_events(TWO_STAGE_1) if e["event"] == "eval"][-1]
TOTAL_STEPS = recorded_events(TWO_STAGE_1)[0]["total_steps"]
STOP_STEP = UNFINISHED_STEPS[-1]["step"]
FROZEN = recorded_events(TWO_STAGE_1)[-1]["t"] + 5  # 5 s after the unfinished run's last event


def frozen() -> float:
    return FROZEN


def step_line(run_id: str, step: int, t: float, loss: float = 1.0) -> str:
    event = {
        "t": t,
        "event": "step",
        "run_id": run_id,
        "phase": "qa",
        "step": step,
        "loss": loss,
        "lr": 0.001,
        "tokens_per_s": 9000.0,
    }
    return json.dumps(event) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def runs_copy(tmp_path: Path) -> Iterator[Path]:
    """The recorded runs, with TWO_STAGE_1's lock held as its runner holds it while it trains (in
    the recording itself nobody holds it: there TWO_STAGE_1 is an interrupted run)."""
    runs = Path(shutil.copytree(RUNS, tmp_path / "tui_runs"))
    with FileLock(str(runs / SUITE / TWO_STAGE_1 / LOCK_FILE)):
        yield runs


@pytest.fixture
def state(runs_copy: Path) -> RunsState:
    return load_runs(runs_copy)


def by_id(state: RunsState, run_id: str) -> RunState:
    run = state.run(run_id)
    assert run is not None
    return run
