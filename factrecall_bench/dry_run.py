"""`run --dry-run`: each run of a suite (or variation) to train or reused, and where its report
would go, found without training, writing or locking anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factrecall_bench.config import RunConfig
from factrecall_bench.runfolder import is_finished, reusable_source, run_dir, suite_folder
from factrecall_bench.suite import Suite


def dry_run_plan(suite: Suite, runs_dir: Path) -> dict[str, Any]:
    """The suite's runs, each `train` or `reuse` (finished with the same config, as `run` would
    skip it, or finished elsewhere in the runs folder training the same thing: `trained_as`
    names that run), and the report it would write."""
    runs = [_run_plan(config, runs_dir) for config in suite.runs]
    return {"suite": suite.report_name, "overrides": list(suite.overrides),
            "report": str(suite_folder(runs_dir, suite.report_name).report),
            "to_train": sum(run["action"] == "train" for run in runs), "runs": runs}


def _run_plan(config: RunConfig, runs_dir: Path) -> dict[str, Any]:
    source = None if is_finished(config, runs_dir) else reusable_source(runs_dir, config)
    trained_as = source.path.relative_to(runs_dir).as_posix() if source is not None else ""
    action = "reuse" if trained_as or is_finished(config, runs_dir) else "train"
    return {"run_id": config.run_id, "action": action, "trained_as": trained_as,
            "folder": str(run_dir(runs_dir, config))}


def dry_run_lines(plans: list[dict[str, Any]]) -> list[str]:
    """What a person reads: a line per suite, then a line per run."""
    lines = []
    for plan in plans:
        reused = len(plan["runs"]) - plan["to_train"]
        lines.append(f"suite {plan['suite']}: {plan['to_train']} of {len(plan['runs'])} runs to "
                     f"train, {reused} reused; report: {plan['report']}")
        lines += [_run_line(run) for run in plan["runs"]]
    return lines


def _run_line(run: dict[str, Any]) -> str:
    trained_as = f" (trained as {run['trained_as']})" if run["trained_as"] else ""
    return f"  {run['action']:6s} {run['run_id']}{trained_as}"
