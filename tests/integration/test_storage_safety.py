"""Storage safety: a command never deletes or replaces what it did not write, and a full disk never
leaves a checkpoint or file that a resume or a reader would trust half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factrecall_bench.checkpoints import (
    CheckpointNotSaved,
    checkpoint_bytes,
    checkpoint_folders,
    latest_checkpoint,
    low_space_warning,
    save_checkpoint,
    warn_if_low_space,
)
from factrecall_bench.data.dataset import content_digest
from factrecall_bench.errors import UserError
from factrecall_bench.events import EventLog, read_events
from factrecall_bench.io import replace_dir_atomic, write_bytes_atomic
from tests.conftest import MICRO_SUITE, run_cli

GENERATE = ("data", "generate", "--people", "20")


def _tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` (hidden ones too) with a file's text: what must not change."""
    return {str(path.relative_to(folder)): path.read_text() if path.is_file() else "<dir>"
            for path in sorted(folder.rglob("*"))}


def _one_error_line(completed: subprocess.CompletedProcess) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    return lines[0]


# ------------------------------------------------------------------ a user's files and folders


def test_generate_refuses_a_filled_folder_and_keeps_its_files(tmp_path):
    (tmp_path / "demo" / "code").mkdir(parents=True)
    (tmp_path / "demo" / "thesis.txt").write_text("keep\n")
    before = _tree(tmp_path)
    completed = run_cli(*GENERATE, "--out", "demo", cwd=tmp_path)
    assert completed.returncode == 2
    assert "not empty" in _one_error_line(completed)
    assert _tree(tmp_path) == before  # nothing deleted, nothing left behind


def test_generate_refuses_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("keep\n")
    completed = run_cli(*GENERATE, "--out", "notes.txt", cwd=tmp_path)
    assert completed.returncode == 2
    assert "is a file" in _one_error_line(completed)
    assert _tree(tmp_path) == {"notes.txt": "keep\n"}


def test_generate_into_the_current_empty_folder(tmp_path):
    completed = run_cli(*GENERATE, "--out", ".", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "digest.json", "spec.json"]
    digest = json.loads((tmp_path / "digest.json").read_text())["sha256"]
    assert digest == content_digest(tmp_path / "dataset")


def test_generate_into_the_current_filled_folder_is_refused(tmp_path):
    (tmp_path / "thesis.txt").write_text("keep\n")
    before = _tree(tmp_path)
    completed = run_cli(*GENERATE, "--out", ".", cwd=tmp_path)
    assert completed.returncode == 2
    assert str(tmp_path) in _one_error_line(completed)  # `.` is named, so the user sees where
    assert _tree(tmp_path) == before


def test_rerun_over_our_own_dataset_replaces_only_our_entries(tmp_path):
    assert run_cli(*GENERATE, "--out", "demo", cwd=tmp_path).returncode == 0
    demo = tmp_path / "demo"
    (demo / "notes.txt").write_text("mine\n")  # a user's file beside our data
    (demo / "tokenizer").mkdir()  # what a run trains beside the data: stale once data changes
    (demo / "tokenizer" / "tokenizer.json").write_text("{}")
    completed = run_cli(*GENERATE, "--out", "demo", "--seed", "7", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert json.loads((demo / "spec.json").read_text())["seed"] == 7
    assert json.loads((demo / "digest.json").read_text())["sha256"] == \
        content_digest(demo / "dataset")
    assert (demo / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temp or trash left
    assert sorted(p.name for p in demo.iterdir()) == \
        ["dataset", "digest.json", "notes.txt", "spec.json"]


def test_replace_dir_refuses_a_folder_that_is_not_ours(tmp_path):
    final, tmp = tmp_path / "final", tmp_path / "tmp"
    final.mkdir()
    (final / "thesis.txt").write_text("keep\n")
    tmp.mkdir()
    with pytest.raises(UserError, match="not written by factrecall-bench"):
        replace_dir_atomic(tmp, final, is_ours=lambda path: False)
    assert (final / "thesis.txt").read_text() == "keep\n"


def test_replace_dir_leaves_a_folder_named_like_its_old_trash_alone(tmp_path):
    """The old code's fixed trash name `.final.old` was deleted whoever had made it."""
    final, tmp, lookalike = tmp_path / "final", tmp_path / "tmp", tmp_path / ".final.old"
    for folder in (final, tmp, lookalike):
        folder.mkdir()
    (lookalike / "thesis.txt").write_text("keep\n")
    (tmp / "new.txt").write_text("new\n")
    replace_dir_atomic(tmp, final, is_ours=lambda path: True)
    assert (final / "new.txt").exists() and not tmp.exists()
    assert _tree(tmp_path) == {"final": "<dir>", "final/new.txt": "new\n", ".final.old": "<dir>",
                               ".final.old/thesis.txt": "keep\n"}


def test_a_file_never_replaces_a_folder(tmp_path):
    """`--junit-xml reports/` or a folder named trace.json: refused, the folder is kept."""
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "old.xml").write_text("keep")
    with pytest.raises(UserError, match="is a folder"):
        write_bytes_atomic(tmp_path / "reports", b"<xml/>")
    assert _tree(tmp_path) == {"reports": "<dir>", "reports/old.xml": "keep"}


# ------------------------------------------------------------------ checkpoints


def _training_state() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(2, 8)).sum().backward()
    optimizer.step()
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _save(folder: Path, step: int, state: tuple) -> Path:
    model, optimizer, scheduler = state
    return save_checkpoint(folder, step, model, optimizer, scheduler, phase_done=False)


def test_pruning_removes_only_checkpoints_it_wrote(tmp_path):
    state = _training_state()
    user_folder = tmp_path / "step-00000000"  # named like ours, holding a user's file
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("keep\n")
    (tmp_path / "step-notes.txt").write_text("keep\n")
    for step in (10, 20, 30):
        _save(tmp_path, step, state)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000020", "step-00000030"]
    assert (user_folder / "notes.txt").read_text() == "keep\n"
    assert (tmp_path / "step-notes.txt").read_text() == "keep\n"


def test_a_killed_save_leaves_no_temp_folder_behind_after_the_next_save(tmp_path):
    """SIGKILL skips the cleanup: the next save sweeps the dead save's temp folder."""
    state = _training_state()
    _save(tmp_path, 10, state)
    dead = tmp_path / ".tmp-killed"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half a file")
    _save(tmp_path, 20, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000010", "step-00000020"]


def _disk_full_at_optimizer_save(monkeypatch, error: Exception) -> None:
    """torch.save writes part of optimizer.pt, then the disk is full (free space: 0)."""
    def full_disk_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half")
        raise error

    real = shutil.disk_usage
    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=0))


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
    type("SafetensorError", (Exception,), {})("Error while serializing: IoError(StorageFull)"),
], ids=["os-error", "torch-zip-writer", "safetensors"])
def test_a_full_disk_keeps_the_previous_checkpoint_trusted(tmp_path, monkeypatch, error):
    state = _training_state()
    _save(tmp_path, 10, state)
    _disk_full_at_optimizer_save(monkeypatch, error)
    with pytest.raises(CheckpointNotSaved) as raised:
        _save(tmp_path, 20, state)
    message = str(raised.value)
    assert "step-00000020 not saved" in message and "step-00000010 is kept" in message
    assert "disk full" in message and len(message.splitlines()) == 1
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000010"]  # no partial folder
    assert latest_checkpoint(tmp_path).step == 10


def test_free_space_warning_when_the_disk_is_too_small(tmp_path, monkeypatch, capsys):
    model = torch.nn.Linear(100, 100)  # 10,100 parameters: 121,200 bytes a checkpoint
    assert checkpoint_bytes(model) == 10_100 * 4 * 3
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=300_000))
    assert warn_if_low_space(tmp_path / "run" / "checkpoints", model) is not None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: 300.0 KB free under") and "363.6 KB" in line
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=400_000))
    assert low_space_warning(tmp_path / "run" / "checkpoints", model) is None


# The CLI as a user meets a full disk: `run` on a disk with little free space, whose second
# checkpoint's write fails with ENOSPC; then, space freed, the same command again.
FULL_DISK_RUN = """
import errno, os, shutil, sys
import torch
from factrecall_bench.cli import main

real_disk_usage, real_save, calls = shutil.disk_usage, torch.save, []
shutil.disk_usage = lambda path: real_disk_usage(path)._replace(free=1000)

def save(obj, path, *args, **kwargs):
    calls.append(path)
    if len(calls) == 3:  # the second checkpoint's optimizer.pt
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real_save(obj, path, *args, **kwargs)

torch.save = save
sys.argv = ["factrecall-bench", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_run_on_a_full_disk_warns_keeps_the_last_checkpoint_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    args = ("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(runs), "--no-check")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, "-c", FULL_DISK_RUN, *args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert full.returncode != 0
    warnings = [line for line in full.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 1.0 KB free under"), full.stderr
    (run_folder,) = [path.parent for path in runs.glob("micro/*/config.json")]
    (failed,) = [e for e in read_events(run_folder / "events.jsonl").events
                 if e["event"] == "run_failed"]
    assert "disk full" in failed["reason"] and "step-00000030" in failed["reason"]
    assert sorted(p.name for p in (run_folder / "checkpoints").iterdir()) == ["step-00000015"]
    assert latest_checkpoint(run_folder / "checkpoints").step == 15

    completed = run_cli(*args)  # space freed: the same command resumes from the kept checkpoint
    assert completed.returncode == 0, completed.stderr
    assert "warning: " not in completed.stderr
    resumed = [e for e in read_events(run_folder / "events.jsonl").events if e["event"] == "resume"]
    assert [e["step"] for e in resumed] == [15]


def test_an_event_the_full_disk_cut_short_leaves_no_half_line(tmp_path, monkeypatch):
    log = EventLog(tmp_path / "events.jsonl", "r")
    log.emit("warning", message="written before the disk filled")
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        log.emit("step", phase="bio", step=1, loss=1.0, lr=1e-3, tokens_per_s=10.0)
    monkeypatch.setattr(os, "fsync", real_fsync)
    log.emit("run_failed", reason="disk full")
    read = read_events(tmp_path / "events.jsonl")
    assert read.bad_lines == []
    assert [event["event"] for event in read.events] == ["warning", "run_failed"]
