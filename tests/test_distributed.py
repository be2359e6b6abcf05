"""Several processes per run (DDP through accelerate), on CPU with gloo under `torchrun`.

Two processes must give the single-process run: the same answers question by question and the
same loss curve up to float summation order, with one process alone locking and writing. An
interrupted two-process run resumes from its checkpoint to the same result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factrecall_bench import distributed
from factrecall_bench.events import read_events
from tests.conftest import MICRO_SUITE as MICRO
from tests.conftest import micro_result, run_cli, training_trace_suite, wait_for_step


def torchrun_command(*args: str, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "factrecall_bench", *args]


def run_two_processes(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(torchrun_command(*args), capture_output=True, text=True, timeout=600,
                          env=env)


def micro_suite(folder: Path, grad_accum: int) -> Path:
    """The micro suite with `grad_accum` micro-batches per step, and the gradient trace."""
    text = MICRO.read_text().replace("[train]\n", f"[train]\ngrad_accum = {grad_accum}\n")
    text += "\n[trace]\nenabled = true\nprobe_examples = 16\ntop_k = [0.05]\nablation_random_draws = 1\n"
    path = folder / f"micro-accum{grad_accum}.toml"
    path.write_text(text)
    return path


def assert_same_run(several: dict, single: dict) -> None:
    assert several["metrics"] == single["metrics"]
    assert several["per_question"] == single["per_question"]
    assert [step for step, _ in several["loss_curve"]] == [s for s, _ in single["loss_curve"]]
    np.testing.assert_allclose([loss for _, loss in several["loss_curve"]],
                               [loss for _, loss in single["loss_curve"]], rtol=1e-4)
    assert [e["metrics"] for e in several["phase_evals"]] == \
        [e["metrics"] for e in single["phase_evals"]]


@pytest.mark.slow
def test_two_processes_train_the_single_process_run(tmp_path, micro_uninterrupted):
    """Each process takes half of every micro-batch; the update is the same."""
    completed = run_two_processes("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path),
                                  "--no-check", "--json")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)  # one document: only the main process prints
    assert [run["status"] for run in report["suites"][0]["runs"]] == ["finished"]
    result = micro_result(tmp_path)
    assert_same_run(result, micro_uninterrupted)
    events = read_events(next(tmp_path.glob("micro/*/events.jsonl"))).events
    assert [e["event"] for e in events].count("run_start") == 1  # only the main process writes
    assert len([e for e in events if e["event"] == "step"]) == len(micro_uninterrupted["loss_curve"])
    again = run_two_processes("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert again.returncode == 0 and again.stderr.count("nothing to do") == 1, again.stderr


@pytest.mark.slow
def test_a_run_locked_elsewhere_is_busy_in_every_process(tmp_path):
    from filelock import FileLock

    from factrecall_bench.runfolder import run_dir
    from factrecall_bench.suite import load_suite

    folder = run_dir(tmp_path, load_suite(str(MICRO)).runs[0])
    folder.mkdir(parents=True)
    with FileLock(str(folder / ".lock")):
        completed = run_two_processes("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path),
                                      "--no-check", "--json")
    # The main process exits 4 (a run did not finish), which torchrun reports as 1.
    assert completed.returncode == 1 and "exitcode  : 4" in completed.stderr, completed.stderr
    assert [row["status"] for row in json.loads(completed.stdout)["suites"][0]["runs"]] == ["busy"]
    assert not (folder / "events.jsonl").exists()


@pytest.mark.slow
def test_a_process_without_examples_adds_nothing(tmp_path):
    """Micro-batches of one example: the second process runs a masked copy, and the run is still
    the single-process one (the same suite in one process, with the same accumulation)."""
    suite = micro_suite(tmp_path, grad_accum=8)
    single = run_cli("run", "--suite", str(suite), "--runs-dir", str(tmp_path / "one"), "--no-check")
    assert single.returncode == 0, single.stderr
    completed = run_two_processes("run", "--suite", str(suite), "--runs-dir", str(tmp_path / "two"),
                                  "--no-check")
    assert completed.returncode == 0, completed.stderr
    two = micro_result(tmp_path / "two")
    assert_same_run(two, micro_result(tmp_path / "one"))
    assert two["trace"]["summary"]["shared_count@0.05"] > 0
    # Both processes traced (the ablation's evaluations split between them): the same trace as
    # one process retracing the final checkpoint.
    (run_folder,) = (tmp_path / "two").glob("micro/*/")
    retraced = run_cli("trace", str(run_folder), "--json")
    assert retraced.returncode == 0, retraced.stderr
    one_process = json.loads(retraced.stdout)["summary"]
    assert one_process.keys() == two["trace"]["summary"].keys()
    for name, value in two["trace"]["summary"].items():
        assert one_process[name] == pytest.approx(value, rel=1e-5, abs=1e-9), name


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_result(tmp_path, micro_uninterrupted):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = torchrun_command("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    events_file = next_events_file(tmp_path, launcher)
    wait_for_step(events_file, launcher, 40)
    for pid in [launcher.pid, *descendants(launcher.pid)]:  # workers have sessions of their own
        os.kill(pid, signal.SIGKILL)
    launcher.wait()
    assert not any(tmp_path.glob("micro/*/result.json"))
    resumed = run_two_processes("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert any(e["event"] == "resume" for e in read_events(events_file).events)
    assert_same_run(micro_result(tmp_path), micro_uninterrupted)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def next_events_file(runs: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(runs.glob("micro/*/events.jsonl"))
        if found:
            return found[0]
        assert process.poll() is None, "the run ended before it started"
        time.sleep(0.05)
    raise AssertionError("the run did not start in time")


@pytest.mark.parametrize("command", [["trace", "RUNS"], ["data", "generate", "--out", "RUNS/data"]])
def test_one_process_commands_refuse_a_launcher(tmp_path, command):
    env = {**os.environ, "WORLD_SIZE": "2"}
    arguments = [part.replace("RUNS", str(tmp_path)) for part in command]
    completed = subprocess.run([sys.executable, "-m", "factrecall_bench", *arguments],
                               capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 2 and "one process" in completed.stderr, completed.stderr


@pytest.mark.parametrize(("items", "processes"), [(7, 3), (2, 3), (6, 2), (0, 2)])
def test_shards_come_back_in_their_order(monkeypatch, items, processes):
    """Each process takes every n-th item; gathering puts them back where they were."""
    values = [f"item-{i}" for i in range(items)]
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    shards = []
    for process in range(processes):
        monkeypatch.setattr(distributed, "rank", lambda process=process: process)
        shards.append(distributed.shard(values))
    assert sorted(sum(shards, [])) == sorted(values)
    def gather_object(sent: list) -> list:  # every process's list, as accelerate returns them
        assert sent == [shards[0]]
        return list(shards)

    monkeypatch.setattr("accelerate.utils.gather_object", gather_object)
    assert distributed.gather_shards(shards[0]) == values


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.gather_shards([1, 2, 3]) == [1, 2, 3]
    assert distributed.computed_on_main(lambda: "value") == "value" and distributed.is_main()


@pytest.mark.slow
def test_divergence_fails_the_run_in_every_process_and_the_suite_goes_on(tmp_path):
    """The divergence check reads the loss summed over processes, so all stop at the same step."""
    suite = tmp_path / "diverge.toml"
    suite.write_text(MICRO.read_text().replace('strategies = ["two-stage"]',
                                               'strategies = ["explode", "two-stage"]')
                     + '\n[custom_strategies]\nexplode = [{name = "bio", epochs = {bio = 5}, lr = 1e6}]\n')
    completed = run_two_processes("run", "--suite", str(suite), "--runs-dir", str(tmp_path),
                                  "--no-check", "--json")
    # The main process exits 4 (a run failed); torchrun reports any non-zero exit as 1.
    assert completed.returncode == 1 and "exitcode  : 4" in completed.stderr, completed.stderr
    statuses = {row["run_id"].split("-tiny")[0]: row
                for row in json.loads(completed.stdout)["suites"][0]["runs"]}
    assert statuses["explode"]["status"] == "failed" and "diverged" in statuses["explode"]["reason"]
    assert statuses["two-stage"]["status"] == "finished"


def test_a_training_mode_trace_is_refused_under_a_launcher(tmp_path):
    """Before any run starts; every process says why in one line (the launcher then exits 1)."""
    completed = run_two_processes("run", "--suite", training_trace_suite(tmp_path),
                                  "--runs-dir", str(tmp_path / "runs"))
    assert completed.returncode != 0
    assert completed.stderr.count("trace mode 'training' runs in one process only") == 2
    assert "[rank0]: Traceback" not in completed.stderr  # (the launcher's own report has one)
    assert not list((tmp_path / "runs").glob("micro/*"))
