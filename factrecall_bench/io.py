"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one.

Nothing here deletes or replaces what the project did not write: a file never replaces a folder,
and a folder is replaced only when the caller's `is_ours` says the project wrote it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factrecall_bench.errors import UserError


def ensure_writable_folder(folder: Path, what: str) -> None:
    """Make `folder` if needed and check a file can be written in it, before any work: a path
    that is a file, or a folder that cannot be written, is one UserError line."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder: name a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{what} {folder} is not writable: {error.strerror}") from error


def check_folder_can_be_made(folder: Path, what: str) -> None:
    """Check, without making anything, that `folder` is or can become a folder this process can
    write in: a file in its place (or in an ancestor's) or a read-only ancestor is one UserError
    line. For a folder written only after long work (a baseline after training)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {folder}: {existing} is a file, not a folder: name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder} is not writable: {existing} is read-only")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path` (a file, never a
    folder: a folder there is refused with UserError)."""
    if path.is_dir():
        raise UserError(f"{path} is a folder: name a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; results are meant to be shared
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def replace_dir_atomic(tmp_dir: Path, final_dir: Path, is_ours: Callable[[Path], bool]) -> None:
    """Move a fully written temp folder into place. A folder already there is replaced only if
    `is_ours(final_dir)`; anything else there (a file, a link, someone's folder) is refused with
    UserError and left as it is."""
    if final_dir.is_symlink() or final_dir.exists():
        if final_dir.is_symlink() or not final_dir.is_dir() or not is_ours(final_dir):
            raise UserError(f"{final_dir} already exists and was not written by factrecall-bench:"
                            " not replacing it")
        # A fresh, uniquely named trash folder: a fixed name could be someone's folder.
        trash = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.old-"))
        os.replace(final_dir, trash / final_dir.name)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
