"""Shared helpers of the benchmark scripts: the CPU suite's run config and data, the command line,
timing, and results written atomically to benchmarks/results/<name>.json with where they were made.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS_DIR = BENCHMARKS / "results"
DATA_ROOT = REPO / "runs" / "bench-data"
"""Cached datasets of the benchmarks (`runs/` is git-ignored; reused across runs)."""

sys.path.insert(0, str(REPO))  # run from a checkout, installed or not

from factrecall_bench.batching import PhasePlan  # noqa: E402
from factrecall_bench.config import RunConfig  # noqa: E402
from factrecall_bench.data.facts import FactData, load_fact_data  # noqa: E402
from factrecall_bench.environment import environment_record  # noqa: E402
from factrecall_bench.events import EventLog  # noqa: E402
from factrecall_bench.io import write_json_atomic  # noqa: E402
from factrecall_bench.runner import accelerator_for  # noqa: E402
from factrecall_bench.suite import load_suite  # noqa: E402
from factrecall_bench.train import Trainer  # noqa: E402

SCHEMA_VERSION = 1
LOAD_AT_START = os.getloadavg()[0]
"""The 1-minute load average when the script started (another process skews every timing)."""


def parse_args(description: str, argv: list[str] | None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every script has: --smoke, --threads, --out-dir, --data-root."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings: checks the script runs, measures nothing useful")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def cpu_suite_config(strategy: str = "mixed", seed: int = 0, data: dict[str, Any] | None = None,
                     model: dict[str, Any] | None = None, train: dict[str, Any] | None = None
                     ) -> RunConfig:
    """One run of the shipped `cpu` suite, with optional overrides of its data/model/train."""
    suite = load_suite("cpu")
    config = next(c for c in suite.runs if c.strategy == strategy and c.seed == seed)
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, **(data or {})),
        model=dataclasses.replace(config.model, **(model or {})),
        train=dataclasses.replace(config.train, **(train or {})))


def smoke_overrides() -> dict[str, dict[str, Any]]:
    """A config small enough that every script runs in a few seconds."""
    return {"data": {"n_people": 12, "bio_variants": 1, "templates_per_attribute": 2},
            "model": {"n_layer": 1, "d_model": 16, "n_head": 2, "d_ff": 32}}


def load_data(config: RunConfig, data_root: Path) -> FactData:
    return load_fact_data(config.data, config.model, config.eval, data_root)


class NoSaveTrainer(Trainer):
    """Our Trainer without its checkpoints (a baseline that saves nothing is timed against it)."""

    def _checkpoint(self, *args: Any, **kwargs: Any) -> None:
        return None


def train_plans(model: torch.nn.Module, data: FactData, config: RunConfig,
                plans: list[PhasePlan]) -> dict[str, float]:
    """One `Trainer.run` over `plans` on CPU; its wall time and non-pad tokens."""
    accelerator = accelerator_for("no")
    with tempfile.TemporaryDirectory() as workdir:
        trainer = NoSaveTrainer(
            model=accelerator.prepare_model(model), plans=plans, examples=data.examples,
            train=config.train, accelerator=accelerator,
            events=EventLog(Path(workdir) / "events.jsonl", "bench"),
            checkpoint_dir=Path(workdir) / "checkpoints", pad_id=data.pad_id)
        wall, result = seconds(trainer.run)
    return {"seconds": wall, "tokens": result["train_tokens"], "steps": trainer.total_steps}


def seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call, and what it returned."""
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def machine() -> dict[str, Any]:
    """The CPU, its cores, and how loaded the machine was (other processes skew timings)."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
            "load_average_1m": {"start": round(LOAD_AT_START, 2),
                                "end": round(os.getloadavg()[0], 2)}}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_result(name: str, payload: dict[str, Any], out_dir: Path) -> Path:
    """`<out_dir>/<name>.json`, written atomically, with machine, versions, threads, git, date."""
    record = {"schema_version": SCHEMA_VERSION, "benchmark": name, **payload,
              "machine": machine(), "environment": environment_record(),
              "torch_threads": torch.get_num_threads(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    path = out_dir / f"{name}.json"
    write_json_atomic(path, record)
    return path
