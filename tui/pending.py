"""The runs a suite will train, known before any of them starts: what the TUI shows as "pending"
until a run's folder appears (only when it follows one suite, `tui --suite`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlannedRun:
    """One run of the suite, as `run` would name its folder."""

    run_id: str
    suite: str
    variant: str
    strategy: str
    model: str
    seed: int
    folder: Path


def suite_plan(suite: str, runs_dir: Path) -> list[PlannedRun]:
    """Every run of the suite (by name or path), as `run --suite` expands it. Slow (it loads the
    suite's data identity): call it from a worker."""
    from factrecall_bench.runner import run_dir
    from factrecall_bench.suite import load_suite

    return [PlannedRun(c.run_id, c.suite, c.variant, c.strategy, c.model.name, c.seed,
                       run_dir(runs_dir, c)) for c in load_suite(suite).runs]
