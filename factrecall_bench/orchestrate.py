"""A suite's runs, side by side in worker processes (one thread each on a small CPU box).

Workers only train and write their run folders; the parent watches the event logs (the same
files the TUI reads) to report progress.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from factrecall_bench.config import RunConfig
from factrecall_bench.runner import RunOutcome, run_dir, run_one

WatchCallback = Callable[[list[RunConfig], list[RunOutcome]], None]


@dataclass(frozen=True)
class SuiteOutcome:
    outcomes: list[RunOutcome]

    @property
    def results(self) -> list[dict]:
        return [o.result for o in self.outcomes if o.result is not None]

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


def _worker(config: RunConfig, runs_root: Path, threads: int) -> RunOutcome:
    torch.set_num_threads(threads)
    from factrecall_bench.trace_hook import trace_hook_for

    return run_one(config, runs_root, after_eval=trace_hook_for(config))


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def run_configs(configs: list[RunConfig], runs_root: Path, jobs: int = 1,
                on_tick: WatchCallback | None = None) -> SuiteOutcome:
    """Run every config (finished ones are skipped inside `run_one`)."""
    if jobs <= 1:
        return _run_serially(configs, runs_root, on_tick)
    outcomes: list[RunOutcome] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending: set[Future[RunOutcome]] = {
            pool.submit(_worker, config, runs_root, threads_per_job(jobs)) for config in configs}
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            outcomes.extend(future.result() for future in done)
            if on_tick is not None:
                on_tick(configs, outcomes)
    order = {config.run_id: index for index, config in enumerate(configs)}
    return SuiteOutcome(sorted(outcomes, key=lambda outcome: order[outcome.run_id]))


def _run_serially(configs: list[RunConfig], runs_root: Path, on_tick: WatchCallback | None
                  ) -> SuiteOutcome:
    from factrecall_bench.trace_hook import trace_hook_for

    outcomes: list[RunOutcome] = []
    for config in configs:
        outcomes.append(run_one(config, runs_root, after_eval=trace_hook_for(config)))
        if on_tick is not None:
            on_tick(configs, outcomes)
    return SuiteOutcome(outcomes)


def event_paths(configs: list[RunConfig], runs_root: Path) -> dict[str, Path]:
    return {config.run_id: run_dir(runs_root, config) / "events.jsonl" for config in configs}
