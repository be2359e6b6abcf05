"""Resumable checkpoints: written to a temp folder and renamed, verified by checksums on load.

A checkpoint holds the model (safetensors), the optimizer and scheduler state (loaded with
`weights_only=True`) and `meta.json` (step, checksums). A corrupted or partial checkpoint is
skipped in favour of the previous one; the last two are kept.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from factrecall_bench.io import replace_dir_atomic, write_json_atomic

KEEP = 2
FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    def load_model(self, model: torch.nn.Module) -> None:
        load_model(model, str(self.path / "model.safetensors"))

    def load_optimizer(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        optimizer.load_state_dict(torch.load(self.path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(self.path / "scheduler.pt", weights_only=True))


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, phase_done: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json_atomic(tmp / "meta.json", {"step": step, "phase_done": phase_done,
                                              "sha256": {f: _sha256(tmp / f) for f in FILES}})
        replace_dir_atomic(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(folder)
    return final


def _prune(folder: Path) -> None:
    for old in sorted(folder.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


def verify(path: Path) -> Checkpoint | None:
    """The checkpoint at `path` if its files match their recorded checksums, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text("utf-8"))
        if all(_sha256(path / name) == meta["sha256"][name] for name in FILES):
            return Checkpoint(path, int(meta["step"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest valid checkpoint; corrupted ones are skipped (and reported by the caller)."""
    for candidate in sorted(folder.glob("step-*"), reverse=True):
        checkpoint = verify(candidate)
        if checkpoint is not None:
            return checkpoint
    return None


def corrupted_checkpoints(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.glob("step-*")) if verify(path) is None]
