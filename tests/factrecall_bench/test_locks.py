"""A run's lock, both methods: a second holder is excluded (in this process and in another), a
dead holder's lock is free again (flock: the kernel drops it; owner-file: taken over as stale),
and a live holder's owner file is kept fresh by its heartbeat."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factrecall_bench import cli
from factrecall_bench.cli_exit import exit_code_of
from factrecall_bench.locks import LOCK_ENV, OwnerFileLock, read_owner, run_lock
from tests.conftest import MICRO_SUITE, run_cli

METHODS = ["flock", "owner-file"]

HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from factrecall_bench.locks import run_lock
lock = run_lock(Path(sys.argv[1]), sys.argv[2])
print("taken" if lock.acquire() else "refused", flush=True)
time.sleep(600)
"""


def holder_in_another_process(path: Path, method: str) -> tuple[subprocess.Popen, str]:
    """A process that tries to take the lock, says whether it did, then sleeps holding it."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(path), method],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def killed(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("method", METHODS)
def test_a_second_holder_is_excluded_until_the_first_releases(tmp_path, method):
    path = tmp_path / ".lock"
    first, second = run_lock(path, method), run_lock(path, method)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


@pytest.mark.parametrize("method", METHODS)
def test_a_holder_in_another_process_excludes_this_one_while_it_lives(tmp_path, method):
    path = tmp_path / ".lock"
    process, said = holder_in_another_process(path, method)
    try:
        assert said == "taken"
        assert not run_lock(path, method).acquire()
    finally:
        killed(process)
    # Dead (SIGKILL, no release): flock is dropped by the kernel; the owner file of a dead
    # process of this host is stale and taken over.
    mine = run_lock(path, method)
    assert mine.acquire()
    here, said = holder_in_another_process(path, method)
    killed(here)
    assert said == "refused"
    mine.release()


def test_an_owner_file_lock_also_shows_as_held_to_the_tui(tmp_path):
    """The TUI tells a live run from an interrupted one by trying RUN/.lock (flock)."""
    from filelock import FileLock, Timeout

    holder = run_lock(tmp_path / ".lock", "owner-file")
    assert holder.acquire()
    with pytest.raises(Timeout):
        FileLock(str(tmp_path / ".lock"), timeout=0).acquire()
    holder.release()
    FileLock(str(tmp_path / ".lock"), timeout=0).acquire()


def owner_file_of_another_host(path: Path, silent_s: float) -> None:
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "token": "theirs"}))
    then = time.time() - silent_s
    os.utime(path, (then, then))


def test_an_owner_file_of_another_host_is_taken_over_only_once_silent_too_long(tmp_path):
    path = tmp_path / ".lock.owner"
    owner_file_of_another_host(path, silent_s=60)
    assert not OwnerFileLock(path, stale_after_s=600).acquire()
    assert read_owner(path)["token"] == "theirs"
    owner_file_of_another_host(path, silent_s=900)
    mine = OwnerFileLock(path, stale_after_s=600)
    assert mine.acquire()
    assert read_owner(path) == {**read_owner(path), "host": socket.gethostname(),
                                "pid": os.getpid(), "token": mine.token}
    mine.release()
    assert not path.exists() and list(tmp_path.iterdir()) == []  # no unique or moved files left


def test_an_unreadable_owner_file_is_judged_by_its_age(tmp_path):
    path = tmp_path / ".lock.owner"
    path.write_text("")  # e.g. cut short by a full disk
    assert not OwnerFileLock(path).acquire()
    then = time.time() - 3600
    os.utime(path, (then, then))
    assert OwnerFileLock(path).acquire()


def test_a_live_holder_keeps_its_owner_file_fresh(tmp_path):
    path = tmp_path / ".lock.owner"
    holder = OwnerFileLock(path, heartbeat_s=0.05)
    assert holder.acquire()
    then = time.time() - 3600
    os.utime(path, (then, then))  # as if silent for an hour
    deadline = time.time() + 30
    while path.stat().st_mtime < then + 1 and time.time() < deadline:
        time.sleep(0.02)
    assert not holder.is_stale({"host": "node-elsewhere"})  # the heartbeat refreshed it
    holder.release()


def test_releasing_a_lock_taken_over_leaves_the_new_holders_file(tmp_path):
    path = tmp_path / ".lock.owner"
    old = OwnerFileLock(path)
    assert old.acquire()
    old._stop.set()
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "token": "new-holder"}))
    old.release()
    assert read_owner(path)["token"] == "new-holder"


def test_an_unknown_lock_method_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(LOCK_ENV, "dotlock")
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "run", "--suite", str(MICRO_SUITE),
                                      "--runs-dir", str(tmp_path)])
    assert exit_code_of(cli.app, debug=False) == 2
    error = capsys.readouterr().err
    assert error == "error: FACTRECALL_LOCK='dotlock': expected one of flock, owner-file\n"
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "run", "--suite", str(MICRO_SUITE),
                                      "--runs-dir", str(tmp_path), "--lock-method", "dotlock"])
    assert exit_code_of(cli.app, debug=False) == 2
    assert "--lock-method 'dotlock'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_held_through_an_owner_file_is_busy(tmp_path):
    from factrecall_bench.runfolder import run_dir
    from factrecall_bench.suite import load_suite

    folder = run_dir(tmp_path, load_suite(str(MICRO_SUITE)).runs[0])
    folder.mkdir(parents=True)
    holder = run_lock(folder / ".lock", "owner-file")
    assert holder.acquire()  # a live process of this host (this one) holds it
    try:
        completed = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path),
                            "--no-check", "--json", "--lock-method", "owner-file")
    finally:
        holder.release()
    assert completed.returncode == 4, completed.stderr
    assert [row["status"] for row in json.loads(completed.stdout)["suites"][0]["runs"]] == ["busy"]
    assert not (folder / "events.jsonl").exists()
