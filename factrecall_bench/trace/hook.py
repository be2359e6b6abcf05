"""Glue between a run and the gradient trace: the probe sets, the ablation's evaluation, retrace.

The probe uses a fixed, seeded sample of BIO examples (all people) and of QA examples of P_train;
the ablation resets parameters to their values before fact training (the random init of a tiny
model, the pretrained weights otherwise) and re-measures recall.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factrecall_bench import distributed
from factrecall_bench.batching import collate
from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.config import RunConfig
from factrecall_bench.data.examples import bio_examples
from factrecall_bench.data.facts import FactData, load_fact_data
from factrecall_bench.errors import UserError
from factrecall_bench.evaluate import metric_hits, scored_sources
from factrecall_bench.metrics import ablated_metrics, sources_of
from factrecall_bench.models import build_model
from factrecall_bench.runfolder import DATA_FOLDER, RunFolder
from factrecall_bench.trace.scores import TrainingTraceRecorder
from factrecall_bench.trace.settings import (  # noqa: F401  (refuse_... re-exported)
    TraceSettings,
    records_during_training,
    refuse_training_mode_under_a_launcher,
    trace_settings,
)
from factrecall_bench.trace.summary import trace_summary

PROBE_BATCH = 32

TraceHook = Callable[[RunConfig, torch.nn.Module, FactData, dict[str, Any]], dict[str, Any]]
"""What the runner calls after evaluation (its `after_eval`, a runner.RunHook): `run_trace`."""


def trace_hook_for(config: RunConfig) -> TraceHook | None:
    if not config.trace.get("enabled", False):
        return None
    trace_settings(config)  # fail on bad settings before training, not after
    return run_trace


def training_recorder_for(config: RunConfig, model: torch.nn.Module
                          ) -> TrainingTraceRecorder | None:
    """The recorder of the trace's training mode (None in probe mode or with the trace off)."""
    if not records_during_training(config):
        return None
    refuse_training_mode_under_a_launcher(config)
    return TrainingTraceRecorder(model, trace_settings(config))


def probe_batches(data: FactData, settings: TraceSettings) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Seeded samples of BIO and QA examples, collated into batches."""
    rng = np.random.default_rng([settings.seed, 2])
    bio = data.examples["bio"]
    if settings.bio_loss == "values":
        bio = bio_examples(data.bio_all, values_only=True)
    sources = {"bio": bio, "qa": data.examples["qa_train"]}
    batches = {}
    for task, examples in sources.items():
        chosen = rng.choice(len(examples), size=min(settings.probe_examples, len(examples)),
                            replace=False)
        picked = [examples[i] for i in sorted(chosen.tolist())]
        batches[task] = [_model_inputs(collate(picked[i:i + PROBE_BATCH], data.pad_id))
                         for i in range(0, len(picked), PROBE_BATCH)]
    return batches


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}


def ablation_evaluator(data: FactData, batch_size: int):
    """The ablated metrics (`metrics.ablated_metrics`) of a model, plain means; under several
    processes each scores its share of items."""
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        metrics = ablated_metrics()
        scored = scored_sources(model, data, batch_size, sources_of(metrics))
        return {metric.name: _mean(metric_hits(metric, scored)) for metric in metrics}
    return evaluate


def _mean(hits: list[int]) -> float:
    return float(np.mean(hits)) if hits else 0.0


def run_trace(config: RunConfig, model: torch.nn.Module, data: FactData,
              context: dict[str, Any]) -> dict[str, Any]:
    """The trace of a trained run. Under several processes all of them call it: they score with
    the main process's scores, split the ablation's evaluations, and only the main one draws."""
    settings = trace_settings(config)
    device = next(model.parameters()).device
    batches = {task: [{k: v.to(device) for k, v in b.items()} for b in task_batches]
               for task, task_batches in probe_batches(data, settings).items()}
    trace = trace_summary(model, batches, settings,
                          training_scores=context.get("training_scores"),
                          training_scores_by_score=context.get("training_scores_by_score"),
                          reference_state=context.get("initial_state"),
                          evaluate=ablation_evaluator(data, config.eval.batch_size),
                          heatmap_dir=context.get("run_dir") if distributed.is_main() else None,
                          # DDP: every process holds the whole model and takes the main one's
                          # scores; FSDP2: each process scores its own shard (no agreement needed)
                          agree_on_scores=None if distributed.is_sharded(model)
                          else distributed.tensors_from_main)
    model.zero_grad(set_to_none=True)
    return trace


def retrace_run(run_folder: Path) -> dict[str, Any]:
    """Recompute the trace of a finished run from its final checkpoint; stored in result.json."""
    run = RunFolder(run_folder)
    result = run.read_result()
    if result is None:
        raise UserError(f"{run_folder} holds no finished run (no valid {RunFolder.RESULT})")
    config = run.read_run_config()
    checkpoint = latest_checkpoint(run.trained_checkpoints())
    if checkpoint is None:
        raise UserError(f"{run_folder} has no valid checkpoint to trace")
    runs_root = run_folder.parent.parent
    data = load_fact_data(config.data, config.model, config.eval, runs_root / DATA_FOLDER,
                          values_only_bio_loss=config.train.bio_loss == "values")
    model = build_model(config.model, data.tokenizer, config.seed)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    checkpoint.load_model(model)
    config = _with_trace_enabled(config)
    context: dict[str, Any] = {"initial_state": initial_state, "run_dir": run_folder}
    if records_during_training(config):  # the scores summed during training
        recorder = TrainingTraceRecorder(model, trace_settings(config))
        checkpoint.load_recorder(recorder)
        context["training_scores_by_score"] = recorder.scores_by_score()
    trace = run_trace(config, model, data, context)
    retraced = result.copy()
    retraced["trace"] = trace
    run.write_result(retraced)
    return trace


def _with_trace_enabled(config: RunConfig) -> RunConfig:
    import dataclasses

    return dataclasses.replace(config, trace={**config.trace, "enabled": True})
