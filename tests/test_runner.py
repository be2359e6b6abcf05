"""Runs: skipped when finished, resumed after a crash (SIGKILL) with identical metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.events import read_events
from factrecall_bench.io import write_json_atomic
from factrecall_bench.runner import run_one
from factrecall_bench.suite import load_suite
from tests.conftest import MICRO_SUITE as MICRO
from tests.conftest import (
    ctrl_c_as_at_a_terminal,
    micro_result,
    run_cli,
    training_trace_suite,
    wait_for_step,
)


def comparable(result: dict) -> dict:
    return {"metrics": result["metrics"], "per_question": result["per_question"],
            "loss_curve": result["loss_curve"], "phase_evals": result["phase_evals"]}


def test_finished_run_is_skipped_and_says_so(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    first = run_one(config, tmp_path)
    assert first.status == "finished"
    events_before = (tmp_path / "micro" / config.run_id / "events.jsonl").read_bytes()
    again = run_one(config, tmp_path)
    assert again.status == "skipped"
    assert again.result == json.loads(json.dumps(first.result))
    assert (tmp_path / "micro" / config.run_id / "events.jsonl").read_bytes() == events_before
    rerun = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert rerun.returncode == 0 and "nothing to do" in rerun.stderr


@pytest.mark.parametrize("kill_at_steps", [(40,), (25, 170, 290)])
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path, micro_uninterrupted,
                                                            kill_at_steps):
    """Killed mid-phase, at a phase boundary's neighbourhood, several times: same result."""
    config = load_suite(str(MICRO)).runs[0]
    events_file = tmp_path / "micro" / config.run_id / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", str(MICRO),
               "--runs-dir", str(tmp_path), "--no-check"]
    for step in kill_at_steps:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for_step(events_file, process, step)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "micro" / config.run_id / "result.json").exists()
    resumed = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert any(e["event"] == "resume" for e in read_events(events_file).events)
    assert comparable(micro_result(tmp_path)) == comparable(micro_uninterrupted)


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    run_one(config, tmp_path)
    folder = tmp_path / "micro" / config.run_id / "checkpoints"
    newest = latest_checkpoint(folder)
    assert newest is not None
    (newest.path / "model.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step


def test_ctrl_c_keeps_finished_work_and_says_how_to_resume(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    events_file = tmp_path / "micro" / config.run_id / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "factrecall_bench", "run", "--suite", str(MICRO),
                                "--runs-dir", str(tmp_path), "--no-check"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_as_at_a_terminal)
    wait_for_step(events_file, process, 20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: finished runs are kept; rerun to resume" in stderr
    assert "Traceback" not in stderr
    assert latest_checkpoint(events_file.parent / "checkpoints") is not None


@pytest.fixture(scope="module")
def training_trace_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The micro suite with a training-mode trace, trained once without interruption: (suite,
    runs folder)."""
    folder = tmp_path_factory.mktemp("training-trace")
    suite = training_trace_suite(folder)
    whole = folder / "whole"
    completed = run_cli("run", "--suite", suite, "--runs-dir", str(whole), "--no-check")
    assert completed.returncode == 0, completed.stderr
    return suite, whole


@pytest.mark.slow
def test_a_training_mode_trace_survives_kills(tmp_path, training_trace_run):
    """The recorder's sums go into every checkpoint: a resumed run traces what an uninterrupted
    one does, and `trace` recomputes it from the final checkpoint."""
    suite, whole = training_trace_run
    killed = tmp_path / "killed"
    config = load_suite(suite).runs[0]
    events_file = killed / "micro" / config.run_id / "events.jsonl"
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", suite,
               "--runs-dir", str(killed), "--no-check"]
    for step in (40, 250):  # in stage 1, then in stage 2
        process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_step(events_file, process, step)
        process.send_signal(signal.SIGKILL)
        process.wait()
    resumed = run_cli("run", "--suite", suite, "--runs-dir", str(killed), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert sum(e["event"] == "resume" for e in read_events(events_file).events) == 2
    expected, got = micro_result(whole)["trace"], micro_result(killed)["trace"]
    assert got["settings"]["mode"] == "training" and got["summary"]["shared_count@0.05"] > 0
    assert got["per_k"] == expected["per_k"] and got["ablation"] == expected["ablation"]
    result_file = events_file.parent / "result.json"
    write_json_atomic(result_file, {**micro_result(killed), "trace": None})  # retrace must refill it
    retraced = run_cli("trace", str(events_file.parent))
    assert retraced.returncode == 0, retraced.stderr
    assert micro_result(killed)["trace"]["per_k"] == expected["per_k"]


def test_a_checkpoint_with_a_corrupted_recorder_file_is_skipped(tmp_path, training_trace_run):
    _, whole = training_trace_run
    (checkpoints,) = whole.glob("micro/*/checkpoints")
    folder = shutil.copytree(checkpoints, tmp_path / "checkpoints")
    newest = latest_checkpoint(folder)
    assert newest is not None and (newest.path / "trace-recorder.safetensors").exists()
    (newest.path / "trace-recorder.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step
