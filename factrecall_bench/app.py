"""The use cases the CLI calls, as plain functions: run and check suites (and list what a run
would do), update a baseline, retrace a run (data generate and show: data/commands.py). The CLI
parses flags, calls these and prints what they return; this module never imports the CLI. What
it still shows itself: progress and notes on stderr; `run` and `check` print each suite's summary
(report.print_summary) or the --json document as suites finish, and `baseline update` its
"wrote" line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factrecall_bench import distributed, exit_codes
from factrecall_bench.cluster import ClusterSettings
from factrecall_bench.config import RunOptions
from factrecall_bench.errors import UserError
from factrecall_bench.io import check_folder_can_be_made, ensure_writable_folder
from factrecall_bench.progress import listed_run_ids, note
from factrecall_bench.runfolder import (
    ResultDocument,
    RunFolder,
    event_paths,
    finished_results,
    is_finished,
    reusable_source,
    run_dir,
    run_row,
)
from factrecall_bench.shard import Shard
from factrecall_bench.suite import Suite, load_suite, shipped_suites
from factrecall_bench.tracking import check_trackers
from factrecall_bench.verdicts import RegressionSettings

# --- runs and verdicts ------------------------------------------------------------------------


def list_suites() -> list[dict[str, Any]]:
    listing = []
    for name in sorted(shipped_suites()):
        suite = load_suite(name)
        listing.append({"name": name, "ci": suite.ci, "needs_gpu": suite.needs_gpu,
                        "runs": len(suite.runs), "description": suite.description})
    return listing


def single_run_suite(base: Suite, strategy: str, model: str, seed: int) -> Suite:
    return dataclasses.replace(base, strategies=(strategy,), models=(model,), seeds=(seed,),
                               variants=base.variants[:1], claims=(),
                               regression=RegressionSettings(enabled=False), jobs=1)


def selected_suites(names: list[str], run_all: bool, strategy: str | None, model: str,
                    seed: int, overrides: Sequence[str] = (),
                    variation_name: str | None = None) -> list[Suite]:
    if run_all:
        if names or strategy or overrides or variation_name is not None:
            raise UserError("--all runs every CI suite as shipped: give no --suite, --strategy, "
                            "--set or --name with it")
        return ci_suites_this_machine_runs()
    if variation_name is not None and len(names) > 1:
        raise UserError("--name names one variation: give it with one --suite")
    suites = [load_suite(name, overrides, variation_name) for name in (names or ["cpu"])]
    if strategy is not None:
        if len(suites) != 1:
            raise UserError("a single run (--strategy) takes at most one --suite as its base")
        return [single_run_suite(suites[0], strategy, model, seed)]
    return suites


def ci_suites_this_machine_runs() -> list[Suite]:
    """`--all`: every shipped CI suite, less those that need a GPU where none is visible (the
    user is told which: a skip is never silent)."""
    ci_suites = [suite for suite in map(load_suite, sorted(shipped_suites())) if suite.ci]
    skipped = [suite.name for suite in ci_suites if suite.needs_gpu and not _has_gpu()]
    if skipped:
        note(f"skipping suite(s) {', '.join(skipped)}: they need a GPU and none is visible")
    return [suite for suite in ci_suites if suite.name not in skipped]


@dataclass(frozen=True)
class RunRequest:
    """What `factrecall-bench run` was asked to do (the CLI's flags, parsed)."""

    suites: list[str] = field(default_factory=list)
    run_all: bool = False
    strategy: str | None = None
    model: str = "tiny-llama"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    """`--set TABLE.KEY=VALUE`, applied to every chosen suite before it is validated."""
    variation_name: str | None = None
    """`--name`: the variation's report folder (default: the suite's name and the overrides)."""
    dry_run: bool = False
    """`--dry-run`: list what would train and what is reused; train and write nothing."""
    jobs: int | None = None
    runs_dir: Path = Path("runs")
    baselines_dir: Path = Path("baselines")
    check: bool = True
    junit_xml: Path | None = None
    as_json: bool = False
    inconclusive_claims_ok: bool = False
    options: RunOptions = field(default_factory=RunOptions)
    """Trackers and per-sample answers: what runs do besides what their configs decide."""
    cluster: ClusterSettings | None = None
    """`--executor slurm|local`: each run a submitit job; None: runs in this machine's workers."""
    shard: Shard | None = None
    """`--shard I/N`: only this share of each suite's runs; judged once every share is done."""


def run_command(request: RunRequest) -> int:
    """Run the chosen suites, judge and report each; the process's exit code."""
    chosen = selected_suites(request.suites, request.run_all, request.strategy, request.model,
                             request.seed, request.overrides, request.variation_name)
    if request.dry_run:
        return dry_run_command(chosen, request.runs_dir, request.as_json)
    baselines_dir = request.baselines_dir if request.check else None
    check_before_any_work(chosen, request.runs_dir, baselines_dir, request.junit_xml,
                          trains_here=request.cluster is None)
    for suite in chosen:  # --log-with on the command line wins over a suite's log_with
        check_trackers(suite.trackers(request.options.log_with))
    if request.cluster is not None:
        from factrecall_bench.cluster_runs import check_cluster_request

        check_cluster_request(request.cluster)
    from factrecall_bench import cluster_runs
    from factrecall_bench.report import print_summary, write_junit, write_suite_report

    documents, shard_codes = [], []
    for suite in chosen:
        show_progress = not request.as_json
        options = dataclasses.replace(request.options,
                                      log_with=suite.trackers(request.options.log_with))
        ran = (run_suite(suite, request.runs_dir, request.jobs, show_progress, options,
                         request.shard)
               if request.cluster is None else
               cluster_runs.run_suite_on_cluster(suite, request.runs_dir, request.cluster,
                                                 show_progress, options, request.shard))
        if ran is None or not distributed.is_main():
            continue  # submitted without waiting (`check` judges), or not the main process
        results, outcome_rows = ran
        if request.shard is not None:
            joined = cluster_runs.join_shards(suite, request.runs_dir, request.shard, outcome_rows)
            if joined is None:  # other shards' runs are missing: `check` judges later
                shard_codes.append(cluster_runs.shard_exit_code(outcome_rows))
                continue
            results, outcome_rows = joined
        verdicts = judge_suite(suite, results, request.baselines_dir) if request.check else []
        document = write_suite_report(suite, results, outcome_rows, verdicts, request.runs_dir)
        documents.append(document)
        if not request.as_json:
            print_summary(document)
    if not distributed.is_main():
        return 0  # the main process reports, and its exit code is the job's
    if request.junit_xml is not None:
        write_junit(request.junit_xml, documents)
    if request.as_json:
        print_json({"suites": documents})
    return exit_codes.combined([exit_code_for_ci(documents, request.inconclusive_claims_ok),
                               *shard_codes])


def dry_run_command(suites: list[Suite], runs_dir: Path, as_json: bool) -> int:
    """`run --dry-run`: what would train and what is reused; nothing is trained or written."""
    from factrecall_bench.dry_run import dry_run_lines, dry_run_plan

    for suite in suites:
        check_suite_settings(suite)
    plans = [dry_run_plan(suite, runs_dir) for suite in suites]
    if as_json:
        print_json({"suites": plans})
    else:
        sys.stdout.write("".join(f"{line}\n" for line in dry_run_lines(plans)))
    return exit_codes.OK


def exit_code_for_ci(documents: list[dict[str, Any]], inconclusive_claims_ok: bool) -> int:
    """The process's code for these suites. With `inconclusive_claims_ok`, a claim the data cannot
    decide does not fail the job (it stays `inconclusive` in every output); an inconclusive
    regression check, a failed verdict or a failed run still does."""
    code = exit_codes.combined([document["exit_code"] for document in documents])
    if code != exit_codes.INCONCLUSIVE or not inconclusive_claims_ok:
        return code
    undecided = [verdict for document in documents for verdict in document["verdicts"]
                 if verdict["status"] == "inconclusive"]
    if any(verdict["kind"] != "claim" for verdict in undecided):
        return code
    note(f"{len(undecided)} inconclusive claim(s) accepted (--inconclusive-claims-ok): "
         + "; ".join(verdict["name"] for verdict in undecided))
    return exit_codes.OK


def check_before_any_work(suites: list[Suite], runs_dir: Path, baselines_dir: Path | None,
                          junit_xml: Path | None = None, trains_here: bool = True) -> None:
    """Everything a command will need, checked in seconds before the first run starts: the runs
    folder, each suite's claims, regression and trace settings, and the baseline it will be
    judged against. A problem is a UserError (one line, exit 2), never a failure after training.
    Runs submitted as cluster jobs (`trains_here` False) need no GPU here: their nodes have them."""
    from factrecall_bench.locks import lock_method

    lock_method()  # FACTRECALL_LOCK, if set, names a method
    if junit_xml is not None and junit_xml.is_dir():
        raise UserError(f"--junit-xml {junit_xml} is a folder; give a file path")
    if distributed.is_main():
        ensure_writable_folder(runs_dir, "runs folder")
    for suite in suites:
        check_suite_settings(suite)
        if trains_here:
            check_suite_can_run(suite)
        if baselines_dir is not None:
            check_suite_baseline(suite, baselines_dir)


def check_suite_settings(suite: Suite) -> None:
    """What loading the suite does not check yet: each run's trace and analyses settings."""
    from factrecall_bench.analyses.settings import analyses_settings
    from factrecall_bench.trace.settings import trace_settings

    for config in suite.runs:
        if config.trace.get("enabled", False):
            trace_settings(config)
        analyses_settings(config)


def check_suite_baseline(suite: Suite, baselines_dir: Path) -> None:
    """A baseline that exists must be readable and valid (a missing one is judged inconclusive)."""
    from factrecall_bench.verdicts.baselines import BaselineError, baseline_path, read_baseline

    if not suite.regression.enabled:
        return
    path = baseline_path(baselines_dir, suite.name)
    if path.exists():
        try:
            read_baseline(path, expected_suite=suite.name)
        except BaselineError as error:
            raise UserError(str(error)) from error


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def run_suite(suite: Suite, runs_dir: Path, jobs: int | None, show_progress: bool,
              options: RunOptions | None = None, shard: Shard | None = None
              ) -> tuple[list[ResultDocument], list[dict[str, Any]]]:
    """The suite's runs (with `shard`, its share of them) trained here: results and a row each."""
    from factrecall_bench.orchestrate import run_configs
    from factrecall_bench.progress import EventProgress

    check_suite_can_run(suite)
    configs = shard.select(suite.runs) if shard else list(suite.runs)
    # Several processes (accelerate launch) train each run together, one run after another.
    jobs = 1 if distributed.is_distributed() else jobs or suite.jobs
    if distributed.is_main():
        note(what_will_run(suite, configs, runs_dir, jobs))
    with EventProgress(event_paths(configs, runs_dir), enabled=show_progress and distributed.is_main()):
        outcome = run_configs(configs, runs_dir, jobs, options)
    return outcome.results, [run_row(o.run_id, o.status, o.reason) for o in outcome.outcomes]


def what_will_run(suite: Suite, configs: list[Any], runs_dir: Path, jobs: int) -> str:
    """The line `run` starts with: how many of `configs` will train, how many are finished or
    reused, how many side by side, and where."""
    unfinished = [config for config in configs if not is_finished(config, runs_dir)]
    reused = sum(reusable_source(runs_dir, config) is not None for config in unfinished)
    finished, to_run = len(configs) - len(unfinished), len(unfinished) - reused
    elsewhere = f", {reused} reused from runs that trained the same thing" if reused else ""
    if to_run == 0 and reused:
        return (f"suite {suite.name}: no run to train: {finished} already finished in "
                f"{runs_dir / suite.name}, {reused} reused from runs that trained the same thing; "
                "nothing to do")
    if to_run == 0:
        return (f"suite {suite.name}: all {len(configs)} runs already finished in "
                f"{runs_dir / suite.name}; nothing to do")
    side_by_side = min(jobs, to_run)
    return (f"suite {suite.name}: {to_run} of {len(configs)} runs to train "
            f"({finished} already finished{elsewhere}), {side_by_side} side by side, in "
            f"{runs_dir / suite.name}")


def check_suite_can_run(suite: Suite) -> None:
    """What training the suite here needs: a GPU if it says so, a supported launcher."""
    from factrecall_bench.trace.settings import refuse_training_mode_under_a_launcher

    if suite.needs_gpu and not _has_gpu():
        raise UserError(f"suite {suite.name} needs a GPU and none is visible")
    check_fsdp_launch()
    for config in suite.runs:
        refuse_training_mode_under_a_launcher(config)


def check_fsdp_launch() -> None:
    """FSDP2 through accelerate, on CUDA GPUs: anything else is refused before any work."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise UserError("only FSDP2 is supported (fsdp_version: 2, as in "
                        "configs/accelerate/fsdp2.yaml)")
    if not _has_gpu():
        raise UserError("FSDP2 needs CUDA GPUs (accelerate shards only on GPU process groups); "
                        "on CPU launch with configs/accelerate/ddp.yaml")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def judge_suite(suite: Suite, results: Sequence[Mapping[str, Any]], baselines_dir: Path,
                baseline_file: Path | None = None) -> list[Any]:
    from factrecall_bench.verdicts.judging import judge_baseline, judge_claims

    return judge_claims(suite.claims, results) + judge_baseline(
        suite.baseline_subject, results, baselines_dir, baseline_file)


def check_command(suite_name: str, runs_dir: Path, baselines_dir: Path, as_json: bool,
                  baseline_file: Path | None = None, run_missing: bool = False,
                  inconclusive_claims_ok: bool = False, overrides: Sequence[str] = (),
                  variation_name: str | None = None) -> int:
    """Judge the suite's (or, with `overrides`, its variation's) finished runs. A run not
    finished is not trained here (that is `run`'s job, or `run_missing`'s): the claims that need
    it are inconclusive."""
    from factrecall_bench.report import print_summary, write_suite_report

    suite = load_suite(suite_name, overrides, variation_name)
    check_before_any_work([suite], runs_dir, None if baseline_file else baselines_dir)
    if run_missing:
        results, rows = run_suite(suite, runs_dir, None, show_progress=not as_json,
                                  options=RunOptions(log_with=suite.log_with))
        if not distributed.is_main():
            return 0
    else:
        results, rows = _finished_only(suite, runs_dir)
    verdicts = judge_suite(suite, results, baselines_dir, baseline_file)
    document = write_suite_report(suite, results, rows, verdicts, runs_dir)
    if as_json:
        print_json(document)
    else:
        print_summary(document)
    return exit_code_for_ci([document], inconclusive_claims_ok)


def _finished_only(suite: Suite, runs_dir: Path) -> tuple[list[ResultDocument], list[dict[str, Any]]]:
    """The finished runs and a row per run (`missing` for one not finished); none is an error."""
    configs = suite.runs
    results = finished_results(configs, runs_dir)
    done = {result["run_id"] for result in results}
    if not results:
        raise UserError(f"no finished run of suite {suite.name} in {runs_dir / suite.name}: "
                        f"train them with `factrecall-bench run {suite.command_arguments}`")
    rows = [{"run_id": c.run_id, "status": "finished" if c.run_id in done else "missing",
             "reused": c.run_id in done, "reason": "" if c.run_id in done else
             f"not finished in {run_dir(runs_dir, c)}"} for c in configs]
    if len(done) < len(configs):
        missing = [config.run_id for config in configs if config.run_id not in done]
        note(f"suite {suite.name}: {len(missing)} of {len(configs)} runs are not finished "
             f"({listed_run_ids(missing)}); claims that need them are inconclusive "
             f"(`run {suite.command_arguments}` trains them)")
    return results, rows


def baseline_update_command(suite_name: str, runs_dir: Path, baselines_dir: Path) -> int:
    """Run the suite and store its baseline (main process); the exit code. A baseline is stored
    only from a complete suite: with a failed run nothing is written and the code is 4."""
    from factrecall_bench.verdicts.baselines import baseline_from_results, baseline_path, write_baseline

    suite = load_suite(suite_name)
    check_before_any_work([suite], runs_dir, None)
    check_folder_can_be_made(baselines_dir, "baselines folder")
    results, rows = run_suite(suite, runs_dir, None, show_progress=True,
                              options=RunOptions(log_with=suite.log_with))
    if not distributed.is_main():
        return exit_codes.OK
    failed = [row for row in rows if row["status"] != "finished"]
    if failed:
        for row in failed:
            note(f"run {row['run_id']} {row['status']}: {row['reason']}")
        note(f"not storing a baseline: {len(failed)} of {len(rows)} runs did not finish")
        return exit_codes.RUNS_FAILED
    hardware = recorded_hardware(suite, results)
    settings = suite.regression
    baseline = baseline_from_results(suite.name, suite.suite_hash, results, hardware,
                                     settings.alpha, settings.min_effect, list(settings.metrics))
    path = baseline_path(baselines_dir, suite.name, hardware)
    try:
        write_baseline(path, baseline)
    except OSError as error:
        raise UserError(f"cannot write the baseline {path}: {error.strerror}") from error
    print(f"wrote {path}", flush=True)
    return exit_codes.OK


def recorded_hardware(suite: Suite, results: Sequence[Mapping[str, Any]]) -> str:
    """The hardware the suite's runs recorded, which names the baseline's class: runs trained on
    GPU nodes give a GPU baseline even when `baseline update` runs on a login node."""
    from factrecall_bench.verdicts.baselines import baseline_class
    from factrecall_bench.verdicts.judging import runs_hardware

    recorded = sorted(set(runs_hardware(results)))
    classes = sorted({baseline_class(hardware) for hardware in recorded})
    if len(classes) > 1:
        raise UserError(f"not storing a baseline: the runs of suite {suite.name} were made on "
                        f"{len(classes)} hardware classes ({', '.join(classes)}), and a baseline "
                        "holds one: train them all on one class")
    return recorded[0]


def trace_command(run_folder: Path) -> dict[str, Any]:
    from factrecall_bench.trace.hook import retrace_run

    if distributed.is_distributed():
        raise UserError("trace runs in one process: run it without accelerate launch")
    summary = retrace_run(run_folder)
    RunFolder(run_folder).write_trace(summary)
    return summary
