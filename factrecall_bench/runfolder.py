"""The runs folder: where every file of a run and of a suite lives, and the one owner of each
document in it: file names, the result and config codecs, "finished with this config?", the
failure log. Writers and readers (runner, trace, report, judge, TUI, export, baselines) go
through here; docs/formats.md describes the same contract and tests/integration/test_formats.py checks they
agree; tests/test_architecture.py checks no other module spells one of these file names.

    RUNS_DIR/<suite>/             SuiteFolder: verdicts.json, report.md, *.png, tui-launch.log
    RUNS_DIR/<suite>/<run_id>/    RunFolder: config.json, events.jsonl, result.json, trace.json,
                                  analyses.json, samples.jsonl, samples-summary.json,
                                  checkpoints/step-<N>/ (CHECKPOINT_FILES), .lock
    RUNS_DIR/data/                the cached datasets (biosdata-<data digest>)

Every JSON document carries `schema_version`; a reader refuses (returns None for) any other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from factrecall_bench.config import (
    DataSpec,
    EvalSpec,
    ModelSpec,
    Phase,
    RunConfig,
    RunIdentity,
    TrainSpec,
    config_hash,
    from_dict,
    to_dict,
)
from factrecall_bench.errors import UserError
from factrecall_bench.events import EventLog
from factrecall_bench.identity import reuse_identity
from factrecall_bench.io import write_bytes_atomic, write_json_atomic, write_text_atomic

RESULT_SCHEMA_VERSION = 1
VERDICTS_SCHEMA_VERSION = 1
ANALYSES_SCHEMA_VERSION = 1
SAMPLES_SUMMARY_SCHEMA_VERSION = 1
WRONG_KINDS = ("wrong_attribute", "p_train_value", "p_test_value", "other")
"""samples-summary.json's kinds of wrong answer, checked in this order: a value of another
attribute of the same person; another person's value of the asked attribute, a P_train person's
(whose QA was trained) before a P_test person's; anything else."""
DATA_FOLDER = "data"

# A checkpoint's folder (checkpoints/step-<N>/, written and verified by checkpoints.py).
CHECKPOINT_MODEL = "model.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"
CHECKPOINT_SCHEDULER = "scheduler.pt"
CHECKPOINT_RECORDER = "trace-recorder.safetensors"
"""The training-mode trace's summed scores (only when the trace records during training)."""
CHECKPOINT_META = "meta.json"
"""The step and the sha256 of every other file of the checkpoint (written last)."""
CHECKPOINT_FILES = (CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER, CHECKPOINT_SCHEDULER)
"""The files every checkpoint holds besides its meta.json."""

RunConfigDocument = dict[str, Any]
"""config.json, and result.json's `config`: a RunConfig's fields with its run_id and config_hash
(written by `run_config_dict`, read back by `run_config_from_dict`)."""


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
    config: RunConfigDocument
    metrics: dict[str, Interval]
    per_attribute: dict[str, dict[str, Interval]]
    per_question: dict[str, dict[str, list[Any]]]
    phase_evals: list[dict[str, Any]]
    loss_curve: list[list[float]]
    trace: dict[str, Any] | None
    analyses: dict[str, Any] | None
    """The mechanism analyses run at the end of training ([trace.analyses]), or None."""
    total_steps: int
    timings: dict[str, float]
    throughput: dict[str, float]
    environment: dict[str, Any]
    reused_from: NotRequired[str]
    """Only in a run reused from another suite's or variation's run that trained the same thing
    (same `identity.reuse_identity`): that run's folder, relative to the runs folder
    (`cpu/mixed-tiny-llama-s0-167710a5`), which holds the checkpoints."""


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
    analyses: list[dict[str, Any]]
    """Per group and analysis summary key: mean, sd and n over seeds (analyses.summary)."""
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
    SAMPLES = "samples.jsonl"
    SAMPLES_SUMMARY = "samples-summary.json"
    CHECKPOINTS = "checkpoints"
    LOCK = ".lock"

    @classmethod
    def of(cls, runs_root: Path, config: RunConfig) -> RunFolder:
        """The folder of a run of a suite: RUNS_DIR/<suite>/<run_id>."""
        return cls(Path(runs_root) / config.suite / config.run_id)

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
    def samples(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def samples_summary(self) -> Path:
        return self.path / self.SAMPLES_SUMMARY

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    def read_result(self) -> ResultDocument | None:
        return _read_json(self.result, RESULT_SCHEMA_VERSION)

    def read_samples_summary(self) -> dict[str, Any] | None:
        """samples-summary.json (`--log-samples`), or None."""
        return _read_json(self.samples_summary, SAMPLES_SUMMARY_SCHEMA_VERSION)

    def trained_checkpoints(self) -> Path:
        """Where the run's trained weights lie: its own checkpoints, or, for a run reused from
        another folder (`reused_from`), that run's."""
        result = self.read_result()
        source = result.get("reused_from") if result is not None else None
        if source and not self.checkpoints.exists():
            return self.path.parent.parent / source / self.CHECKPOINTS
        return self.checkpoints

    def write_result(self, result: ResultDocument) -> None:
        write_json_atomic(self.result, result)

    def finished_result(self, config: RunConfig) -> ResultDocument | None:
        """The run's result if it finished with this config (same config hash), else None: the
        one test of "is this run done?" (reuse, submission, check, dry run)."""
        result = self.read_result()
        return result if result is not None and result.get("config_hash") == config_hash(
            config) else None

    def read_config(self) -> dict[str, Any] | None:
        try:
            config = json.loads(self.config.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config, config)

    def read_run_config(self) -> RunConfig:
        """The run's config.json as a RunConfig (OSError or ValueError if unreadable, UserError if
        incomplete)."""
        return run_config_from_dict(json.loads(self.config.read_text("utf-8")))

    def write_run_config(self, config: RunConfig) -> RunConfigDocument:
        document = run_config_dict(config)
        write_json_atomic(self.config, document)
        return document

    def event_log(self, run_id: str, writes: bool = True) -> EventLog:
        return EventLog(self.events, run_id, writes=writes)

    def record_failure(self, run_id: str, reason: str, detail: str | None = None) -> None:
        """A `run_failed` event, if it can be written at all (not on a full disk or a read-only
        folder: the reason still reaches the suite's summary)."""
        extra = {"traceback": detail} if detail else {}
        try:
            self.event_log(run_id).emit("run_failed", reason=reason, **extra)
        except OSError:
            pass

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


def run_dir(runs_root: Path, config: RunConfig) -> Path:
    """The path of a run's folder (RunFolder.of(...).path)."""
    return RunFolder.of(runs_root, config).path


def is_finished(config: RunConfig, runs_root: Path) -> bool:
    """Whether the run finished with this config (`run` skips it, `--executor` submits it not)."""
    return RunFolder.of(runs_root, config).finished_result(config) is not None


def finished_results(configs: Sequence[RunConfig], runs_root: Path) -> list[ResultDocument]:
    """The results of the runs that finished with these configs, in the configs' order."""
    return [result for config in configs
            if (result := RunFolder.of(runs_root, config).finished_result(config)) is not None]


def event_paths(configs: Sequence[RunConfig], runs_root: Path) -> dict[str, Path]:
    """Each run's events.jsonl, by run id."""
    return {config.run_id: RunFolder.of(runs_root, config).events for config in configs}


# --- reuse: a finished run stands for any run that trains the same thing ----------------------

REUSED_FILES = (RunFolder.TRACE, RunFolder.ANALYSES, RunFolder.SAMPLES, RunFolder.SAMPLES_SUMMARY)
"""What a reused run's folder gets besides its own config.json and result.json (not the
checkpoints, which stay with the run that trained them; nor the events, which name that run)."""


def reusable_source(runs_root: Path, config: RunConfig) -> RunFolder | None:
    """A run elsewhere in the runs folder (any suite or variation) that finished training exactly
    what `config` trains (same `reuse_identity`) and trained it itself, or None."""
    wanted = reuse_identity(config)
    own = RunFolder.of(runs_root, config).path
    for config_file in sorted(Path(runs_root).glob(f"*/*/{RunFolder.CONFIG}")):
        folder = RunFolder(config_file.parent)
        candidate = _readable_run_config(folder)
        if folder.path == own or candidate is None or reuse_identity(candidate) != wanted:
            continue
        result = folder.finished_result(candidate)
        if result is not None and "reused_from" not in result:
            return folder
    return None


def _readable_run_config(folder: RunFolder) -> RunConfig | None:
    try:
        return folder.read_run_config()
    except (OSError, ValueError, UserError):
        return None


def reuse_finished_run(runs_root: Path, config: RunConfig) -> ResultDocument | None:
    """The result of `config`'s run made from a finished run of the same training elsewhere in
    the runs folder (its files copied, its config and names this run's, `reused_from` naming
    it), or None when there is none. Nothing is trained; the source is only read."""
    source = reusable_source(runs_root, config)
    return None if source is None else reuse_from(source, runs_root, config)


def reuse_from(source: RunFolder, runs_root: Path, config: RunConfig) -> ResultDocument | None:
    """`reuse_finished_run` from a source found already (`reusable_source`)."""
    result = source.read_result()
    if result is None:  # removed between the look and now
        return None
    run = RunFolder.of(runs_root, config)
    for name in REUSED_FILES:
        if (source.path / name).is_file():
            write_bytes_atomic(run.path / name, (source.path / name).read_bytes())
    run.write_run_config(config)
    reused: ResultDocument = {
        **result, "run_id": config.run_id, "suite": config.suite, "variant": config.variant,
        "strategy": config.strategy, "config_hash": config_hash(config),
        "config": run_config_dict(config),
        "reused_from": source.path.relative_to(Path(runs_root)).as_posix()}
    run.write_result(reused)
    return reused


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    """`finished`, `skipped` (already finished), `failed` or `busy` (another process runs it)."""
    result: ResultDocument | None
    """The result document (None for a failed or busy run, and in non-main processes)."""
    reason: str = ""


def reused_outcome(run_id: str, result: ResultDocument | None, source: str) -> RunOutcome:
    """The outcome of a run made from the finished run `source` ("suite/run-id"): skipped, as
    nothing trained (`result` is None in non-main processes)."""
    return RunOutcome(run_id, "skipped", result, f"reused: trained as {source}")


def run_row(run_id: str, status: str, reason: str = "") -> dict[str, Any]:
    """A run's row in verdicts.json from its outcome: a run finished earlier (`skipped`) is
    `finished` and reused."""
    reused = status == "skipped"
    return {"run_id": run_id, "status": "finished" if reused else status, "reused": reused,
            "reason": reason}


# --- config.json: a RunConfig's document -----------------------------------------------------


def run_config_dict(config: RunConfig) -> RunConfigDocument:
    return {**to_dict(config), "run_id": config.run_id, "config_hash": config_hash(config)}


def run_config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from a run folder's config.json (or result.json's `config`)."""
    try:
        phases = tuple(Phase(**phase) for phase in values["phases"])
        return RunConfig(
            suite=values["suite"], variant=values["variant"], strategy=values["strategy"],
            seed=int(values["seed"]), data=from_dict(DataSpec, values["data"], "config.data"),
            model=from_dict(ModelSpec, values["model"], "config.model"),
            train=from_dict(TrainSpec, values["train"], "config.train"),
            eval=from_dict(EvalSpec, values["eval"], "config.eval"), phases=phases,
            trace=dict(values.get("trace") or {}),
            identity=from_dict(RunIdentity, values.get("identity") or {}, "config.identity"))
    except (KeyError, TypeError) as error:
        raise UserError(f"config.json is incomplete or malformed: {error}") from error
