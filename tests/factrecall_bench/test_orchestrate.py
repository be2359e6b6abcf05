"""Runs side by side: each worker process gets its own GPU where there are GPUs; a worker that
dies is its task's failure alone."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from typing import Any

import pytest
import torch

from factrecall_bench.orchestrate import ProcessPool, visible_gpus, worker_death_reason
from tests.conftest import ROOT


def gpu_of_this_worker(all_workers_busy: Any) -> tuple[int, str | None]:
    all_workers_busy.wait(timeout=120)  # every worker holds one task: they are all in use
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def gpus_seen(jobs: int, gpus: list[str]) -> dict[int, str | None]:
    """Which GPU each of `jobs` workers sees (one task per worker, all at once)."""
    with multiprocessing.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(jobs)
        ends = ProcessPool(jobs, gpus).map(gpu_of_this_worker, [barrier] * jobs)
    seen = dict(end.value for end in ends)
    assert len(seen) == jobs
    return seen


@pytest.mark.slow
def test_each_worker_sees_one_gpu_of_its_own(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert sorted(gpus_seen(2, ["3", "5"]).values()) == ["3", "5"]


@pytest.mark.slow
def test_more_workers_than_gpus_share_them_round_robin(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert sorted(gpus_seen(3, ["0", "1"]).values()) == ["0", "0", "1"]


def test_without_gpus_workers_are_left_alone(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert set(gpus_seen(2, []).values()) == {None}


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7")
    assert visible_gpus() == ["2", "7"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_gpus() == []


def die_if_asked(code: int) -> int:
    if code:
        os._exit(code)
    return os.getpid()


@pytest.mark.slow
def test_a_process_that_dies_is_its_task_alone():
    ends = ProcessPool(2, []).map(die_if_asked, [0, 3, 0, 0])
    assert [end.returned for end in ends] == [True, False, True, True]
    assert ends[1].exitcode == 3 and len({end.value for end in ends if end.returned}) == 3


def test_a_dead_worker_is_named_by_its_signal():
    assert worker_death_reason(-9).startswith("worker process killed by signal 9 (SIGKILL)")
    assert worker_death_reason(130).startswith("interrupted by SIGINT")
    assert "exited with code 1" in worker_death_reason(1)


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """The run ids the pool was asked to start workers for; none starts (each run 'failed')."""
    from factrecall_bench import orchestrate

    run_ids: list[str] = []

    def record(self, target, tasks):
        run_ids.extend(config.run_id for config in tasks)
        return [orchestrate.TaskEnd(("failed", "not trained here"), True, 0) for _ in tasks]

    monkeypatch.setattr(orchestrate.ProcessPool, "map", record)
    return run_ids

def test_with_several_jobs_a_finished_run_starts_no_worker(started, tmp_path):
    """A rerun of a finished suite is answered by the parent from result.json; only the run that
    is not finished (here: finished with another config) goes to a worker."""
    from factrecall_bench import orchestrate
    from factrecall_bench.config import config_hash
    from factrecall_bench.runfolder import RESULT_SCHEMA_VERSION, RunFolder
    from factrecall_bench.suite import load_suite
    from tests.conftest import TINY_SUITE

    finished, stale = load_suite(str(TINY_SUITE)).runs[:2]
    for config, digest in ((finished, config_hash(finished)), (stale, "another config")):
        folder = RunFolder.of(tmp_path, config)
        folder.path.mkdir(parents=True)
        folder.write_result({"schema_version": RESULT_SCHEMA_VERSION,  # type: ignore[typeddict-item]
                             "run_id": config.run_id, "config_hash": digest})
    outcome = orchestrate.run_configs([finished, stale], tmp_path, jobs=2)
    assert started == [stale.run_id]
    assert [(o.run_id, o.status) for o in outcome.outcomes] == [(finished.run_id, "skipped"),
                                                                 (stale.run_id, "failed")]
    assert outcome.outcomes[0].result["config_hash"] == config_hash(finished)


def test_with_several_jobs_a_run_trained_elsewhere_is_reused_without_a_worker(started, tmp_path):
    """A run that a finished run of another suite trained already (the same reuse identity) is
    copied by the parent under its lock; only the run with nothing to reuse goes to a worker."""
    from factrecall_bench import orchestrate
    from factrecall_bench.runfolder import RunFolder
    from tests.conftest import tiny_config, write_finished_run

    reused, untrained = tiny_config("mixed"), tiny_config("two-stage")
    source = tiny_config("mixed", suite_name="elsewhere")
    write_finished_run(tmp_path, source, metrics={"ood_exact_match": 0.5})
    outcome = orchestrate.run_configs([reused, untrained], tmp_path, jobs=2)
    assert started == [untrained.run_id]
    first = outcome.outcomes[0]
    assert (first.run_id, first.status) == (reused.run_id, "skipped")
    assert first.reason == f"reused: trained as elsewhere/{source.run_id}"
    written = RunFolder.of(tmp_path, reused).finished_result(reused)
    assert written is not None and first.result is not None
    for result in (written, first.result):
        assert result["run_id"] == reused.run_id
        assert result["reused_from"] == f"elsewhere/{source.run_id}"
    assert written["metrics"] == {"ood_exact_match": 0.5}
    assert outcome.outcomes[1].status == "failed"
    # A run with nothing to reuse is its worker's alone: the parent made no folder for it (an
    # interrupted suite would otherwise leave empty folders of runs that never started).
    assert not RunFolder.of(tmp_path, untrained).path.exists()


def test_a_run_another_process_holds_is_left_to_its_worker(monkeypatch, tmp_path):
    """The parent copies nothing into a reusable run it cannot lock: the worker reports it busy."""
    from filelock import FileLock

    from factrecall_bench import orchestrate
    from factrecall_bench.runfolder import RunFolder
    from tests.conftest import tiny_config, write_finished_run

    config = tiny_config("mixed")
    write_finished_run(tmp_path, tiny_config("mixed", suite_name="elsewhere"))  # reusable
    folder = RunFolder.of(tmp_path, config)
    folder.path.mkdir(parents=True)
    monkeypatch.setattr(orchestrate, "reuse_from",
                        lambda *args: pytest.fail("reused a run another process holds"))
    started = []
    monkeypatch.setattr(orchestrate.ProcessPool, "map", lambda self, target, tasks: [
        started.append(task.run_id) or orchestrate.TaskEnd(("busy", "held"), True, 0) for task in tasks])
    with FileLock(str(folder.lock)):
        outcome = orchestrate.run_configs([config], tmp_path, jobs=2)
    assert started == [config.run_id] and outcome.outcomes[0].status == "busy"


def test_the_first_worker_starts_with_ctrl_c_held_until_its_handler_is_set(tmp_path):
    """A Ctrl-C while a worker imports must wait for the worker's handler, or it prints a
    traceback. The first worker is the one at risk: multiprocessing starts its resource tracker
    along with it and unblocks SIGINT in the parent as it does. A fresh interpreter, so that no
    earlier test has started the tracker already."""
    mask_file = tmp_path / "mask"
    script = ("import os\n"
              "os.environ['FACTRECALL_TEST_PARENT_PID'] = str(os.getpid())\n"
              "from factrecall_bench.orchestrate import ProcessPool\n"
              "from tests.factrecall_bench.mask_at_import import same\n"
              "assert [end.value for end in ProcessPool(1, []).map(same, [7])] == [7]\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                               text=True, timeout=120,
                               env={**os.environ, "FACTRECALL_TEST_MASK_FILE": str(mask_file)})
    assert completed.returncode == 0, completed.stderr
    assert mask_file.read_text() == "SIGINT"
