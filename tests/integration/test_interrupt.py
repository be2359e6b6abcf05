"""One Ctrl-C (or SIGTERM) stops a suite: every worker within seconds, one line, exit 130, no
process left behind, finished runs kept and interrupted ones resumable.

Each test starts the real CLI in a session of its own on two runs side by side, waits until both
train, then signals the whole process group (as a terminal's Ctrl-C does) or the parent alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factrecall_bench import exit_codes
from factrecall_bench.events import read_events
from factrecall_bench.tui.launcher import SuiteLauncher
from tests.conftest import ctrl_c_as_at_a_terminal, run_cli
from tests.integration.test_faults import comparable, pair_suite, result_of

# One at a time under pytest-xdist (`--dist loadgroup`): each test times how fast a stop is.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("signals")]

STOP_WITHIN_S = 20  # generous for a loaded CI machine; an idle one takes about 1 s


def session_processes(session: int) -> list[str]:
    """Live processes (zombies aside) of a session, as 'pid command'."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(f"{pid} {command}")
    return found


def wait_until_both_train(runs: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until both runs have written a checkpoint (so both have something to resume from)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        logs = list(runs.glob("micro/*/events.jsonl"))
        if len(logs) == 2 and all(any(e["event"] == "checkpoint" for e in read_events(log).events)
                                  for log in logs):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the runs did not start in time")


def assert_nothing_left(session: int) -> None:
    deadline = time.time() + 5  # the resource tracker leaves once its parent has gone
    while session_processes(session) and time.time() < deadline:
        time.sleep(0.1)
    assert session_processes(session) == []


def wait_until_a_worker_starts(session: int, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until a worker process exists in the session (it is still importing: no run has begun)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any("multiprocessing.spawn" in command for command in session_processes(session)):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError("no worker started in time")


def start_cli(args: list[str], runs: Path, ignore_sigint: bool = False) -> subprocess.Popen:
    """The CLI in a session of its own; with `ignore_sigint` it starts as `cmd &` in a script
    starts it (SIGINT ignored)."""
    def before_exec() -> None:
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            ctrl_c_as_at_a_terminal()

    return subprocess.Popen([sys.executable, "-m", "factrecall_bench", *args,
                             "--runs-dir", str(runs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=before_exec,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def interrupted(args: list[str], runs: Path, send: str) -> tuple[subprocess.CompletedProcess, int]:
    """Start the CLI, signal it once both runs train: (its outcome, its session id)."""
    process = start_cli(args, runs)
    wait_until_both_train(runs, process)
    sent = time.time()
    if send == "SIGINT to the group":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT if send == "SIGINT to the parent" else signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert time.time() - sent < STOP_WITHIN_S
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), process.pid


def assert_stopped_cleanly(completed: subprocess.CompletedProcess, session: int) -> None:
    assert completed.returncode == exit_codes.INTERRUPTED, completed.stderr
    assert "Traceback" not in completed.stderr and "leaked" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if "interrupted:" in line]
    assert lines == ["interrupted: finished runs are kept; rerun to resume"], completed.stderr
    assert_nothing_left(session)


@pytest.mark.parametrize("send", ["SIGINT to the group", "SIGINT to the parent",
                                  "SIGTERM to the parent"])
def test_one_signal_stops_a_suite_and_a_rerun_resumes(tmp_path, send, micro_uninterrupted):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    completed, session = interrupted(["run", "--suite", str(suite), "--no-check"], runs, send)
    assert_stopped_cleanly(completed, session)
    for log in runs.glob("micro/*/events.jsonl"):
        assert read_events(log).events[-1]["reason"].startswith("interrupted")
    if send != "SIGINT to the group":
        return  # the resume is the same for all three
    rerun = run_cli("run", "--suite", str(suite), "--runs-dir", str(runs), "--no-check")
    assert rerun.returncode == exit_codes.OK, rerun.stderr
    assert "interrupted" not in rerun.stderr  # the progress of a rerun shows no stale failure
    for log in runs.glob("micro/*/events.jsonl"):
        assert any(e["event"] == "resume" for e in read_events(log).events)
    assert comparable(result_of(runs, "two-stage")) == comparable(micro_uninterrupted)


def test_a_ctrl_c_while_the_workers_start_stops_the_suite(tmp_path):
    """The window where a worker exists but has not yet set up its own handlers."""
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    process = start_cli(["run", "--suite", str(suite), "--no-check"], runs)
    wait_until_a_worker_starts(process.pid, process)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert_stopped_cleanly(subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                       stderr), process.pid)
    assert list(runs.glob("micro/*/result.json")) == []


def test_a_suite_started_with_ctrl_c_ignored_ignores_it_in_its_workers_too(tmp_path):
    """`cmd &` in a script starts cmd with SIGINT ignored; a Ctrl-C to the group must then stop
    nothing, rather than the workers alone while the parent starts the next runs."""
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    process = start_cli(["run", "--suite", str(suite), "--no-check"], runs, ignore_sigint=True)
    wait_until_both_train(runs, process)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == exit_codes.OK, stderr
    assert "interrupted" not in stderr
    assert len(list(runs.glob("micro/*/result.json"))) == 2


@pytest.mark.parametrize(("command", "send"), [(["check", "--run-missing"], "SIGINT to the group"),
                                               (["baseline", "update"], "SIGTERM to the parent")])
def test_check_and_baseline_update_stop_alike(tmp_path, command, send):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    args = [*command, "--suite", str(suite), "--baselines-dir", str(tmp_path / "baselines")]
    completed, session = interrupted(args, runs, send)
    assert_stopped_cleanly(completed, session)
    assert not (tmp_path / "baselines").exists()


def test_stopping_the_suite_a_tui_launched_leaves_nothing_behind(tmp_path):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    launcher = SuiteLauncher([sys.executable, "-m", "factrecall_bench", "run", "--suite", str(suite),
                              "--runs-dir", str(runs), "--no-check"], tmp_path / "launch.log")
    launcher.start()
    assert launcher.process is not None
    try:
        wait_until_both_train(runs, launcher.process)
        launcher.stop()  # the TUI's `s`: SIGTERM to the suite's process group
        assert launcher.process.wait(timeout=STOP_WITHIN_S) == exit_codes.INTERRUPTED
    finally:
        if launcher.running:
            os.killpg(launcher.process.pid, signal.SIGKILL)
    assert_nothing_left(launcher.process.pid)
    log = (tmp_path / "launch.log").read_text()
    assert "Traceback" not in log and log.count("interrupted:") == 1
    assert launcher.describe() == "stopped"

