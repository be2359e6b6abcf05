"""A suite's runs as cluster jobs through submitit: one job per run (a Slurm job array), the runs
folder on a filesystem every node shares.

Nothing here schedules: submitit submits, Slurm (or submitit's LocalExecutor, real subprocesses on
this machine, which CI tests) runs. A job is one `run_one` call, so what holds for a run holds for
a job: its folder is keyed by its config, its lock makes a run held elsewhere `busy`, a finished
run is skipped, result.json is written atomically, and a run resumes from its last checkpoint.
A job that is preempted or reaches its time limit gets submitit's signal (USR2): `RunJob.checkpoint`
hands submitit the same call again, submitit requeues the job, and the new job resumes the run
from the checkpoints in its folder (the steps since the last checkpoint are trained again, with
the same batches: the result is the uninterrupted run's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factrecall_bench.config import RunConfig
from factrecall_bench.errors import UserError
from factrecall_bench.runfolder import RunFolder, is_finished, reuse_finished_run

if TYPE_CHECKING:
    from factrecall_bench.config import RunOptions
    from factrecall_bench.orchestrate import SuiteOutcome
    from factrecall_bench.runfolder import RunOutcome

EXECUTORS = ("slurm", "local")
SUBMITIT_FOLDER = ".submitit"
"""Under the runs folder: submitit's pickles and each job's stdout / stderr, per suite."""
INSTALL_HINT = "pip install 'factrecall-bench[cluster]'"


@dataclass(frozen=True)
class ClusterSettings:
    """How `run --executor` submits a suite's runs (the CLI's cluster flags, parsed)."""

    executor: str
    """`slurm` (sbatch, one job array per suite) or `local` (submitit's LocalExecutor: the same
    code path in subprocesses of this machine; for tests and a first try)."""
    partition: str | None = None
    """Slurm partition (`--slurm-partition`); None: the cluster's default."""
    gpus_per_run: int | None = None
    """GPUs per job; with more than one, one task per GPU trains the run together (DDP).
    None: 1 on Slurm, 0 with the local executor."""
    cpus_per_run: int | None = None
    """CPU cores per job (Slurm's --cpus-per-task); the run uses the cores it is given."""
    time_min: int = 240
    """Time limit per job, in minutes; a run that needs longer is requeued and resumes."""
    max_parallel: int | None = None
    """At most this many jobs of the array at once (`--jobs`); None: as many as Slurm allows."""
    slurm_settings: tuple[tuple[str, str], ...] = ()
    """Other sbatch options, e.g. (("account", "proj"), ("qos", "high"))."""
    wait: bool = True
    """Wait for the jobs and judge the suite; False: exit after submitting (`check` judges)."""
    folder: Path | None = None
    """submitit's folder; None: RUNS_DIR/.submitit/<suite>."""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"--executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        if self.executor != "slurm" and (self.partition or self.slurm_settings):
            raise UserError("--slurm-partition and --slurm-setting need --executor slurm")
        if self.executor == "local" and self.max_parallel is not None:
            raise UserError("--jobs with --executor local: the local executor starts every job at "
                            "once; without --executor, `run --jobs N` trains N runs at a time here")
        if self.gpus_per_run is not None and not 0 <= self.gpus_per_run <= 64:
            raise UserError(f"--gpus-per-run {self.gpus_per_run}: expected 0 to 64")
        if self.time_min < 1:
            raise UserError(f"--time {self.time_min}: expected at least 1 minute")

    @property
    def gpus(self) -> int:
        return self.gpus_per_run if self.gpus_per_run is not None else int(self.executor == "slurm")


def settings_from_flags(executor: str | None, partition: str | None, gpus_per_run: int | None,
                        cpus_per_run: int | None, time_min: int | None, slurm_settings: Sequence[str],
                        wait: bool, jobs: int | None) -> ClusterSettings | None:
    """The cluster flags of `run`, checked together: None without --executor (and then no other
    cluster flag may be given)."""
    if executor is None:
        given = [flag for flag, value in (
            ("--slurm-partition", partition), ("--gpus-per-run", gpus_per_run),
            ("--cpus-per-run", cpus_per_run), ("--time", time_min),
            ("--slurm-setting", slurm_settings or None), ("--no-wait", None if wait else True))
            if value is not None]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise UserError(f"{', '.join(given)} {verb} --executor slurm (or local)")
        return None
    return ClusterSettings(executor=executor, partition=partition, gpus_per_run=gpus_per_run,
                           cpus_per_run=cpus_per_run,
                           time_min=240 if time_min is None else time_min,
                           max_parallel=jobs, slurm_settings=parse_slurm_settings(slurm_settings),
                           wait=wait)


def parse_slurm_settings(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--slurm-setting KEY=VALUE` flags as (key, value) pairs; a malformed one is a UserError."""
    parsed = []
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise UserError(f"--slurm-setting {pair!r}: expected KEY=VALUE, e.g. account=myproj")
        parsed.append((key.strip().replace("-", "_"), value.strip()))
    return tuple(parsed)


def check_can_submit(settings: ClusterSettings) -> None:
    """Before anything is submitted: submitit is installed and, for Slurm, its commands are here
    (a UserError otherwise)."""
    try:
        import submitit  # noqa: F401
    except ImportError as error:
        raise UserError(f"--executor needs submitit, which is not installed ({INSTALL_HINT})"
                        ) from error
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if settings.executor == "slurm" and missing:
        raise UserError(f"--executor slurm: {' and '.join(missing)} not found: submit from a "
                        "node of the Slurm cluster (a login node)")


# --- inside a job ------------------------------------------------------------------------------


class RunJob:
    """One run, as a submitit job: callable, and checkpointable (submitit calls `checkpoint` on
    preemption or timeout and requeues what it returns)."""

    def __call__(self, config: RunConfig, runs_root: Path, options: RunOptions,
                 threads: int | None) -> tuple[str, str]:
        from factrecall_bench.orchestrate import run_as_worker

        join_tasks_of_this_job()
        return run_as_worker(config, runs_root, threads or cores_here(), options)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same call again: the requeued job finds the run's checkpoints in its folder."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def join_tasks_of_this_job() -> None:
    """With several tasks (a GPU each), export the torch.distributed variables (RANK, WORLD_SIZE,
    MASTER_ADDR, ...) that accelerate reads, so the tasks train the run together; one task: a
    no-op."""
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=True, overwrite=True)


def cores_here() -> int:
    """The cores this job may use (Slurm pins a job to its --cpus-per-task), capped by
    OMP_NUM_THREADS where it is set."""
    pinned = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores = len(pinned) if pinned else os.cpu_count() or 1
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(asked)) if asked.isdigit() and int(asked) > 0 else cores


# --- submitting and waiting --------------------------------------------------------------------


@dataclass
class Submission:
    """The jobs submitted for a suite's unfinished runs, and the runs that were finished already."""

    folder: Path
    jobs: dict[str, Any] = field(default_factory=dict)
    """run id -> submitit Job."""
    already_finished: list[RunConfig] = field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [job.job_id for job in self.jobs.values()]


def submitit_folder(runs_root: Path, suite: str, settings: ClusterSettings) -> Path:
    return settings.folder or runs_root / SUBMITIT_FOLDER / suite


def make_executor(settings: ClusterSettings, folder: Path, jobs: int) -> Any:
    """submitit's executor for these settings (the AutoExecutor translates them for Slurm)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=settings.executor)
    gpus = settings.gpus
    parameters: dict[str, Any] = {
        "name": "factrecall", "timeout_min": settings.time_min, "nodes": 1,
        "tasks_per_node": max(1, gpus), "gpus_per_node": gpus,
        "cpus_per_task": settings.cpus_per_run}
    if settings.executor == "slurm":
        parameters.update(slurm_partition=settings.partition,
                          slurm_array_parallelism=settings.max_parallel or jobs,
                          slurm_additional_parameters=dict(settings.slurm_settings) or None)
    executor.update_parameters(**parameters)
    return executor


def submit_runs(configs: list[RunConfig], runs_root: Path, settings: ClusterSettings,
                options: RunOptions, threads: int | None = None) -> Submission:
    """One job per run not finished yet, as one job array; finished runs are not submitted, nor
    runs that a finished run elsewhere in the runs folder trained already (reused here)."""
    folder = submitit_folder(runs_root, configs[0].suite if configs else "suite", settings)
    submission = Submission(folder)
    pending: list[RunConfig] = []
    for config in configs:
        done = is_finished(config, runs_root) or reuse_finished_run(runs_root, config) is not None
        (submission.already_finished if done else pending).append(config)
    if not pending:
        return submission
    executor = make_executor(settings, folder, len(pending))
    count = len(pending)
    jobs = executor.map_array(RunJob(), pending, [runs_root] * count, [options] * count,
                              [threads] * count)
    submission.jobs = {config.run_id: job for config, job in zip(pending, jobs)}
    return submission


def wait_for_runs(configs: list[RunConfig], runs_root: Path, submission: Submission
                  ) -> SuiteOutcome:
    """Every run's outcome once its job has ended (a SuiteOutcome, in the configs' order)."""
    from factrecall_bench.orchestrate import SuiteOutcome

    return SuiteOutcome([_outcome(config, runs_root, submission.jobs.get(config.run_id))
                         for config in configs])


def _outcome(config: RunConfig, runs_root: Path, job: Any) -> RunOutcome:
    from factrecall_bench.runfolder import RunOutcome

    run = RunFolder.of(runs_root, config)
    if job is None:  # finished before anything was submitted
        return RunOutcome(config.run_id, "skipped", run.read_result())
    try:
        status, reason = job.results()[0]  # the main task's (each task of a run reports it)
    except Exception as error:  # the job failed or died without a result
        reason = job_failure_reason(job, error)
        run.record_failure(config.run_id, reason)
        return RunOutcome(config.run_id, "failed", None, reason)
    result = run.read_result() if status in ("finished", "skipped") else None
    return RunOutcome(config.run_id, status, result, reason)


def job_failure_reason(job: Any, error: Exception) -> str:
    """One line for a job that ended without reporting its run."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(error).__name__
    return (f"job {job.job_id} ended without a result ({last}); its log: {job.paths.stderr}; "
            "its checkpoints are kept: rerun to resume")


def submitted_note(suite: str, runs_root: Path, submission: Submission, wait: bool,
                   suite_arguments: str = "") -> str:
    """What `run --executor` tells the user once the jobs are submitted (`suite_arguments`: how
    the command line named the suite, `--suite my.toml`; default `--suite SUITE`)."""
    done = len(submission.already_finished)
    if not submission.jobs:
        return f"suite {suite}: all {done} runs already finished; nothing submitted"
    then = ("waiting for them (Ctrl-C stops waiting; Slurm jobs go on: scancel stops them)"
            if wait else "judge them once they end with "
            f"`factrecall-bench check {suite_arguments or '--suite ' + suite} --runs-dir {runs_root}`")
    return (f"suite {suite}: submitted {len(submission.jobs)} jobs ({done} runs already finished): "
            f"{', '.join(submission.job_ids)}; logs in {submission.folder}; {then}")
