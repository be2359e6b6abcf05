"""Regenerate the TUI's recorded runs folder, tests/data/tui_runs, from a real run of a real suite.

    .venv/bin/python scripts/regenerate_tui_fixtures.py

Runs tests/data/suites/tui.toml (four short CPU runs with a trace, claims that pass, fail and only
report) through the real CLI, `factrecall-bench run`, into a temporary runs folder. Then it copies
what the TUI reads (per run config.json, events.jsonl and result.json; the suite's verdicts.json)
to tests/data/tui_runs/tui/, written as the code writes them, with two kinds of changes:

Normalized, so that regenerating elsewhere or later changes only what the code changed:
- Time: every event's `t` comes from a fixed clock, SECONDS_PER_STEP per optimizer step (plus
  EVENT_GAP_S per earlier event at the same step), the first run starting at EPOCH and each next
  one RUN_GAP_S after the previous one's end. `run_end`'s `wall_s`, result.json's `timings` and
  verdicts.json's `train_s_mean` follow the same clock; `tokens_per_s` and `throughput` become
  TOKENS_PER_S.
- result.json's `environment` (Python, platform, git revision, hardware, threads, versions): every
  value becomes a placeholder of its type ("normalized", 0), keeping the keys.
- Absolute paths under the temporary folders become relative: `tui/<run_id>/checkpoints/...` for
  the runs folder, `baselines/...` for the baselines folder.
Training itself runs on the CPU with one thread (OMP_NUM_THREADS=1, no CUDA device), so losses and
answers are what the CPU gives; run ids carry the config hash, so tests find runs by strategy and
seed, not by id.

Shaped, from the real documents, into the situations the TUI's tests need:
- UNFINISHED (two-stage, seed 1): its events stop after the `step` event at STOP_STEP (in the QA
  phase, after the BIO phase's eval and a checkpoint) and it has no result.json: a run still
  training while a test holds its lock, an interrupted one otherwise.
- DAMAGED (mixed, seed 1): its last line (run_end) is cut in half, newline kept: a malformed line
  the TUI must report once and survive.

tests/tui/test_recorded_runs.py checks the result structurally (every document through runfolder's typed
readers, every event kind in events.EVENT_KINDS), so the fixtures cannot drift from the code
unnoticed. After regenerating, update the snapshots
(`pytest tests/integration/test_tui_snapshots.py --snapshot-update`) and look at the SVGs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factrecall_bench.io import write_json_atomic, write_text_atomic
from factrecall_bench.runfolder import RunFolder, SuiteFolder

ROOT = Path(__file__).resolve().parents[1]
SUITE_FILE = ROOT / "tests" / "data" / "suites" / "tui.toml"
FIXTURES = ROOT / "tests" / "data" / "tui_runs"
SUITE = "tui"
EXPECTED_EXIT_CODES = {1}  # one claim is meant to fail
EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z
SECONDS_PER_STEP = 0.5
EVENT_GAP_S = 0.01
RUN_GAP_S = 10.0
TOKENS_PER_S = 12000.0
UNFINISHED = ("two-stage", 1)
STOP_STEP = 140
DAMAGED = ("mixed", 1)
PLACEHOLDER = "normalized"


def run_suite(work: Path) -> tuple[Path, Path]:
    """The suite trained and judged by the real CLI, on the CPU: (runs folder, baselines folder)."""
    runs, baselines = work / "runs", work / "baselines"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # The suite named relative to the checkout, as hints in verdicts.json then name it.
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite",
               str(SUITE_FILE.relative_to(ROOT)), "--runs-dir", str(runs),
               "--baselines-dir", str(baselines)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                          cwd=ROOT)
    if done.returncode not in EXPECTED_EXIT_CODES:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return runs, baselines


# -- normalizing ------------------------------------------------------------------------------
def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: map_strings(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [map_strings(item, change) for item in value]
    return value


def relative_paths(runs: Path, baselines: Path) -> Callable[[str], str]:
    def change(text: str) -> str:
        return text.replace(f"{runs}{os.sep}", "").replace(f"{baselines}{os.sep}", "baselines/")

    return change


def placeholders(value: Any) -> Any:
    """The same keys, every leaf a placeholder of its type."""
    if isinstance(value, dict):
        return {key: placeholders(item) for key, item in value.items()}
    if isinstance(value, list):
        return [placeholders(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    return 0 if isinstance(value, int | float) else PLACEHOLDER


def steady_clock(events: list[dict[str, Any]], start: float) -> None:
    """Every event's `t` from its step: SECONDS_PER_STEP per step, EVENT_GAP_S per earlier event
    at the same step; `run_end`'s `wall_s` and `step` events' `tokens_per_s` follow."""
    step, same_step = 0, 0
    for event in events:
        new_step = event.get("step")
        if event["event"] == "run_start":
            new_step = event.get("resumed_from_step") or 0
        if isinstance(new_step, int) and new_step != step:
            step, same_step = new_step, 0
        event["t"] = round(start + step * SECONDS_PER_STEP + same_step * EVENT_GAP_S, 3)
        same_step += 1
        if event["event"] == "step":
            event["tokens_per_s"] = TOKENS_PER_S
    for event in events:
        if event["event"] == "run_end":
            event["wall_s"] = round(event["t"] - events[0]["t"], 3)


def train_seconds(result: dict[str, Any]) -> float:
    return result["total_steps"] * SECONDS_PER_STEP


def normalize_result(result: dict[str, Any]) -> dict[str, Any]:
    train_s = train_seconds(result)
    timings = {key: 0.0 for key in result["timings"]}
    timings.update(train_s=train_s, total_s=train_s)
    return {**result, "timings": timings, "environment": placeholders(result["environment"]),
            "throughput": {key: TOKENS_PER_S for key in result["throughput"]}}


def normalize_verdicts(verdicts: dict[str, Any], train_s: float) -> dict[str, Any]:
    summary = [{**row, "train_s_mean": train_s} if "train_s_mean" in row else row
               for row in verdicts["summary"]]
    return {**verdicts, "summary": summary}


# -- reading the real runs ----------------------------------------------------------------------
def read_run(folder: RunFolder, change: Callable[[str], str]) -> dict[str, Any]:
    events = [json.loads(line) for line in folder.events.read_text("utf-8").splitlines()]
    result = folder.read_result()
    config = folder.read_config()
    if result is None or config is None:
        sys.exit(f"{folder.path}: no readable result.json or config.json")
    return {"events": map_strings(events, change), "result": map_strings(result, change),
            "config": map_strings(config, change)}


def read_suite(runs: Path, baselines: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The suite's runs by run_id, in the order they ran, and its verdicts.json, paths relative."""
    change = relative_paths(runs, baselines)
    suite = SuiteFolder(runs / SUITE)
    run_folders = sorted(p for p in suite.path.iterdir() if (p / RunFolder.RESULT).is_file())
    read = {p.name: read_run(RunFolder(p), change) for p in run_folders}
    ordered = dict(sorted(read.items(), key=lambda item: item[1]["events"][0]["t"]))
    verdicts = suite.read_verdicts()
    if verdicts is None:
        sys.exit(f"{suite.verdicts}: missing or unreadable")
    return ordered, map_strings(dict(verdicts), change)


def normalize(runs: dict[str, dict[str, Any]], verdicts: dict[str, Any]) -> dict[str, Any]:
    start = EPOCH
    for run in runs.values():
        steady_clock(run["events"], start)
        start = run["events"][-1]["t"] + RUN_GAP_S
        run["result"] = normalize_result(run["result"])
    first = next(iter(runs.values()))["result"]
    return normalize_verdicts(verdicts, train_seconds(first))


# -- shaping the situations the tests need ------------------------------------------------------
def run_of(runs: dict[str, dict[str, Any]], strategy: str, seed: int) -> dict[str, Any]:
    (run,) = [r for r in runs.values()
              if (r["config"]["strategy"], r["config"]["seed"]) == (strategy, seed)]
    return run


def event_lines(events: list[dict[str, Any]]) -> list[str]:
    """As events.EventLog writes them: sorted keys, one line each."""
    return [json.dumps(event, sort_keys=True) for event in events]


def shape(runs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Each run's events.jsonl lines; UNFINISHED cut and without result, DAMAGED's last line cut."""
    lines = {run_id: event_lines(run["events"]) for run_id, run in runs.items()}
    unfinished = run_of(runs, *UNFINISHED)
    stop = next(i for i, e in enumerate(unfinished["events"])
                if e["event"] == "step" and e["step"] == STOP_STEP)
    unfinished_id = unfinished["config"]["run_id"]
    lines[unfinished_id] = lines[unfinished_id][: stop + 1]
    unfinished["result"] = None
    damaged_id = run_of(runs, *DAMAGED)["config"]["run_id"]
    last = lines[damaged_id][-1]
    if json.loads(last)["event"] != "run_end":
        sys.exit(f"{damaged_id}: the last event is not run_end")
    lines[damaged_id][-1] = last[: len(last) // 2]
    return lines


def write_fixtures(runs: dict[str, dict[str, Any]], lines: dict[str, list[str]],
                   verdicts: dict[str, Any], target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    suite = SuiteFolder(target / SUITE)
    for run_id, run in runs.items():
        folder = suite.run(run_id)
        folder.path.mkdir(parents=True)
        folder.write_config(run["config"])
        write_text_atomic(folder.events, "".join(f"{line}\n" for line in lines[run_id]))
        if run["result"] is not None:
            folder.write_result(run["result"])
    write_json_atomic(suite.verdicts, verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help="the runs folder to write")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory(prefix="tui-fixtures-") as work:
        real_runs, baselines = run_suite(Path(work).resolve())
        runs, verdicts = read_suite(real_runs, baselines)
    verdicts = normalize(runs, verdicts)
    lines = shape(runs)
    write_fixtures(runs, lines, verdicts, out)
    print(f"wrote {out}: {', '.join(runs)} and {SUITE}/{SuiteFolder.VERDICTS}")


if __name__ == "__main__":
    main()
