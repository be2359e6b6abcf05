"""The use cases of a suite spread over machines: `run --executor` (each run a submitit job) and
`run --shard I/N` (this machine's share of the runs, judged once every share is done). The CLI
reaches them through app.run_command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factrecall_bench import distributed, exit_codes
from factrecall_bench.cluster import (
    ClusterSettings,
    check_can_submit,
    submit_runs,
    submitted_note,
    wait_for_runs,
)
from factrecall_bench.config import RunOptions
from factrecall_bench.errors import UserError
from factrecall_bench.progress import listed_run_ids, note
from factrecall_bench.runfolder import ResultDocument, event_paths, finished_results, run_row
from factrecall_bench.shard import Shard
from factrecall_bench.suite import Suite


def check_cluster_request(cluster: ClusterSettings) -> None:
    """`--executor` submits from one process, with submitit installed (UserError otherwise)."""
    if distributed.is_distributed():
        raise UserError("--executor submits jobs from one process: run it without a launcher")
    check_can_submit(cluster)


def join_shards(suite: Suite, runs_dir: Path, shard: Shard, rows: list[dict[str, Any]]
                ) -> tuple[list[ResultDocument], list[dict[str, Any]]] | None:
    """After this shard's runs: every run of the suite (this shard's rows, the other shards' runs
    as reused) if all have finished; else None, and a note naming the missing runs."""
    configs = suite.runs
    results = finished_results(configs, runs_dir)
    done = {result["run_id"] for result in results}
    missing = [config.run_id for config in configs if config.run_id not in done]
    if missing:
        note(f"suite {suite.name}, shard {shard}: {len(missing)} of {len(configs)} runs not "
             f"finished yet ({listed_run_ids(missing)}); once every shard is done, `factrecall-bench "
             f"check {suite.command_arguments} --runs-dir {runs_dir}` judges the suite")
        return None
    mine = {row["run_id"]: row for row in rows}
    reused = {"status": "finished", "reused": True, "reason": ""}
    return results, [mine.get(c.run_id) or {"run_id": c.run_id, **reused} for c in configs]


def shard_exit_code(rows: list[dict[str, Any]]) -> int:
    """A shard's code while the suite cannot be judged yet: 4 if one of its runs did not finish."""
    finished = all(row["status"] == "finished" for row in rows)
    return exit_codes.OK if finished else exit_codes.RUNS_FAILED


def run_suite_on_cluster(suite: Suite, runs_dir: Path, cluster: ClusterSettings,
                         show_progress: bool, options: RunOptions | None = None,
                         shard: Shard | None = None
                         ) -> tuple[list[ResultDocument], list[dict[str, Any]]] | None:
    """One submitit job per unfinished run; with `cluster.wait`, their outcomes once they end
    (None without waiting: `check` judges later). The GPUs are the jobs' (--gpus-per-run, 1 by
    default on Slurm): this node needs none."""
    from factrecall_bench.progress import EventProgress

    configs = shard.select(suite.runs) if shard else list(suite.runs)
    submission = submit_runs(configs, runs_dir, cluster, options or RunOptions(),
                             threads=_local_job_threads(cluster, len(configs)))
    note(submitted_note(suite.name, runs_dir, submission, cluster.wait, suite.command_arguments))
    if not cluster.wait:
        return None
    with EventProgress(event_paths(configs, runs_dir), enabled=show_progress):
        outcome = wait_for_runs(configs, runs_dir, submission)
    return outcome.results, [run_row(o.run_id, o.status, o.reason) for o in outcome.outcomes]


def _local_job_threads(cluster: ClusterSettings, runs: int) -> int | None:
    """The local executor starts every job at once: share this machine's cores among them. On
    Slurm each job uses the cores it was given (None)."""
    from factrecall_bench.orchestrate import threads_per_job

    return threads_per_job(runs) if cluster.executor == "local" else None
