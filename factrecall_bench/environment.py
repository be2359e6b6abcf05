"""What a result records about where it was made: versions, git revision, hardware, threads."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "scipy", "numpy",
            "factrecall-bench")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@cache
def git_revision() -> str:
    """The project's git revision (with `+dirty` for uncommitted changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                  text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


def hardware_class() -> str:
    """A coarse label that baselines are keyed by: results differ across these."""
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.machine()}"


def environment_record() -> dict[str, Any]:
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {package: _version(package) for package in PACKAGES},
        "git_revision": git_revision(), "hardware": hardware_class(),
        "threads": torch.get_num_threads(),
    }
