"""A run is the unit of failure: a fault inside one run fails that run alone, with a one-line
reason; the other runs finish, the suite exits 4, and a rerun resumes the failed run to the
numbers of an undisturbed one.

In-process faults are injected by monkeypatching a run of `--jobs 1` (the same runner code a
worker runs); the worker faults (SIGKILL, a model that will not load) use the real CLI with two
runs side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors
import torch
from typer.testing import CliRunner

from factrecall_bench import checkpoints, exit_codes, runfolder, runner
from factrecall_bench.cli import app
from factrecall_bench.events import read_events
from tests.conftest import MICRO_SUITE, run_cli, wait_for_step

pytestmark = pytest.mark.slow

DISK_FULL = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
             '"No space left on device" })')  # what safetensors raised on a full disk


def pair_suite(folder: Path, models: str = '["tiny-llama"]') -> Path:
    """The micro suite with two strategies side by side; its two-stage run is the micro run."""
    text = MICRO_SUITE.read_text().replace(
        'strategies = ["two-stage"]', 'strategies = ["two-stage", "mixed"]\njobs = 2')
    path = folder / "pair.toml"
    path.write_text(text.replace('models = ["tiny-llama"]', f"models = {models}"))
    return path


def comparable(result: dict) -> dict:
    return {"metrics": result["metrics"], "per_question": result["per_question"],
            "loss_curve": result["loss_curve"], "phase_evals": result["phase_evals"]}


def run_in_process(suite: Path, runs: Path) -> tuple[int, dict]:
    """The suite through the CLI in this process, one run after another: (exit code, document)."""
    invoked = CliRunner().invoke(app, ["run", "--suite", str(suite), "--runs-dir", str(runs),
                                       "--jobs", "1", "--no-check", "--json"])
    return invoked.exit_code, json.loads(invoked.stdout)["suites"][0]


def rows_by_strategy(document: dict) -> dict[str, dict]:
    return {row["run_id"].split("-tiny")[0]: row for row in document["runs"]}


def result_of(runs: Path, strategy: str) -> dict:
    (path,) = runs.glob(f"micro/{strategy}-*/result.json")
    return json.loads(path.read_text())


def events_of(runs: Path, strategy: str) -> list[dict]:
    (path,) = runs.glob(f"micro/{strategy}-*/events.jsonl")
    return read_events(path).events


def assert_two_stage_failed_alone(code: int, document: dict, runs: Path, reason: str) -> None:
    rows = rows_by_strategy(document)
    assert code == exit_codes.RUNS_FAILED
    assert rows["mixed"]["status"] == "finished" and result_of(runs, "mixed")["metrics"]
    assert rows["two-stage"]["status"] == "failed"
    assert reason in rows["two-stage"]["reason"] and "\n" not in rows["two-stage"]["reason"]
    assert not list(runs.glob("micro/two-stage-*/result.json"))


def assert_rerun_resumes_to(runs: Path, suite: Path, undisturbed: dict, resumed: bool = True) -> None:
    code, document = run_in_process(suite, runs)
    assert code == exit_codes.OK, document
    rows = rows_by_strategy(document)
    assert rows["mixed"]["reused"] and not rows["two-stage"]["reused"]
    assert {row["status"] for row in document["runs"]} == {"finished"}
    assert any(e["event"] == "resume" for e in events_of(runs, "two-stage")) == resumed
    assert comparable(result_of(runs, "two-stage")) == comparable(undisturbed)


def fail_two_stage_on_call(monkeypatch, module, name: str, call: int, error: Exception) -> None:
    """From its `call`-th call in the two-stage run on, `module.name` raises `error`."""
    real, calls = getattr(module, name), []

    def faulty(*args, **kwargs):
        if "two-stage" in str(args) + str(kwargs):
            calls.append(1)
            if len(calls) >= call:
                raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, faulty)


def test_a_full_disk_at_a_checkpoint_fails_that_run_only(tmp_path, monkeypatch, micro_uninterrupted):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    fail_two_stage_on_call(monkeypatch, checkpoints, "save_model", 2,
                           safetensors.SafetensorError(DISK_FULL))  # the checkpoint of step 30
    code, document = run_in_process(suite, runs)
    assert_two_stage_failed_alone(code, document, runs, "disk full while training")
    failed = [e for e in events_of(runs, "two-stage") if e["event"] == "run_failed"]
    assert len(failed) == 1 and failed[0]["reason"] == rows_by_strategy(document)["two-stage"]["reason"]
    monkeypatch.undo()
    assert_rerun_resumes_to(runs, suite, micro_uninterrupted)


def test_a_full_disk_when_writing_the_result_fails_that_run_only(tmp_path, monkeypatch,
                                                                  micro_uninterrupted):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    real = runfolder.write_json_atomic

    def full_at_result(path, payload):
        if path.name == runfolder.RunFolder.RESULT and "two-stage" in str(path):
            raise OSError(28, os.strerror(28), str(path))
        real(path, payload)

    monkeypatch.setattr(runfolder, "write_json_atomic", full_at_result)
    code, document = run_in_process(suite, runs)
    assert_two_stage_failed_alone(code, document, runs, "disk full while writing the result")
    monkeypatch.undo()
    assert_rerun_resumes_to(runs, suite, micro_uninterrupted)  # from the last checkpoint


def test_a_run_folder_that_turns_read_only_fails_that_run_only(tmp_path, monkeypatch,
                                                               micro_uninterrupted):
    """As root, chmod would not stop the writes: the event log refuses them instead, from step
    20 on (so the run_failed event cannot be written either; the summary has the reason)."""
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    real = runner.EventLog.emit

    def read_only_from_step_20(self, event, **fields):
        if getattr(self, "read_only", False) or ("two-stage" in self.run_id
                                                 and (fields.get("step") or 0) >= 20):
            self.read_only = True
            raise OSError(30, os.strerror(30), str(self.path))
        real(self, event, **fields)

    monkeypatch.setattr(runner.EventLog, "emit", read_only_from_step_20)
    code, document = run_in_process(suite, runs)
    assert_two_stage_failed_alone(code, document, runs, "cannot write while training")
    assert "Read-only file system" in rows_by_strategy(document)["two-stage"]["reason"]
    monkeypatch.undo()
    assert_rerun_resumes_to(runs, suite, micro_uninterrupted)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to "
                                                               "allocate 2.00 GiB"),
                                   RuntimeError("CUDA error: out of memory")])
def test_out_of_gpu_memory_fails_that_run_and_says_what_to_lower(tmp_path, monkeypatch, error,
                                                                 micro_uninterrupted):
    from factrecall_bench import train

    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    real, steps = train.Trainer._step, []

    def out_of_memory_at_step_40(self, *args):
        steps.append(str(self.checkpoint_dir))
        if "two-stage" in steps[-1] and steps.count(steps[-1]) == 40:
            raise error
        return real(self, *args)

    monkeypatch.setattr(train.Trainer, "_step", out_of_memory_at_step_40)
    code, document = run_in_process(suite, runs)
    assert_two_stage_failed_alone(code, document, runs, "out of GPU memory while training")
    reason = rows_by_strategy(document)["two-stage"]["reason"]
    assert "train.grad_accum" in reason and "eval.batch_size" in reason
    monkeypatch.undo()
    assert_rerun_resumes_to(runs, suite, micro_uninterrupted)


def test_a_failure_in_the_trace_fails_that_run_only(tmp_path, monkeypatch, micro_uninterrupted):
    from factrecall_bench.trace import hook as trace_hook

    suite, runs = pair_suite(tmp_path), tmp_path / "runs"

    def broken_trace(config, model, data, context):
        if config.strategy == "two-stage":
            raise ValueError("planted bug in the trace")
        return None

    monkeypatch.setattr(trace_hook, "trace_hook_for", lambda config: broken_trace)
    code, document = run_in_process(suite, runs)
    assert_two_stage_failed_alone(code, document, runs, "tracing: ValueError: planted bug")
    (failed,) = [e for e in events_of(runs, "two-stage") if e["event"] == "run_failed"]
    assert "planted bug in the trace" in failed["traceback"]  # the whole story, for a bug report
    monkeypatch.undo()
    assert_rerun_resumes_to(runs, suite, micro_uninterrupted)


# --- faults of worker processes (the real CLI, two runs side by side) ----------------------------


def worker_holding(run_folder: Path, parent: int) -> int:
    """The pid of the worker process (a child of `parent`) that holds the run's lock open."""
    lock = str(run_folder / ".lock")
    for pid in os.listdir("/proc"):
        try:
            if not pid.isdigit() or int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1]
                                        .split()[1]) != parent:
                continue
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == lock for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no worker holds {lock}")


def test_a_killed_worker_fails_its_run_and_the_other_goes_on(tmp_path, micro_uninterrupted):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", str(suite),
               "--runs-dir", str(runs), "--no-check", "--json"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list(runs.glob("micro/*/events.jsonl"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    (two_stage,) = runs.glob("micro/two-stage-*")
    wait_for_step(two_stage / "events.jsonl", process, 40)
    os.kill(worker_holding(two_stage, process.pid), signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == exit_codes.RUNS_FAILED, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr and "BrokenProcessPool" not in stderr
    document = json.loads(stdout)["suites"][0]
    rows = rows_by_strategy(document)
    assert rows["mixed"]["status"] == "finished"
    assert rows["two-stage"]["status"] == "failed"
    assert rows["two-stage"]["reason"].startswith("worker process killed by signal 9 (SIGKILL)")
    assert [e["reason"] for e in events_of(runs, "two-stage") if e["event"] == "run_failed"] == \
        [rows["two-stage"]["reason"]]  # the parent wrote the event the worker could not
    rerun = run_cli("run", "--suite", str(suite), "--runs-dir", str(runs), "--no-check")
    assert rerun.returncode == exit_codes.OK, rerun.stderr
    assert any(e["event"] == "resume" for e in events_of(runs, "two-stage"))
    assert comparable(result_of(runs, "two-stage")) == comparable(micro_uninterrupted)


def test_a_model_that_will_not_load_fails_its_runs_only(tmp_path):
    suite = pair_suite(tmp_path, models='["tiny-llama", "hf:factrecall-no-such-org/no-such-model"]')
    runs = tmp_path / "runs"
    result = run_cli("run", "--suite", str(suite), "--runs-dir", str(runs), "--no-check", "--json",
                     env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == exit_codes.RUNS_FAILED, result.stderr
    assert "Traceback" not in result.stderr
    rows = json.loads(result.stdout)["suites"][0]["runs"]
    assert {row["status"] for row in rows if "tiny-llama" in row["run_id"]} == {"finished"}
    broken = [row for row in rows if "no-such-model" in row["run_id"]]
    assert len(broken) == 2 and {row["status"] for row in broken} == {"failed"}
    assert all("loading the model" in row["reason"] or "loading the data" in row["reason"]
               for row in broken)
