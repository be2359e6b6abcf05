"""Resumable checkpoints: written to a temp folder and renamed, verified by checksums on load.

A checkpoint holds the model (safetensors), the optimizer and scheduler state (loaded with
`weights_only=True`) and `meta.json` (step, checksums). A corrupted or partial checkpoint is
skipped in favour of the previous one; the last two are kept.

Under FSDP2 every process holds a shard: all of them gather the whole model and optimizer state
to the main process (torch.distributed.checkpoint's full state dicts), which writes the same
files; the optimizer state is then keyed by parameter name (meta.json: "optimizer_keys") and is
loaded back into any layout, sharded or not. Every process loads the model before sharding.
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
from safetensors.torch import load_model, save_file, save_model

from factrecall_bench.errors import UserError
from factrecall_bench.io import replace_dir_atomic, write_json_atomic

KEEP = 2
FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt")
RECORDER_FILE = "trace-recorder.safetensors"
"""The training-mode trace's summed scores, when the run records them (checksummed like FILES)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    optimizer_keys: str = "index"
    """"index": torch's optimizer.state_dict(); "name": a full state dict keyed by parameter name
    (written under FSDP2)."""

    def load_model(self, model: torch.nn.Module) -> None:
        """Into the whole (not yet sharded) model."""
        load_model(model, str(self.path / "model.safetensors"))

    def load_optimizer(self, optimizer: torch.optim.Optimizer, scheduler: Any,
                       model: torch.nn.Module) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        from factrecall_bench.distributed import is_sharded

        state = torch.load(self.path / "optimizer.pt", weights_only=True)
        if self.optimizer_keys == "name":
            set_optimizer_state_dict(model, optimizer, state,
                                     options=StateDictOptions(full_state_dict=True))
        elif is_sharded(model):
            raise UserError(f"checkpoint {self.path} was written without FSDP: resume it without "
                            "FSDP (or delete the run folder to start again)")
        else:
            optimizer.load_state_dict(state)
        scheduler.load_state_dict(torch.load(self.path / "scheduler.pt", weights_only=True))

    def load_recorder(self, recorder: Any) -> None:
        """The training-mode trace's scores summed up to this checkpoint, into `recorder`."""
        from safetensors.torch import load_file

        path = self.path / RECORDER_FILE
        if not path.exists():
            raise UserError(f"checkpoint {self.path} holds no training-mode trace scores: "
                            "delete the run folder to start again")
        recorder.load_state_dict(load_file(str(path)))


@dataclass(frozen=True)
class GatheredState:
    """A sharded model's whole model and optimizer state (on the main process; empty elsewhere)."""

    model: dict[str, Any]
    optimizer: dict[str, Any]


def gather_sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                         ) -> GatheredState:
    """Every process must call this (the gather is collective)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return GatheredState(get_model_state_dict(model, options=options),
                         get_optimizer_state_dict(model, optimizer, options=options))


def _distinct_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tied weights (one storage, two names) copied apart: safetensors refuses shared storage."""
    seen: set[int] = set()
    distinct = {}
    for name, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        distinct[name] = tensor.clone() if pointer in seen else tensor.contiguous()
        seen.add(pointer)
    return distinct


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, phase_done: bool,
                    gathered: GatheredState | None = None,
                    recorder_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint atomically; `gathered` replaces model and optimizer state under FSDP2;
    `recorder_state` is the training-mode trace's (TrainingTraceRecorder.state_dict())."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    try:
        if gathered is None:
            save_model(model, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        else:
            save_file(_distinct_storage(gathered.model), str(tmp / "model.safetensors"))
            torch.save(gathered.optimizer, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        files: tuple[str, ...] = FILES
        if recorder_state is not None:
            save_file(recorder_state, str(tmp / RECORDER_FILE))
            files = (*FILES, RECORDER_FILE)
        write_json_atomic(tmp / "meta.json", {
            "step": step, "phase_done": phase_done,
            "optimizer_keys": "index" if gathered is None else "name",
            "sha256": {f: _sha256(tmp / f) for f in files}})
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
        recorded = meta["sha256"]
        if set(FILES) <= set(recorded) and all(_sha256(path / name) == digest
                                               for name, digest in recorded.items()):
            return Checkpoint(path, int(meta["step"]), str(meta.get("optimizer_keys", "index")))
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
