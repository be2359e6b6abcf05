"""The TUI's model of a runs folder: every run's `RunState` and every suite's verdicts, folded from
what `RunsReader` read (the I/O half, in a worker thread) on the UI thread. Pure Python, no Textual.
"""

from __future__ import annotations

from pathlib import Path

from factrecall_bench.runfolder import RunFolder
from factrecall_bench.tui.pending import PlannedRun
from factrecall_bench.tui.reader import PollBatch, RunsReader, RunUpdate, SuiteVerdicts
from factrecall_bench.tui.run_state import RunState

STATUSES = ("pending", "running", "interrupted", "finished", "failed")
"""Every status `RunState.status` gives, in the order the status line counts them."""


class RunsState:
    """All runs and verdicts, updated from `PollBatch`es; `version` grows on every change."""

    def __init__(self) -> None:
        self.runs: dict[Path, RunState] = {}
        self.verdicts: dict[Path, SuiteVerdicts] = {}
        self.planned: dict[str, RunState] = {}
        """The suite's runs by run id (`tui --suite`): those without a folder yet are pending."""
        self.warnings: list[str] = []
        self.version = 0

    def apply(self, batch: PollBatch) -> list[str]:
        """Fold a poll in; returns the warnings it raised (also kept in `self.warnings`)."""
        new_warnings = list(batch.warnings)
        seen = {update.run_dir for update in batch.runs}
        changed = any(path not in seen for path in self.runs)
        self.runs = {path: run for path, run in self.runs.items() if path in seen}
        for update in batch.runs:
            changed |= self._apply_run(update, new_warnings)
        for suite_dir, verdicts in batch.verdicts.items():
            changed = True
            if verdicts is None:
                self.verdicts.pop(suite_dir, None)
            else:
                self.verdicts[suite_dir] = verdicts
        if batch.planned is not None:
            changed = True
            self.planned = {p.run_id: planned_run(p) for p in batch.planned}
        self.warnings.extend(new_warnings)
        if changed or new_warnings:
            self.version += 1
        return new_warnings

    def _apply_run(self, update: RunUpdate, new_warnings: list[str]) -> bool:
        old = self.runs.get(update.run_dir)
        run = old if old is not None and not update.restarted else self._new_run(update, old)
        for event in update.events:
            run.apply_event(event)
        run.lines_read += len(update.lines)
        run.log_tail.extend(update.lines)
        if update.config is not None:
            run.config = update.config
        changed = run.lock_free != update.lock_free
        run.lock_free = update.lock_free
        if update.result_changed:
            run.result = update.result
            run.fill_from_result()
        warnings = list(update.warnings)
        writer_gone = run.status in ("finished", "failed")
        if update.partial_line and writer_gone and not run.truncated_warned:
            run.truncated_warned = True  # the writer is gone, so the partial line stays partial
            warnings.append(f"{run.run_id}: {RunFolder.EVENTS} ends in a truncated line")
        run.warnings.extend(warnings)
        new_warnings.extend(warnings)
        fresh = old is not run
        changed |= bool(update.lines or update.config or update.result_changed or warnings)
        return fresh or changed

    def _new_run(self, update: RunUpdate, old: RunState | None) -> RunState:
        run = RunState(update.run_dir.name, update.run_dir.parent.name, update.run_dir)
        if old is not None:  # a rewritten log: start over, keep what the other files said
            run.config, run.result = old.config, old.result
        self.runs[update.run_dir] = run
        return run

    # -- views over the state -------------------------------------------------------------------
    def all_runs(self) -> list[RunState]:
        """The runs on disk, then the planned runs that have no folder yet (pending)."""
        started = {run.run_id for run in self.runs.values()}
        return [*self.runs.values(), *(r for i, r in self.planned.items() if i not in started)]

    def sorted_runs(self, text: str = "") -> list[RunState]:
        runs = [r for r in self.all_runs() if r.matches(text)]
        return sorted(runs, key=lambda r: (r.suite, r.variant, r.strategy, r.seed or 0, r.model,
                                           r.run_id))

    def run(self, run_id: str | None) -> RunState | None:
        return next((r for r in self.all_runs() if r.run_id == run_id), None)

    def all_verdicts(self) -> list[SuiteVerdicts]:
        return [self.verdicts[k] for k in sorted(self.verdicts)]

    def status_counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for run in self.all_runs():
            counts[run.status] = counts.get(run.status, 0) + 1
        return {k: v for k, v in counts.items() if v}

    def last_event_t(self) -> float | None:
        times = [r.last_event_t for r in self.runs.values() if r.last_event_t is not None]
        return max(times) if times else None


def planned_run(planned: PlannedRun) -> RunState:
    """A run of the suite not started yet: its identity, status pending."""
    return RunState(planned.run_id, planned.suite, planned.folder, strategy=planned.strategy,
                    variant=planned.variant, model=planned.model, seed=planned.seed)


def load_runs(root: Path, suite: str | None = None) -> RunsState:
    """Read a runs folder once (for scripts and tests)."""
    state = RunsState()
    state.apply(RunsReader(root, suite).poll())
    return state
