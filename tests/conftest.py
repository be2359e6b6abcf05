"""Shared fixtures: small datasets, the tiny test suite, a way to run the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from factrecall_bench.config import DataSpec
from factrecall_bench.data.dataset import generate_dataset
from factrecall_bench.events import read_events

TESTS = Path(__file__).parent
ROOT = TESTS.parent
"""The checkout: test modules sit at several depths under tests/, so they locate files from here."""
TINY_SUITE = TESTS / "data" / "suites" / "tiny.toml"
MICRO_SUITE = TESTS / "data" / "suites" / "micro.toml"
"""One run of a few seconds: the runner's skip / resume / kill tests and the multi-process ones."""

torch.set_num_threads(1)

pytest_plugins = ["tests.tui.recorded"]
"""The recorded TUI runs' fixtures (`runs_copy`, `state`), for tests/tui/ and the Pilot tests in
tests/integration/test_tui.py."""


def ctrl_c_as_at_a_terminal() -> None:
    """A `preexec_fn` for a CLI that a test will Ctrl-C: SIGINT at its default, as a terminal's
    foreground job has it. The test process may have inherited it ignored (a CI harness that
    starts its script with `&`), and the CLI rightly keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `factrecall-bench` entry point in a subprocess (as a user runs it); `env` adds to
    the environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "factrecall_bench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


TRAINING_TRACE = ('\n[trace]\nenabled = true\nmode = "training"\ntop_k = [0.05]\n'
                  'ablation_random_draws = 1\n')


def tiny_config(strategy: str, seed: int = 0, suite_name: str | None = None):
    """The tiny suite's run of `strategy` and `seed`; with `suite_name`, the same run listed by a
    suite of that name (the same reuse identity, another run id and folder)."""
    import tomllib

    from factrecall_bench.suite import load_suite, parse_suite

    suite = (parse_suite({**tomllib.loads(TINY_SUITE.read_text()), "name": suite_name}, suite_name)
             if suite_name else load_suite(str(TINY_SUITE)))
    return next(c for c in suite.runs if c.strategy == strategy and c.seed == seed)


def write_finished_run(runs_root: Path, config, metrics: dict | None = None):
    """A run folder that reads as `config`'s finished run: its config.json and a small
    result.json with its config hash (nothing was trained)."""
    from factrecall_bench.config import config_hash
    from factrecall_bench.runfolder import RESULT_SCHEMA_VERSION, RunFolder

    folder = RunFolder.of(runs_root, config)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_run_config(config)
    folder.write_result({"schema_version": RESULT_SCHEMA_VERSION, "run_id": config.run_id,
                         "config_hash": config_hash(config), "metrics": metrics or {}})
    return folder

def training_trace_suite(folder: Path) -> str:
    """The micro suite with the gradient trace in training mode."""
    path = folder / "micro-training-trace.toml"
    path.write_text(MICRO_SUITE.read_text() + TRAINING_TRACE)
    return str(path)


def micro_result(runs: Path) -> dict:
    """result.json of the one run of the micro suite under `runs`."""
    (path,) = runs.glob("micro/*/result.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def micro_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The micro suite's run, trained once in one process without interruption."""
    runs = tmp_path_factory.mktemp("micro-uninterrupted")
    completed = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(runs), "--no-check")
    assert completed.returncode == 0, completed.stderr
    return micro_result(runs)


def wait_for_step(events_file: Path, process: subprocess.Popen, step: int,
                  timeout: float = 300) -> None:
    """Wait until `process` has logged optimizer step `step` (it must not end before)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = read_events(events_file).events if events_file.exists() else []
        if any(e["event"] == "step" and e["step"] >= step for e in events):
            return
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in time")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """A device mesh over a process group of one (gloo, CPU): sharded (DTensor) code paths run in
    one process; what changes with several processes needs tests/integration/test_fsdp.py."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    started = not dist.is_initialized()
    if started:
        store = tmp_path_factory.mktemp("gloo") / "store"
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    if started:
        dist.destroy_process_group()
