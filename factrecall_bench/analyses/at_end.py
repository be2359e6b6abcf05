"""The analyses a suite asks for at the end of training (`[trace.analyses]`): their settings, and
the hook the runner calls after the trace, whose return is result.json's `analyses`.

They run after the run's answers are computed (and after the trace), on the trained model in
memory, and draw only from their own seeded generators: the global RNG state is put back as it
was, so a run with analyses trains, answers and leaves the next run exactly as one without.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from factrecall_bench import distributed
from factrecall_bench.analyses.run import ANALYSES, RUNNERS, LoadedRun, settings_for
from factrecall_bench.analyses.summary import analyses_summary
from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.config import RunConfig
from factrecall_bench.data.facts import FactData
from factrecall_bench.errors import UserError
from factrecall_bench.runfolder import RunFolder

ANALYSES_KEY = "analyses"
"""The key of the suite's [trace] table that holds these settings ([trace.analyses])."""


@dataclass
class AnalysesSettings:
    """`[trace.analyses]`: which mechanism analyses run at the end of each run, with what settings.
    Recorded with the result (result.json `analyses.settings`, every analysis's full settings)."""

    what: tuple[str, ...] = ()
    """The analyses to run after the trace: any of "representation", "reads" (each under about
    one evaluation pass) and "grafting" (about 20 evaluations per method: opt-in). Empty: none."""
    grafting: dict[str, Any] = field(default_factory=dict)
    """Grafting's settings that differ from their defaults (docs/analyses.md), e.g.
    {max_questions = 64, methods = ["top_delta"]}; every seed defaults to the run's."""
    representation: dict[str, Any] = field(default_factory=dict)
    """Representation consistency's settings that differ from their defaults."""
    reads: dict[str, Any] = field(default_factory=dict)
    """What-the-model-reads' settings that differ from their defaults."""

    def __post_init__(self) -> None:
        if isinstance(self.what, str) or not isinstance(self.what, list | tuple):
            raise ValueError(f"what must be a list of analyses; got {self.what!r}")
        self.what = tuple(self.what)
        unknown = [name for name in self.what if name not in ANALYSES]
        if unknown or len(set(self.what)) != len(self.what):
            raise ValueError(f"what must name distinct analyses among {', '.join(ANALYSES)}; "
                             f"got {list(self.what)!r}")
        for name in ANALYSES:
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a table of settings; got {getattr(self, name)!r}")
            settings_for(name, getattr(self, name), 0)  # a bad setting fails before training

    def resolved(self, seed: int) -> dict[str, Any]:
        """Each analysis to run, with its settings object (seeds default to `seed`)."""
        return {name: settings_for(name, getattr(self, name), seed) for name in self.what}


def analyses_settings(config: RunConfig) -> AnalysesSettings:
    """The run's [trace.analyses] settings; a bad table is one UserError line."""
    values = config.trace.get(ANALYSES_KEY, {})
    where = f"suite {config.suite}: trace.{ANALYSES_KEY}"
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a table, got {values!r}")
    known = {"what", *ANALYSES}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (keys: "
                        f"{', '.join(sorted(known))})")
    try:
        return AnalysesSettings(**values)
    except (UserError, TypeError, ValueError) as error:
        raise UserError(f"{where}: {error}") from error


def analyses_hook_for(config: RunConfig):
    """The runner's `analyses` hook for this run (None when the suite asks for none); bad settings,
    or analyses under a launcher (they need the whole model in one process), fail here, before
    training."""
    settings = analyses_settings(config)
    if not settings.what:
        return None
    if distributed.is_distributed():
        raise UserError(f"suite {config.suite}: trace.analyses run in one process only: launch "
                        "without accelerate/torchrun, or run `factrecall-bench analyze RUN` later")
    return run_analyses_at_end


def run_analyses_at_end(config: RunConfig, model: nn.Module, data: FactData,
                        context: dict[str, Any]) -> dict[str, Any]:
    """The analyses of a just-trained run: its settings, full results, per-run scalars and the
    seconds each took. The model is left holding the trained weights, in eval mode."""
    settings = analyses_settings(config)
    folder: Path = context["run_dir"]
    checkpoint = latest_checkpoint(RunFolder(folder).checkpoints)  # training's last one
    if checkpoint is None:
        raise RuntimeError("the analyses found no checkpoint of the trained model")
    run = LoadedRun(folder, config, {"trace": context.get("trace")}, data, model,
                    context["initial_state"], checkpoint)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with torch.random.fork_rng():  # their draws are seeded; the global stream stays untouched
        for name, analysis_settings in settings.resolved(config.seed).items():
            started = time.perf_counter()
            results[name] = RUNNERS[name](run, analysis_settings)
            timings[name] = round(time.perf_counter() - started, 3)
    model.zero_grad(set_to_none=True)
    model.eval()
    return {"settings": {**asdict(settings), "what": list(settings.what)},
            "results": results, "summary": analyses_summary(results), "timings": timings}
