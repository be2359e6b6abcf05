"""The README's table of what the mechanism analyses find on a suite's runs: per strategy, mean ±
sd over seeds of each per-run number (analyses.summary) from each run's analyses.json (written by
`factrecall-bench analyze RUN_DIR`), the paper's direction beside it, and the verdicts of the
suite's claims on analyses numbers computed on those runs.

    python scripts/analyses_table.py SUITE_RUNS_DIR [--suite cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from factrecall_bench.analyses.summary import analyses_summary, paper_direction
from factrecall_bench.suite import find_suite, load_suite
from factrecall_bench.verdicts import ANALYSES_PREFIX, evaluate_claim


def runs_with_analyses(folder: Path) -> list[dict[str, Any]]:
    runs = []
    for analyses_file in sorted(folder.glob("*/analyses.json")):
        result = json.loads((analyses_file.parent / "result.json").read_text())
        analyses = json.loads(analyses_file.read_text())["analyses"]
        result["analyses"] = {"summary": analyses_summary(analyses)}
        runs.append(result)
    return runs


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite_runs_dir", type=Path)
    parser.add_argument("--suite", default="cpu")
    args = parser.parse_args()
    runs = runs_with_analyses(args.suite_runs_dir)
    strategies = list(dict.fromkeys(run["strategy"] for run in runs))
    print("| quantity | " + " | ".join(strategies) + " | the paper's direction |")
    print("|---|" + "---|" * (len(strategies) + 1))
    for key in dict.fromkeys(k for run in runs for k in run["analyses"]["summary"]):
        cells = [cell([run["analyses"]["summary"][key] for run in runs
                       if run["strategy"] == strategy
                       and run["analyses"]["summary"].get(key) is not None])
                 for strategy in strategies]
        print(f"| `{key}` | " + " | ".join(cells) + f" | {paper_direction(key)} |")
    for claim in load_suite(str(find_suite(args.suite))).claims:
        if claim.metric.startswith(ANALYSES_PREFIX):
            verdict = evaluate_claim(claim, runs)
            print(f"{claim.metric}: {verdict.outcome}, effect {verdict.effect:+.3f} "
                  f"[{verdict.ci_low:+.3f}, {verdict.ci_high:+.3f}], p {verdict.p_value:.3g}")


if __name__ == "__main__":
    main()
