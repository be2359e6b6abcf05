"""The analyses a suite asks for at the end of training (`[trace.analyses]`): their settings, and
the hook the runner calls after the trace, whose return is result.json's `analyses`.

They run after the run's answers are computed (and after the trace), on the trained model in
memory, and draw only from their own seeded generators: the global RNG state is put back as it
was, so a run with analyses trains, answers and leaves the next run exactly as one without.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from factrecall_bench import distributed
from factrecall_bench.analyses.run import RUNNERS, LoadedRun
from factrecall_bench.analyses.settings import (  # noqa: F401  (re-exported)
    ANALYSES_KEY,
    AnalysesSettings,
    analyses_settings,
)
from factrecall_bench.analyses.summary import analyses_summary
from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.config import RunConfig
from factrecall_bench.data.facts import FactData
from factrecall_bench.errors import UserError
from factrecall_bench.runfolder import RunFolder


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
