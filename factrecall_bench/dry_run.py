"""`run --dry-run`: each run of a suite (or variation) to train or reused, and where its report
would go, found without training, writing or locking anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factrecall_bench.runfolder import is_finished, run_dir, suite_folder
from factrecall_bench.suite import Suite


def dry_run_plan(suite: Suite, runs_dir: Path) -> dict[str, Any]:
    """The suite's runs, each `train` or `reuse` (finished with the same config, as `run` would
    skip it), and the report it would write."""
    runs = [{"run_id": config.run_id,
             "action": "reuse" if is_finished(config, runs_dir) else "train",
             "folder": str(run_dir(runs_dir, config))} for config in suite.runs]
    return {"suite": suite.report_name, "overrides": list(suite.overrides),
            "report": str(suite_folder(runs_dir, suite.report_name).report),
            "to_train": sum(run["action"] == "train" for run in runs), "runs": runs}


def dry_run_lines(plans: list[dict[str, Any]]) -> list[str]:
    """What a person reads: a line per suite, then a line per run."""
    lines = []
    for plan in plans:
        reused = len(plan["runs"]) - plan["to_train"]
        lines.append(f"suite {plan['suite']}: {plan['to_train']} of {len(plan['runs'])} runs to "
                     f"train, {reused} reused; report: {plan['report']}")
        lines += [f"  {run['action']:6s} {run['run_id']}" for run in plan["runs"]]
    return lines
