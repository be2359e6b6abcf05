"""Runs: skipped when finished, resumed after a crash (SIGKILL) with identical metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.events import read_events
from factrecall_bench.runner import run_one
from factrecall_bench.suite import expand_suite, load_suite
from tests.conftest import TESTS, run_cli

MICRO = TESTS / "data" / "suites" / "micro.toml"


def comparable(result: dict) -> dict:
    return {"metrics": result["metrics"], "per_question": result["per_question"],
            "loss_curve": result["loss_curve"], "phase_evals": result["phase_evals"]}


def the_result(runs: Path) -> dict:
    (path,) = runs.glob("micro/*/result.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("clean")
    completed = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(runs), "--no-check")
    assert completed.returncode == 0, completed.stderr
    return the_result(runs)


def test_finished_run_is_skipped_and_says_so(tmp_path):
    config = expand_suite(load_suite(str(MICRO)))[0]
    first = run_one(config, tmp_path)
    assert first.status == "finished"
    events_before = (tmp_path / "micro" / config.run_id / "events.jsonl").read_bytes()
    again = run_one(config, tmp_path)
    assert again.status == "skipped"
    assert again.result == json.loads(json.dumps(first.result))
    assert (tmp_path / "micro" / config.run_id / "events.jsonl").read_bytes() == events_before
    rerun = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert rerun.returncode == 0 and "nothing to do" in rerun.stderr


def _wait_for_step(events_file: Path, process: subprocess.Popen, step: int,
                   timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = read_events(events_file).events if events_file.exists() else []
        if any(e["event"] == "step" and e["step"] >= step for e in events):
            return
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in time")


@pytest.mark.parametrize("kill_at_steps", [(40,), (25, 170, 290)])
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path, uninterrupted,
                                                            kill_at_steps):
    """Killed mid-phase, at a phase boundary's neighbourhood, several times: same result."""
    config = expand_suite(load_suite(str(MICRO)))[0]
    events_file = tmp_path / "micro" / config.run_id / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", str(MICRO),
               "--runs-dir", str(tmp_path), "--no-check"]
    for step in kill_at_steps:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _wait_for_step(events_file, process, step)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "micro" / config.run_id / "result.json").exists()
    resumed = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert any(e["event"] == "resume" for e in read_events(events_file).events)
    assert comparable(the_result(tmp_path)) == comparable(uninterrupted)


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path):
    config = expand_suite(load_suite(str(MICRO)))[0]
    run_one(config, tmp_path)
    folder = tmp_path / "micro" / config.run_id / "checkpoints"
    newest = latest_checkpoint(folder)
    assert newest is not None
    (newest.path / "model.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step
