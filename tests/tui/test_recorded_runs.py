"""The recorded runs folder (tests/tui/recorded.py) is what the code writes: its documents
through runfolder's typed readers, its events of kinds the code emits, and the regeneration script
giving the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from factrecall_bench.events import EVENT_KINDS, check_event, read_events
from factrecall_bench.runfolder import (
    ResultDocument,
    RunFolder,
    VerdictsDocument,
)
from factrecall_bench.tui.run_state import EVENT_HANDLERS
from tests.conftest import ROOT
from tests.tui.recorded import (
    MIXED_0,
    MIXED_1,
    RUNS,
    SUITE_DIR,
    TWO_STAGE_0,
    TWO_STAGE_1,
    recorded_result,
    recorded_verdicts,
)


def recorded_run_dirs() -> list[Path]:
    return sorted(p for p in SUITE_DIR.iterdir() if p.is_dir())


def test_recorded_documents_read_through_their_owners() -> None:
    """Every document through runfolder's typed readers, with exactly the typed keys."""
    assert set(recorded_verdicts()) == set(VerdictsDocument.__annotations__)
    assert [p.name for p in recorded_run_dirs()] == sorted([MIXED_0, MIXED_1, TWO_STAGE_0,
                                                            TWO_STAGE_1])
    for run_dir in recorded_run_dirs():
        folder = RunFolder(run_dir)
        config = folder.read_config()
        assert config is not None and config["run_id"] == run_dir.name
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(
            [RunFolder.CONFIG, RunFolder.EVENTS]
            + ([] if run_dir.name == TWO_STAGE_1 else [RunFolder.RESULT]))
        if run_dir.name != TWO_STAGE_1:
            result = recorded_result(run_dir.name)
            # reused_from: only in a run reused from another folder (integration/test_run_store.py)
            assert set(result) == set(ResultDocument.__annotations__) - {"reused_from"}
            assert (result["run_id"], result["config"]) == (run_dir.name, config)


def test_recorded_traces_have_the_shape_the_trace_writes() -> None:
    from factrecall_bench.trace.summary import flat_summary

    for run_id in (MIXED_0, MIXED_1, TWO_STAGE_0):
        trace = recorded_result(run_id)["trace"]
        assert trace is not None and trace["summary"] == flat_summary(trace)
        for entry in trace["per_k"].values():
            heads = entry["location"]["heads"]
            assert len(heads) == 2 and all(len(row) == 4 for row in heads)  # 2 layers, 4 heads


def test_recorded_events_are_kinds_the_code_emits() -> None:
    for run_dir in recorded_run_dirs():
        read = read_events(run_dir / RunFolder.EVENTS)
        damaged = run_dir.name == MIXED_1
        lines = (run_dir / RunFolder.EVENTS).read_text("utf-8").splitlines()
        assert read.bad_lines == ([len(lines)] if damaged else [])
        for event in read.events:
            extra = {k: v for k, v in event.items() if k not in ("t", "event", "run_id")}
            check_event(event["event"], extra)
            assert event["run_id"] == run_dir.name
    assert set(EVENT_HANDLERS) <= set(EVENT_KINDS)  # the TUI folds no kind nobody writes


def test_recorded_runs_are_normalized() -> None:
    """No absolute path, no machine in them (see scripts/regenerate_tui_fixtures.py)."""
    for path in RUNS.rglob("*.json*"):
        assert '"/' not in path.read_text("utf-8"), path
    environment = recorded_result(MIXED_0)["environment"]
    assert environment["git_revision"] == "normalized"
    assert set(environment["versions"].values()) == {"normalized"}


def json_shape(value: Any) -> Any:
    """A document's keys and value types, without the values."""
    if isinstance(value, dict):
        return {key: json_shape(item) for key, item in value.items()}
    return [json_shape(item) for item in value] if isinstance(value, list) else type(value).__name__


def recorded_files(root: Path) -> dict[str, Path]:
    """The files of a runs folder by their path, each run's folder named without its config hash."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = list(path.relative_to(root).parts)
        if len(parts) == 3:  # <suite>/<run_id>/<file>
            parts[1] = parts[1].rsplit("-", 1)[0]
        files["/".join(parts)] = path
    return files


@pytest.mark.slow
def test_the_script_writes_the_recorded_runs(tmp_path: Path) -> None:
    """Regenerating gives the same files, documents with the same keys and types, the same events
    (values may move with the code: a failure here means `python scripts/regenerate_tui_fixtures.py`
    and `pytest tests/integration/test_tui_snapshots.py --snapshot-update`)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "regenerate_tui_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True, timeout=600)
    written, recorded = recorded_files(tmp_path), recorded_files(RUNS)
    assert list(written) == list(recorded)
    for name, path in written.items():
        if path.suffix == ".json":
            new, old = (json.loads(p.read_text("utf-8")) for p in (path, recorded[name]))
            assert json_shape(new) == json_shape(old), name
        else:
            kinds = [[(e["event"], sorted(e)) for e in read_events(p).events]
                     for p in (path, recorded[name])]
            assert kinds[0] == kinds[1], name
