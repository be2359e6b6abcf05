"""Runs: skipped when finished, resumed after a crash (SIGKILL) with identical metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.events import read_events
from factrecall_bench.runner import run_one
from factrecall_bench.suite import expand_suite, load_suite
from tests.conftest import MICRO_SUITE, micro_result, run_cli, wait_for_step

MICRO = MICRO_SUITE


def comparable(result: dict) -> dict:
    return {"metrics": result["metrics"], "per_question": result["per_question"],
            "loss_curve": result["loss_curve"], "phase_evals": result["phase_evals"]}


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


@pytest.mark.parametrize("kill_at_steps", [(40,), (25, 170, 290)])
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path, micro_uninterrupted,
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
        wait_for_step(events_file, process, step)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "micro" / config.run_id / "result.json").exists()
    resumed = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert any(e["event"] == "resume" for e in read_events(events_file).events)
    assert comparable(micro_result(tmp_path)) == comparable(micro_uninterrupted)


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path):
    config = expand_suite(load_suite(str(MICRO)))[0]
    run_one(config, tmp_path)
    folder = tmp_path / "micro" / config.run_id / "checkpoints"
    newest = latest_checkpoint(folder)
    assert newest is not None
    (newest.path / "model.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step


def test_ctrl_c_keeps_finished_work_and_says_how_to_resume(tmp_path):
    config = expand_suite(load_suite(str(MICRO)))[0]
    events_file = tmp_path / "micro" / config.run_id / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "factrecall_bench", "run", "--suite", str(MICRO),
                                "--runs-dir", str(tmp_path), "--no-check"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(events_file, process, 20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: finished runs are kept; rerun to resume" in stderr
    assert "Traceback" not in stderr
    assert latest_checkpoint(events_file.parent / "checkpoints") is not None


TRAINING_TRACE = "\n[trace]\nenabled = true\nmode = \"training\"\ntop_k = [0.05]\nablation_random_draws = 1\n"


def training_trace_suite(folder) -> str:
    path = folder / "micro-training-trace.toml"
    path.write_text(MICRO.read_text() + TRAINING_TRACE)
    return str(path)


@pytest.mark.slow
def test_a_training_mode_trace_survives_kills(tmp_path):
    """The recorder's sums go into every checkpoint: a resumed run traces what an uninterrupted
    one does, and `trace` recomputes it from the final checkpoint."""
    suite = training_trace_suite(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli("run", "--suite", suite, "--runs-dir", str(whole), "--no-check").returncode == 0
    config = expand_suite(load_suite(suite))[0]
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
    retraced = run_cli("trace", str(killed / "micro" / config.run_id))
    assert retraced.returncode == 0, retraced.stderr
    assert micro_result(killed)["trace"]["per_k"] == expected["per_k"]


def test_a_checkpoint_with_a_corrupted_recorder_file_is_skipped(tmp_path):
    config = expand_suite(load_suite(training_trace_suite(tmp_path)))[0]
    from factrecall_bench.orchestrate import _run_with_trace

    assert _run_with_trace(config, tmp_path).status == "finished"
    folder = tmp_path / "micro" / config.run_id / "checkpoints"
    newest = latest_checkpoint(folder)
    assert newest is not None and (newest.path / "trace-recorder.safetensors").exists()
    (newest.path / "trace-recorder.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step
