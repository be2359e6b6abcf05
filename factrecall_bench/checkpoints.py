"""Resumable checkpoints: written to a temp folder and renamed, verified by checksums on load.

A checkpoint holds the model (safetensors), the optimizer and scheduler state (loaded with
`weights_only=True`) and `meta.json` (step, checksums). A corrupted or partial checkpoint is
skipped in favour of the previous one; the last two are kept. A save that fails (a full disk)
leaves no partial folder and keeps the previous checkpoint; only folders this module wrote (named
`step-NNNNNNNN`, holding only checkpoint files) are ever replaced or pruned.

Under FSDP2 every process holds a shard: all of them gather the whole model and optimizer state
to the main process (torch.distributed.checkpoint's full state dicts), which writes the same
files; the optimizer state is then keyed by parameter name (meta.json: "optimizer_keys") and is
loaded back into any layout, sharded or not. Every process loads the model before sharding.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file, save_model

from factrecall_bench.errors import UserError
from factrecall_bench.io import replace_dir_atomic, write_json_atomic
from factrecall_bench.runfolder import (
    CHECKPOINT_FILES,
    CHECKPOINT_META,
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_RECORDER,
    CHECKPOINT_SCHEDULER,
)

KEEP = 2
FILES = CHECKPOINT_FILES
RECORDER_FILE = CHECKPOINT_RECORDER
"""The training-mode trace's summed scores, when the run records them (checksummed like FILES)."""
OWN_FILES = frozenset((*FILES, RECORDER_FILE, CHECKPOINT_META))
STEP_NAME = re.compile(r"step-\d{8}")
TEMP_PREFIX = ".tmp-"
ADAMW_MOMENTS = 2
"""exp_avg and exp_avg_sq: each as large as the weights."""


class CheckpointNotSaved(OSError):
    """A save failed (typically a full disk); nothing partial was left, earlier checkpoints stay.
    `errno` is the cause's (ENOSPC for a full disk), `filename` the checkpoint not written."""

    def __init__(self, message: str, errno_code: int | None, checkpoint: Path):
        super().__init__(message)
        self.errno, self.filename = errno_code, str(checkpoint)
        self.strerror = os.strerror(errno_code) if errno_code else None

    def __str__(self) -> str:
        return str(self.args[0])


def _holds_only_checkpoint_files(path: Path) -> bool:
    """Every entry is a checkpoint file or write_json_atomic's temp file for meta.json."""
    return path.is_dir() and not path.is_symlink() and all(
        entry.name in OWN_FILES or entry.name.startswith(f".{CHECKPOINT_META}.")
        for entry in path.iterdir())


def is_checkpoint_folder(path: Path) -> bool:
    """Written by save_checkpoint (its name and its files): the only folders it replaces or
    prunes."""
    return STEP_NAME.fullmatch(path.name) is not None and _holds_only_checkpoint_files(path)


def checkpoint_folders(folder: Path) -> list[Path]:
    """This module's checkpoint folders in `folder`, oldest first (valid or not)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if is_checkpoint_folder(path))


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
        load_model(model, str(self.path / CHECKPOINT_MODEL))

    def load_optimizer(self, optimizer: torch.optim.Optimizer, scheduler: Any,
                       model: torch.nn.Module) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        from factrecall_bench.distributed import is_sharded

        state = torch.load(self.path / CHECKPOINT_OPTIMIZER, weights_only=True)
        if self.optimizer_keys == "name":
            set_optimizer_state_dict(model, optimizer, state,
                                     options=StateDictOptions(full_state_dict=True))
        elif is_sharded(model):
            raise UserError(f"checkpoint {self.path} was written without FSDP: resume it without "
                            "FSDP (or delete the run folder to start again)")
        else:
            optimizer.load_state_dict(state)
        scheduler.load_state_dict(torch.load(self.path / CHECKPOINT_SCHEDULER, weights_only=True))

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
    `recorder_state` is the training-mode trace's (TrainingTraceRecorder.state_dict()). A failed
    write raises CheckpointNotSaved and leaves the folder as it was."""
    final = folder / f"step-{step:08d}"
    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=TEMP_PREFIX))
        files = _write_files(tmp, model, optimizer, scheduler, gathered, recorder_state)
        write_json_atomic(tmp / CHECKPOINT_META, {
            "step": step, "phase_done": phase_done,
            "optimizer_keys": "index" if gathered is None else "name",
            "sha256": {f: _sha256(tmp / f) for f in files}})
        replace_dir_atomic(tmp, final, is_ours=is_checkpoint_folder)
    except BaseException as error:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        full = _disk_full(error, folder, model)
        if isinstance(error, OSError) or full:
            code = errno.ENOSPC if full else getattr(error, "errno", None)
            raise CheckpointNotSaved(_not_saved_message(folder, final, model, error), code,
                                     final) from error
        raise
    _prune(folder)
    return final


def _write_files(tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, gathered: GatheredState | None,
                 recorder_state: dict[str, torch.Tensor] | None) -> tuple[str, ...]:
    """The checkpoint's files, written into `tmp`; returns their names."""
    if gathered is None:
        save_model(model, str(tmp / CHECKPOINT_MODEL))
        torch.save(optimizer.state_dict(), tmp / CHECKPOINT_OPTIMIZER)
    else:
        save_file(_distinct_storage(gathered.model), str(tmp / CHECKPOINT_MODEL))
        torch.save(gathered.optimizer, tmp / CHECKPOINT_OPTIMIZER)
    torch.save(scheduler.state_dict(), tmp / CHECKPOINT_SCHEDULER)
    if recorder_state is None:
        return FILES
    save_file(recorder_state, str(tmp / RECORDER_FILE))
    return (*FILES, RECORDER_FILE)


def _disk_full(error: BaseException, folder: Path, model: torch.nn.Module) -> bool:
    """ENOSPC; or, since torch.save (a RuntimeError from its zip writer) and safetensors (a
    SafetensorError) do not raise OSError for it, any error with less free space left than a
    checkpoint needs."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, Exception) or isinstance(error, UserError):
        return False
    free = _free_bytes(folder)
    return free is not None and free < checkpoint_bytes(model)


def _not_saved_message(folder: Path, final: Path, model: torch.nn.Module,
                       error: BaseException) -> str:
    reason = (error.strerror if isinstance(error, OSError) and error.strerror
              else (str(error).strip().splitlines() or [type(error).__name__])[0])
    free = _free_bytes(folder)
    if free is not None and free < checkpoint_bytes(model):
        reason = f"{reason} (disk full: {_size(free)} free, a checkpoint needs ~" \
                 f"{_size(checkpoint_bytes(model))})"
    previous = latest_checkpoint(folder)
    kept = (f"the previous checkpoint {previous.path.name} is kept: free disk space and rerun to "
            "resume from it" if previous is not None else "no earlier checkpoint to resume from")
    return f"checkpoint {final} not saved: {reason}; {kept}"


def _prune(folder: Path) -> None:
    for old in checkpoint_folders(folder)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    # Temp folders of saves killed mid-write (SIGKILL skips the cleanup above) would hold disk
    # space forever; the run's lock means no other save is writing one now.
    for stale in folder.glob(f"{TEMP_PREFIX}*"):
        if _holds_only_checkpoint_files(stale):
            shutil.rmtree(stale, ignore_errors=True)


# --------------------------------------------------------------- disk space


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About one checkpoint's size: the weights and AdamW's two moments, in the weights' dtype
    (the scheduler and meta.json are a few KB)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights * (1 + ADAMW_MOMENTS)


def checkpoint_space_needed(folder: Path, model: torch.nn.Module) -> int:
    """Free space a run's checkpoints in `folder` still need: KEEP kept at once plus the one being
    written, less those already there."""
    missing = max(KEEP + 1 - len(checkpoint_folders(folder)), 1)
    return missing * checkpoint_bytes(model)


def low_space_warning(folder: Path, model: torch.nn.Module) -> str | None:
    """One line if the disk under `folder` has less free space than the checkpoints need."""
    needed, free = checkpoint_space_needed(folder, model), _free_bytes(folder)
    if free is None or free >= needed:
        return None
    return (f"warning: {_size(free)} free under {folder}, but this run's checkpoints need about "
            f"{_size(needed)} (weights + AdamW moments, {KEEP} kept + 1 being written): "
            "free disk space or choose another --runs-dir")


def warn_if_low_space(folder: Path, model: torch.nn.Module) -> str | None:
    """Print low_space_warning on stderr (main process only) and return it; call at run start."""
    from factrecall_bench.distributed import is_main

    warning = low_space_warning(folder, model) if is_main() else None
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    return warning


def _free_bytes(folder: Path) -> int | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"


def verify(path: Path) -> Checkpoint | None:
    """The checkpoint at `path` if its files match their recorded checksums, else None."""
    try:
        meta = json.loads((path / CHECKPOINT_META).read_text("utf-8"))
        recorded = meta["sha256"]
        if set(FILES) <= set(recorded) and all(_sha256(path / name) == digest
                                               for name, digest in recorded.items()):
            return Checkpoint(path, int(meta["step"]), str(meta.get("optimizer_keys", "index")))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest valid checkpoint; corrupted ones are skipped (and reported by the caller)."""
    for candidate in sorted(_named_like_checkpoints(folder), reverse=True):
        checkpoint = verify(candidate)
        if checkpoint is not None:
            return checkpoint
    return None


def corrupted_checkpoints(folder: Path) -> list[Path]:
    return [path for path in sorted(_named_like_checkpoints(folder)) if verify(path) is None]


def _named_like_checkpoints(folder: Path) -> list[Path]:
    return [path for path in folder.glob("step-*") if STEP_NAME.fullmatch(path.name)]
