"""A suite's runs, side by side in worker processes (one thread each on a small CPU box, one GPU
each where there are GPUs).

Workers only train and write their run folders; the parent watches the event logs (the same
files the TUI reads) to report progress.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from factrecall_bench.config import RunConfig
from factrecall_bench.runner import RunOutcome, run_dir, run_one


@dataclass(frozen=True)
class SuiteOutcome:
    outcomes: list[RunOutcome]

    @property
    def results(self) -> list[dict]:
        return [o.result for o in self.outcomes if o.result is not None]

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


def _run_with_trace(config: RunConfig, runs_root: Path) -> RunOutcome:
    from factrecall_bench.trace_hook import trace_hook_for, training_recorder_for

    return run_one(config, runs_root, after_eval=trace_hook_for(config),
                   recorder_for=training_recorder_for)


def _worker(config: RunConfig, runs_root: Path, threads: int) -> RunOutcome:
    torch.set_num_threads(threads)
    return _run_with_trace(config, runs_root)


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [device.strip() for device in listed.split(",") if device.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def _claim_gpu(slots: Any) -> None:
    """Worker start-up: take one GPU (before CUDA is initialized in this process)."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def worker_pool(jobs: int, gpus: list[str]) -> ProcessPoolExecutor:
    """`jobs` spawned workers; with GPUs, each worker sees one of them (round robin)."""
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for worker in range(jobs):
        slots.put(gpus[worker % len(gpus)] if gpus else None)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_claim_gpu,
                               initargs=(slots,))


def run_configs(configs: list[RunConfig], runs_root: Path, jobs: int = 1) -> SuiteOutcome:
    """Run every config (finished ones are skipped inside `run_one`), in the configs' order."""
    if jobs <= 1:
        return SuiteOutcome([_run_with_trace(config, runs_root) for config in configs])
    with worker_pool(jobs, visible_gpus()) as pool:
        futures = [pool.submit(_worker, config, runs_root, threads_per_job(jobs))
                   for config in configs]
        return SuiteOutcome([future.result() for future in futures])


def event_paths(configs: list[RunConfig], runs_root: Path) -> dict[str, Path]:
    return {config.run_id: run_dir(runs_root, config) / "events.jsonl" for config in configs}
