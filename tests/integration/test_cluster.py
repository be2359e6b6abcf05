"""A suite as cluster jobs through submitit, on CPU with submitit's LocalExecutor (real
subprocesses, the code path Slurm takes): the same results question by question as the local
path, a preempted job requeued and resumed, a killed job resumed when submitted again, and bad
cluster flags refused in one line before any work."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from factrecall_bench import cli  # noqa: E402
from factrecall_bench.cli_exit import exit_code_of  # noqa: E402
from factrecall_bench.cluster import ClusterSettings, make_executor, submit_runs, wait_for_runs  # noqa: E402
from factrecall_bench.events import read_events  # noqa: E402
from factrecall_bench.runfolder import run_dir  # noqa: E402
from factrecall_bench.runner import RunOptions  # noqa: E402
from factrecall_bench.suite import load_suite  # noqa: E402
from tests.conftest import MICRO_SUITE, micro_result, run_cli, wait_for_step  # noqa: E402
from tests.integration.test_distributed import descendants, next_events_file  # noqa: E402
from tests.integration.test_faults import comparable, pair_suite  # noqa: E402


def cli_exit_code(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """The CLI's exit code for these arguments, run in this process as `main` runs it."""
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", *args])
    return exit_code_of(cli.app, debug=False)


@pytest.mark.parametrize(("flags", "message"), [
    (["--executor", "pbs"], "--executor 'pbs': expected one of slurm, local"),
    (["--slurm-partition", "gpu"], "--slurm-partition needs --executor"),
    (["--no-wait"], "--no-wait needs --executor"),
    (["--time", "5", "--no-wait"], "--time, --no-wait need --executor"),
    (["--executor", "local", "--slurm-partition", "gpu"], "need --executor slurm"),
    (["--executor", "slurm", "--slurm-setting", "account"], "expected KEY=VALUE"),
    (["--executor", "slurm", "--time", "0"], "--time 0: expected at least 1 minute"),
    (["--executor", "local", "--jobs", "2"], "--jobs with --executor local: the local executor"),
])
def test_bad_cluster_flags_are_one_line_and_exit_2_before_any_work(monkeypatch, capsys, tmp_path,
                                                                  flags, message):
    runs = tmp_path / "runs"
    code = cli_exit_code(monkeypatch, "run", "--suite", str(MICRO_SUITE), "--runs-dir", str(runs),
                         *flags)
    error = capsys.readouterr().err
    assert code == 2 and message in error and len(error.strip().splitlines()) == 1, error
    assert not runs.exists()


def test_an_executor_without_submitit_installed_is_refused_before_any_work(monkeypatch, capsys,
                                                                           tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    runs = tmp_path / "runs"
    code = cli_exit_code(monkeypatch, "run", "--suite", str(MICRO_SUITE), "--runs-dir", str(runs),
                         "--executor", "slurm")
    error = capsys.readouterr().err
    assert code == 2 and "pip install 'factrecall-bench[cluster]'" in error, error
    assert len(error.strip().splitlines()) == 1
    assert not any(runs.glob("micro/*")) and not (runs / ".submitit").exists()


def test_slurm_without_its_commands_here_is_refused_before_any_work(monkeypatch, capsys,
                                                                    tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    runs = tmp_path / "runs"
    code = cli_exit_code(monkeypatch, "run", "--suite", str(MICRO_SUITE), "--runs-dir", str(runs),
                         "--executor", "slurm")
    error = capsys.readouterr().err
    assert code == 2 and "sbatch and srun not found" in error, error
    assert not (runs / ".submitit").exists()


def fake_slurm_commands(folder: Path) -> str:
    """A PATH where `sbatch` and `srun` exist (submitit looks for them; none is run here)."""
    for command in ("sbatch", "srun"):
        (folder / command).write_text("#!/bin/sh\nexit 1\n")
        (folder / command).chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_slurm_jobs_ask_for_what_the_flags_say(tmp_path, monkeypatch):
    """The sbatch file submitit would submit: partition, GPUs as tasks, time, array limit, the
    preemption signal and extra options (no sbatch is run)."""
    from submitit.slurm.slurm import _make_sbatch_string

    monkeypatch.setenv("PATH", fake_slurm_commands(tmp_path))

    settings = ClusterSettings("slurm", partition="gpu", gpus_per_run=2, cpus_per_run=8,
                               time_min=30, max_parallel=3, slurm_settings=(("account", "proj"),))
    executor = make_executor(settings, tmp_path, jobs=10)
    sbatch = _make_sbatch_string(command="python -m x", folder=tmp_path, map_count=10,
                                 **executor._executor.parameters)
    for line in ("--partition=gpu", "--gpus-per-node=2", "--ntasks-per-node=2",
                 "--cpus-per-task=8", "--time=30", "--array=0-9%3", "--signal=USR2@90",
                 "--account=proj"):
        assert f"#SBATCH {line}\n" in sbatch, (line, sbatch)


@pytest.mark.slow
def test_a_finished_run_is_not_submitted_again(tmp_path, micro_uninterrupted):
    configs = load_suite(str(MICRO_SUITE)).runs
    folder = run_dir(tmp_path, configs[0])
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(micro_uninterrupted))
    submission = submit_runs(configs, tmp_path, ClusterSettings("local"), RunOptions())
    assert submission.jobs == {} and submission.already_finished == [configs[0]]
    outcome = wait_for_runs(configs, tmp_path, submission)
    assert [o.status for o in outcome.outcomes] == ["skipped"]
    assert comparable(outcome.results[0]) == comparable(micro_uninterrupted)


@pytest.mark.slow
def test_a_suite_through_the_local_executor_gives_the_local_paths_results(tmp_path):
    """Two runs as two submitit jobs (subprocesses) == the same two runs in this machine's
    process, question by question."""
    suite = pair_suite(tmp_path)
    here = run_cli("run", "--suite", str(suite), "--runs-dir", str(tmp_path / "here"),
                   "--no-check", "--jobs", "1")
    assert here.returncode == 0, here.stderr
    jobs = run_cli("run", "--suite", str(suite), "--runs-dir", str(tmp_path / "jobs"),
                   "--no-check", "--executor", "local", "--json")
    assert jobs.returncode == 0, jobs.stderr
    assert "submitted 2 jobs" in jobs.stderr
    rows = json.loads(jobs.stdout)["suites"][0]["runs"]
    assert [(row["status"], row["reused"]) for row in rows] == [("finished", False)] * 2
    for strategy in ("two-stage", "mixed"):
        (from_job,) = (tmp_path / "jobs").glob(f"micro/{strategy}-*/result.json")
        (from_here,) = (tmp_path / "here").glob(f"micro/{strategy}-*/result.json")
        assert comparable(json.loads(from_job.read_text())) == \
            comparable(json.loads(from_here.read_text()))
    again = run_cli("run", "--suite", str(suite), "--runs-dir", str(tmp_path / "jobs"),
                    "--no-check", "--executor", "local")
    assert again.returncode == 0 and "nothing submitted" in again.stderr, again.stderr


def task_of(job) -> int:
    """The pid of the job's task (the LocalExecutor's controller runs it as its child)."""
    return descendants(job._process.pid)[0]  # children first


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_to_the_same_result(tmp_path, micro_uninterrupted):
    """USR2 is what Slurm sends (through submitit's --signal) before preempting or timing out a
    job: submitit checkpoints the job (RunJob.checkpoint) and requeues it; the new job resumes."""
    configs = load_suite(str(MICRO_SUITE)).runs
    submission = submit_runs(configs, tmp_path, ClusterSettings("local"), RunOptions(), threads=1)
    job = submission.jobs[configs[0].run_id]
    events_file = next_events_file(tmp_path, job._process)
    wait_for_step(events_file, job._process, 20)
    os.kill(task_of(job), signal.SIGUSR2)
    outcome = wait_for_runs(configs, tmp_path, submission)
    assert [o.status for o in outcome.outcomes] == ["finished"], outcome.outcomes
    assert "Requeued job" in job.stderr() + job.stdout()
    events = read_events(events_file).events
    assert [e["event"] for e in events].count("run_start") == 2
    assert any(e["event"] == "resume" for e in events)
    assert comparable(micro_result(tmp_path)) == comparable(micro_uninterrupted)


@pytest.mark.slow
def test_a_killed_job_resumes_when_the_suite_is_submitted_again(tmp_path, micro_uninterrupted):
    configs = load_suite(str(MICRO_SUITE)).runs
    submission = submit_runs(configs, tmp_path, ClusterSettings("local"), RunOptions(), threads=1)
    job = submission.jobs[configs[0].run_id]
    events_file = next_events_file(tmp_path, job._process)
    wait_for_step(events_file, job._process, 20)
    for pid in [job._process.pid, *descendants(job._process.pid)]:
        os.kill(pid, signal.SIGKILL)
    job._process.wait()
    assert not any(tmp_path.glob("micro/*/result.json"))
    again = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path), "--no-check",
                    "--executor", "local", "--json")
    assert again.returncode == 0, again.stderr
    assert [row["status"] for row in json.loads(again.stdout)["suites"][0]["runs"]] == ["finished"]
    assert any(e["event"] == "resume" for e in read_events(events_file).events)
    assert comparable(micro_result(tmp_path)) == comparable(micro_uninterrupted)


@pytest.mark.slow
def test_without_waiting_the_jobs_finish_and_check_judges_them(tmp_path):
    submitted = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path),
                        "--no-check", "--executor", "local", "--no-wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout) == {"suites": []}  # nothing judged yet
    assert f"factrecall-bench check --suite {MICRO_SUITE} --runs-dir" in submitted.stderr
    wait_for_result(tmp_path)
    checked = run_cli("check", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path), "--json")
    rows = json.loads(checked.stdout)["runs"]
    assert [(row["status"], row["reused"]) for row in rows] == [("finished", True)], checked.stderr


def wait_for_result(runs: Path, timeout: float = 300) -> None:
    """Until the micro run's job (no longer ours to wait on) has written its result."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(runs.glob("micro/*/result.json")):
            return
        time.sleep(0.2)
    raise AssertionError("the submitted job wrote no result in time")


@pytest.mark.slow
def test_a_job_with_two_tasks_trains_its_run_together(tmp_path, micro_uninterrupted):
    """--gpus-per-run 2: two tasks (gloo on CPU here) join one process group through submitit's
    TorchDistributedEnvironment and train the one-process run; each reports it finished (apart,
    one would find the run busy or already finished)."""
    from tests.integration.test_distributed import assert_same_run

    configs = load_suite(str(MICRO_SUITE)).runs
    settings = ClusterSettings("local", gpus_per_run=2)
    submission = submit_runs(configs, tmp_path, settings, RunOptions(), threads=1)
    outcome = wait_for_runs(configs, tmp_path, submission)
    assert [o.status for o in outcome.outcomes] == ["finished"], outcome.outcomes
    (job,) = submission.jobs.values()
    assert [status for status, _ in job.results()] == ["finished", "finished"]
    assert_same_run(micro_result(tmp_path), micro_uninterrupted)


def test_a_gpu_suite_is_submitted_from_a_node_without_a_gpu(tmp_path, monkeypatch):
    """The login node has no GPU; the jobs' nodes do: only training here needs one."""
    from factrecall_bench import app
    from factrecall_bench.errors import UserError

    monkeypatch.setattr(app, "_has_gpu", lambda: False)
    paper = load_suite("paper")
    app.check_before_any_work([paper], tmp_path, None, trains_here=False)
    with pytest.raises(UserError, match="needs a GPU"):
        app.check_before_any_work([paper], tmp_path, None)


def test_a_timed_out_job_is_checkpointed_as_the_same_call(tmp_path):
    """On a time limit (unlike a preemption) submitit requeues only a job whose function has a
    `checkpoint`: RunJob's hands back the same call, which resumes from the run's checkpoints."""
    from submitit.core.job_environment import _checkpoint
    from submitit.core.utils import DelayedSubmission

    from factrecall_bench.cluster import RunJob

    (config,) = load_suite(str(MICRO_SUITE)).runs
    delayed = DelayedSubmission(RunJob(), config, tmp_path, RunOptions(), 1)
    delayed.set_timeout(60, 3)
    assert _checkpoint(delayed, tmp_path / "requeued.pkl", countdown=2) == ""  # "": requeue
    requeued = DelayedSubmission.load(tmp_path / "requeued.pkl")
    assert isinstance(requeued.function, RunJob)
    assert requeued.args == (config, tmp_path, RunOptions(), 1) and requeued.kwargs == {}
