"""Shared fixtures: small datasets, the tiny test suite, a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factrecall_bench.config import DataSpec
from factrecall_bench.data.dataset import generate_dataset

TESTS = Path(__file__).parent
TINY_SUITE = TESTS / "data" / "suites" / "tiny.toml"

torch.set_num_threads(1)


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def small_spec() -> DataSpec:
    return DataSpec(n_people=30, seed=3, bio_variants=3, permute=True, fullname=False,
                    templates_per_attribute=0)


@pytest.fixture(scope="session")
def small_dataset(small_spec: DataSpec):
    return generate_dataset(small_spec)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `factrecall-bench` entry point in a subprocess (as a user runs it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "factrecall_bench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)
