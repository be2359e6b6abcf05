"""`baseline inspect`: what a stored baseline holds (suite, hardware class, git revision, runs),
read and validated like every baseline, printed as a few lines or one JSON document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factrecall_bench.errors import UserError
from factrecall_bench.verdicts.baselines import BaselineError, read_baseline


def inspection_text(name_or_path: str, baselines_dir: Path, as_json: bool) -> str:
    """What `baseline inspect` prints: the summary's lines, or it as one JSON document."""
    path = baseline_file(name_or_path, baselines_dir)
    summary = baseline_summary(read_for_inspection(path), path)
    return json.dumps(summary, indent=2, sort_keys=True) if as_json else "\n".join(
        summary_lines(summary))


def baseline_file(name_or_path: str, baselines_dir: Path) -> Path:
    """A path to a `.json` file as given; a suite name as `BASELINES_DIR/NAME.json`."""
    if name_or_path.endswith(".json"):
        return Path(name_or_path)
    return baselines_dir / f"{name_or_path}.json"


def read_for_inspection(path: Path) -> dict[str, Any]:
    """The validated baseline; a missing or broken file is one UserError line naming it."""
    try:
        return read_baseline(path)
    except BaselineError as error:
        raise UserError(f"{error}{_stored_hint(path)}") from None


def _stored_hint(path: Path) -> str:
    """For a file that is not there: the baselines its folder does hold."""
    if path.exists() or not path.parent.is_dir():
        return ""
    stored = sorted(p.name for p in path.parent.glob("*.json"))
    return f" ({path.parent} holds: {', '.join(stored)})" if stored else ""


def baseline_summary(baseline: dict[str, Any], path: Path) -> dict[str, Any]:
    """The header and, per run, its strategy, model, seed, stored metrics and question counts
    (the per-question answers themselves are left out)."""
    header = {key: baseline[key] for key in ("suite", "suite_hash", "hardware_class", "created",
                                             "git_revision", "versions", "alpha", "min_effect",
                                             "metrics")}
    runs = [{"run_id": run["run_id"], "strategy": run["strategy"], "model": run["model"],
             "seed": run["seed"], "metrics": run["metrics"],
             "questions": {split: len(answers["question_ids"])
                           for split, answers in run["per_question"].items()}}
            for run in baseline["runs"]]
    return {"file": str(path), **header, "runs": runs}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as people read it: the header, then one line per run."""
    versions = ", ".join(f"{name} {version}" for name, version in sorted(summary["versions"].items()))
    lines = [f"baseline {summary['file']}",
             f"  suite         {summary['suite']} (suite hash {summary['suite_hash'][:12]})",
             f"  hardware      {summary['hardware_class']}",
             f"  git revision  {summary['git_revision']}",
             f"  created       {summary['created']}",
             f"  versions      {versions}",
             f"  regression    {', '.join(summary['metrics'])}: a change of at least "
             f"{summary['min_effect']:g} at alpha {summary['alpha']:g}",
             f"  runs          {len(summary['runs'])}"]
    for run in summary["runs"]:
        metrics = "  ".join(f"{name} {value:.3f}" for name, value in run["metrics"].items())
        questions = ", ".join(f"{count} {split}" for split, count in run["questions"].items())
        lines.append(f"    {run['strategy']} / {run['model']} / seed {run['seed']}: {metrics} "
                     f"({questions} questions)")
    return lines
