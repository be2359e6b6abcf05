"""A suite's runs, side by side in worker processes (one thread each on a small CPU box, one GPU
each where there are GPUs).

A run is the unit of failure: each runs in a process of its own (spawned, at most `jobs` at
once), so a worker that dies (SIGKILL, the kernel's OOM killer, a crash in native code) fails its
run alone, and the next run gets a fresh process. On Ctrl-C or SIGTERM the parent stops every
worker (SIGTERM, then SIGKILL after a grace period) before it returns: nothing is left behind.
Workers only train and write their run folders; the parent watches the event logs (the same
files the TUI reads) to report progress.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from factrecall_bench.config import RunConfig, RunOptions
from factrecall_bench.locks import run_lock
from factrecall_bench.runfolder import (
    ResultDocument,
    RunFolder,
    RunOutcome,
    reusable_source,
    reuse_from,
    reused_outcome,
)
from factrecall_bench.tracking import check_trackers

STOP_GRACE_S = 10.0
"""How long stopped workers get to leave cleanly (they finish the current step) before SIGKILL."""


@dataclass(frozen=True)
class SuiteOutcome:
    outcomes: list[RunOutcome]

    @property
    def results(self) -> list[ResultDocument]:
        return [o.result for o in self.outcomes if o.result is not None]

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


def _run_with_trace(config: RunConfig, runs_root: Path, options: RunOptions) -> RunOutcome:
    """One run with the gradient trace's and the analyses' hooks (the runner knows neither)."""
    # Imported here, not at the top: the parent of the worker processes never trains, so it does
    # not wait for torch and transformers to load (each worker loads them itself).
    from factrecall_bench.analyses.at_end import analyses_hook_for
    from factrecall_bench.runner import run_one
    from factrecall_bench.trace.ablation import own_rows_of
    from factrecall_bench.trace.hook import trace_hook_for, training_recorder_for

    return run_one(config, runs_root, after_eval=trace_hook_for(config),
                   recorder_for=training_recorder_for, options=options,
                   reference_rows=own_rows_of, analyses=analyses_hook_for(config))


def run_as_worker(config: RunConfig, runs_root: Path, threads: int, options: RunOptions
                  ) -> tuple[str, str]:
    """A worker's run (a worker process here, or a cluster job: see cluster.py); only (status,
    reason) travel back, the parent reads result.json."""
    import torch

    torch.set_num_threads(threads)
    _thread_lock_for_progress_bars()
    outcome = _run_with_trace(config, runs_root, options)
    return outcome.status, outcome.reason


def _thread_lock_for_progress_bars() -> None:
    """tqdm (the datasets library's progress bars) would make a multiprocessing lock: a named
    semaphore that a killed worker leaves behind, reported as leaked. A thread lock will do."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def threads_per_job(jobs: int) -> int:
    """The cores shared out among the jobs, capped by OMP_NUM_THREADS where it is set."""
    shared = max(1, (os.cpu_count() or 1) // jobs)
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return min(shared, int(asked)) if asked.isdigit() and int(asked) > 0 else shared


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [device.strip() for device in listed.split(",") if device.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


# --- one process per task ----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskEnd:
    """How a task's process ended: its return value (if it sent one) and its exit code."""

    value: Any
    returned: bool
    exitcode: int


@dataclass
class _Child:
    index: int
    slot: int
    process: Any  # a spawned multiprocessing.Process
    reader: Connection | None
    value: Any = None
    returned: bool = False

    def receive(self) -> None:
        """Take the value the child sent, if a whole one arrived; the pipe is then closed."""
        if self.reader is None:
            return
        try:
            if self.reader.poll():
                self.value, self.returned = self.reader.recv(), True
        except Exception:  # EOF, or a message cut short by the child's death: no value
            pass
        self.reader.close()
        self.reader = None

    def end(self) -> TaskEnd:
        self.process.join()
        self.receive()
        exitcode = self.process.exitcode
        self.process.close()
        return TaskEnd(self.value, self.returned, exitcode if exitcode is not None else -1)


class ProcessPool:
    """Runs each task in a spawned process of its own, at most `jobs` at once.

    Slot k of the `jobs` slots sees GPU `gpus[k % len(gpus)]` (CUDA_VISIBLE_DEVICES), so with
    fewer GPUs than jobs they are shared round robin. No queues or locks cross processes (only a
    pipe each), so a killed process leaves nothing locked and no semaphore behind.
    """

    def __init__(self, jobs: int, gpus: list[str], grace_s: float = STOP_GRACE_S) -> None:
        self.jobs = max(1, jobs)
        self.gpus = list(gpus)
        self.grace_s = grace_s
        self._context = multiprocessing.get_context("spawn")

    def map(self, target: Callable[[Any], Any], tasks: list[Any]) -> list[TaskEnd]:
        """`target(task)` for every task; on any exception (KeyboardInterrupt included) every
        live process is stopped before it propagates."""
        ends: list[TaskEnd | None] = [None] * len(tasks)
        waiting, running = deque(enumerate(tasks)), list[_Child]()
        try:
            while waiting or running:
                while waiting and len(running) < self.jobs:
                    index, task = waiting.popleft()
                    self._start(target, index, task, running)
                self._wait(running)
                for child in [c for c in running if c.process.exitcode is not None]:
                    running.remove(child)  # first: a Ctrl-C from here on finds it ended
                    ends[child.index] = child.end()
        except BaseException:
            self._stop(running)
            raise
        return [end for end in ends if end is not None]

    def _free_slot(self, running: list[_Child]) -> int:
        taken = {child.slot for child in running}
        return next(slot for slot in range(self.jobs) if slot not in taken)

    def _start(self, target: Callable[[Any], Any], index: int, task: Any,
               running: list[_Child]) -> None:
        """Start the task's process and add it to `running` (where `_stop` will find it)."""
        slot = self._free_slot(running)
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_child_main, name=f"factrecall-worker-{index}",
                                        args=(target, task, gpu, writer, os.getpid(),
                                              _interrupts_ignored_here()))
        # multiprocessing starts its resource tracker along with the first process, and unblocks
        # SIGINT here as it does so: start it first, or the first worker would start unmasked.
        resource_tracker.ensure_running()
        with _interrupts_deferred():  # a process is either started and listed, or not started
            process.start()
            writer.close()  # the child holds the only writer: its death reads as EOF here
            running.append(_Child(index, slot, process, reader))

    @staticmethod
    def _wait(running: list[_Child]) -> None:
        readers = {child.reader: child for child in running if child.reader is not None}
        ready = wait([*readers, *(child.process.sentinel for child in running)])
        for handle in ready:
            if handle in readers:
                readers[handle].receive()  # read as it comes: a big value cannot block its child

    def _stop(self, running: list[_Child]) -> None:
        """SIGTERM every live child, SIGKILL those still there after the grace period; a second
        Ctrl-C meanwhile is ignored, so the stop always completes."""
        with _interrupts_ignored():
            for child in running:
                if child.process.exitcode is None:
                    child.process.terminate()
            deadline = time.monotonic() + self.grace_s
            for child in running:
                child.process.join(max(0.0, deadline - time.monotonic()))
            for child in running:
                if child.process.exitcode is None:
                    child.process.kill()
                child.end()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the end of the block, then take effect as usual.

    The child being started inherits SIGINT blocked (the mask survives exec) and unblocks it once
    its own handler is in place, so a Ctrl-C during its start-up cannot print a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupts_ignored_here() -> bool:
    """Whether this process ignores Ctrl-C: it was started so (`cmd &` in a script, `nohup`)."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _child_main(target: Callable[[Any], Any], task: Any, gpu: str | None, writer: Connection,
                parent_pid: int, ignore_sigint: bool = False) -> None:
    """A worker process: run the task, send its value back. SIGINT or SIGTERM stop it quietly
    (exit code 128 + the signal), as does the death of the parent. A worker whose parent ignores
    SIGINT ignores it too: otherwise a Ctrl-C meant for something else in the process group
    would stop the runs while the parent, unaware, went on to start the next ones."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initializes CUDA here
    signal.signal(signal.SIGTERM, _stop_this_child)
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else _stop_this_child)
    try:
        # A Ctrl-C that came while this process was starting is delivered here, inside the try:
        # the worker stops quietly, like one stopped mid-run.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        threading.Thread(target=_stop_when_orphaned, args=(parent_pid,), daemon=True).start()
        writer.send(target(task))
        code = 0
    except KeyboardInterrupt:
        code = 128 + _stopped_by[0]
    except Exception:  # not a run's failure (run_one reports those): a bug, shown as one
        traceback.print_exc()
        code = 1
    writer.close()
    # Leave now: the interpreter's own teardown (library atexit hooks, threads) can take many
    # seconds, and everything of the run is on disk already. multiprocessing's own finalizers
    # still run: they unregister the semaphores libraries made here (tqdm's lock, say), which
    # would otherwise be reported as leaked.
    multiprocessing.util._exit_function()  # type: ignore[attr-defined]
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_stopped_by = [signal.SIGTERM.value]


def _stop_this_child(signum: int, frame: object) -> None:
    # The first signal stops the run (KeyboardInterrupt unwinds it: locks are released, temp
    # files removed); later ones must not interrupt that unwinding.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    _stopped_by[0] = signum
    raise KeyboardInterrupt


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing: unlike SIG_IGN, a signal that arrived just before it was
    installed runs it quietly (with SIG_IGN, Python reports a 'race condition')."""


def _stop_when_orphaned(parent_pid: int) -> None:
    """A worker whose parent died (e.g. SIGKILL) stops itself rather than train on alone."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S)
    os._exit(128 + signal.SIGTERM.value)


# --- a suite's runs ----------------------------------------------------------------------------


def run_configs(configs: list[RunConfig], runs_root: Path, jobs: int = 1,
                options: RunOptions | None = None) -> SuiteOutcome:
    """Run every config, in the configs' order, each with the same runtime `options` (trackers,
    samples; a tracker that is not installed is a UserError before any run starts). A run that
    finished with its config is skipped, and one trained elsewhere in the runs folder is reused
    (`run_one` says so; with several jobs the parent does, without starting a worker for it)."""
    options = options or RunOptions()
    check_trackers(options.log_with)
    if jobs <= 1:
        return SuiteOutcome([_run_with_trace(config, runs_root, options) for config in configs])
    done: dict[str, RunOutcome] = {}
    for config in configs:
        if (outcome := _done_without_a_worker(config, runs_root)) is not None:
            done[config.run_id] = outcome
    ends = _run_in_workers([config for config in configs if config.run_id not in done],
                           runs_root, jobs, options)
    return SuiteOutcome([done[config.run_id] if config.run_id in done
                         else _outcome(config, runs_root, ends[config.run_id]) for config in configs])


def _done_without_a_worker(config: RunConfig, runs_root: Path) -> RunOutcome | None:
    """`config`'s run answered by the parent: finished already, or made from a finished run of
    the same training elsewhere in the runs folder (copied under the run's lock, as a worker
    would: a process started only to copy files costs seconds of imports). None leaves the run
    to a worker: one to train, one another process holds (its worker says `busy`), or one whose
    folder cannot be written (its worker fails it with the reason)."""
    run = RunFolder.of(runs_root, config)
    if (result := run.finished_result(config)) is not None:
        return RunOutcome(config.run_id, "skipped", result)
    source = reusable_source(runs_root, config)
    if source is None:  # to train: its folder is its worker's to make
        return None
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        lock = run_lock(run.lock)
        if not lock.acquire():
            return None
        try:
            reused = reuse_from(source, runs_root, config)
        finally:
            lock.release()
    except OSError:
        return None
    return None if reused is None else reused_outcome(config.run_id, reused, reused["reused_from"])


def _run_in_workers(configs: list[RunConfig], runs_root: Path, jobs: int, options: RunOptions
                    ) -> dict[str, TaskEnd]:
    """How each run's worker process ended, by run id."""
    if not configs:
        return {}
    target = functools.partial(run_as_worker, runs_root=runs_root, threads=threads_per_job(jobs),
                               options=options)
    ends = ProcessPool(jobs, visible_gpus()).map(target, configs)
    return {config.run_id: end for config, end in zip(configs, ends)}


def _outcome(config: RunConfig, runs_root: Path, end: TaskEnd) -> RunOutcome:
    run = RunFolder.of(runs_root, config)
    if end.returned:
        status, reason = end.value
        result = run.read_result() if status in ("finished", "skipped") else None
        return RunOutcome(config.run_id, status, result, reason)
    reason = worker_death_reason(end.exitcode)
    if not 128 < end.exitcode < 128 + 64:  # a stopped worker's run has said so itself
        run.record_failure(config.run_id, reason)
    return RunOutcome(config.run_id, "failed", None, reason)


def worker_death_reason(exitcode: int) -> str:
    """One line for a worker that ended without reporting its run."""
    resume = "its checkpoints are kept: rerun to resume"
    if exitcode < 0:
        name = _signal_name(-exitcode)
        hint = " (the kernel's out-of-memory killer, or kill -9)" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by signal {-exitcode} ({name}){hint}; {resume}"
    if 128 < exitcode < 128 + 64:
        return f"interrupted by {_signal_name(exitcode - 128)}; {resume}"
    return f"worker process exited with code {exitcode} without a result; {resume}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
