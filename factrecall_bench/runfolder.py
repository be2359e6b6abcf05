"""The runs folder: where every file of a run and of a suite lives, and the one owner of each
document in it. Writers and readers (runner, report, judge, TUI, export, baselines) go through
here; docs/formats.md describes the same contract and tests/test_formats.py checks they agree.

    RUNS_DIR/<suite>/             SuiteFolder: verdicts.json, report.md, *.png, tui-launch.log
    RUNS_DIR/<suite>/<run_id>/    RunFolder: config.json, events.jsonl, result.json, trace.json,
                                  analyses.json, checkpoints/step-<N>/, .lock
    RUNS_DIR/data/                the cached datasets (biosdata-<data digest>)

Every JSON document carries `schema_version`; a reader refuses (returns None for) any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from factrecall_bench.io import write_json_atomic, write_text_atomic

RESULT_SCHEMA_VERSION = 1
VERDICTS_SCHEMA_VERSION = 1
ANALYSES_SCHEMA_VERSION = 1
DATA_FOLDER = "data"


class Interval(TypedDict):
    """A proportion with its 95% Wilson interval."""

    value: float
    low: float
    high: float
    n: int


class ResultDocument(TypedDict):
    """result.json: everything one finished run measured (written last, atomically)."""

    schema_version: int
    run_id: str
    suite: str
    variant: str
    strategy: str
    model: str
    seed: int
    config_hash: str
    config: dict[str, Any]
    metrics: dict[str, Interval]
    per_attribute: dict[str, dict[str, Interval]]
    per_question: dict[str, dict[str, list[Any]]]
    phase_evals: list[dict[str, Any]]
    loss_curve: list[list[float]]
    trace: dict[str, Any] | None
    total_steps: int
    timings: dict[str, float]
    throughput: dict[str, float]
    environment: dict[str, Any]


class RunRow(TypedDict):
    """A run's line in verdicts.json."""

    run_id: str
    status: str
    """finished, failed, busy, or (under `check`) missing."""
    reused: bool
    """Finished before this command (nothing was trained for it)."""
    reason: str


class VerdictsDocument(TypedDict):
    """verdicts.json: a suite's verdicts, summary and runs (written by `run` and `check`)."""

    schema_version: int
    suite: str
    exit_code: int
    verdicts: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    runs: list[RunRow]
    trace: list[dict[str, Any]]
    written: dict[str, str]


def _read_json(path: Path, schema_version: int) -> Any | None:
    """A document of this schema version, or None (missing, unreadable, another version)."""
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(document, dict) and document.get("schema_version") == schema_version
    return document if ok else None


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the files in it."""

    path: Path
    CONFIG = "config.json"
    EVENTS = "events.jsonl"
    RESULT = "result.json"
    TRACE = "trace.json"
    ANALYSES = "analyses.json"
    CHECKPOINTS = "checkpoints"
    LOCK = ".lock"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def events(self) -> Path:
        return self.path / self.EVENTS

    @property
    def result(self) -> Path:
        return self.path / self.RESULT

    @property
    def trace(self) -> Path:
        return self.path / self.TRACE

    @property
    def analyses(self) -> Path:
        return self.path / self.ANALYSES

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    def read_result(self) -> ResultDocument | None:
        return _read_json(self.result, RESULT_SCHEMA_VERSION)

    def write_result(self, result: ResultDocument) -> None:
        write_json_atomic(self.result, result)

    def read_config(self) -> dict[str, Any] | None:
        try:
            config = json.loads(self.config.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config, config)

    def write_trace(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.trace, summary)

    def read_analyses(self) -> dict[str, Any] | None:
        """analyses.json (`factrecall-bench analyze`), or None."""
        return _read_json(self.analyses, ANALYSES_SCHEMA_VERSION)

    def write_analyses(self, document: dict[str, Any]) -> None:
        write_json_atomic(self.analyses, document)


@dataclass(frozen=True)
class SuiteFolder:
    """A suite's folder: its runs' folders and the suite-level documents."""

    path: Path
    VERDICTS = "verdicts.json"
    REPORT = "report.md"
    LAUNCH_LOG = "tui-launch.log"

    @property
    def verdicts(self) -> Path:
        return self.path / self.VERDICTS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def launch_log(self) -> Path:
        return self.path / self.LAUNCH_LOG

    def run(self, run_id: str) -> RunFolder:
        return RunFolder(self.path / run_id)

    def read_verdicts(self) -> VerdictsDocument | None:
        return _read_json(self.verdicts, VERDICTS_SCHEMA_VERSION)

    def write_verdicts(self, document: VerdictsDocument) -> None:
        write_json_atomic(self.verdicts, document)

    def write_report(self, markdown: str) -> None:
        write_text_atomic(self.report, markdown)


def suite_folder(runs_root: Path, suite: str) -> SuiteFolder:
    return SuiteFolder(Path(runs_root) / suite)


def run_folder(runs_root: Path, suite: str, run_id: str) -> RunFolder:
    return suite_folder(runs_root, suite).run(run_id)
