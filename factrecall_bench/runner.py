"""Runs: one folder per resolved config; finished runs are skipped, interrupted ones resume.

A run is: data -> model -> train (strategy) -> evaluate -> (samples) -> trace -> analyses ->
result.json,
with every step reported to the run's event log (and, with `RunOptions.log_with`, to trackers).
Under several processes (DDP) all of them train; the main one alone locks, writes, evaluates and
traces (see `distributed`).
"""

from __future__ import annotations

import errno
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from factrecall_bench import distributed, samples
from factrecall_bench.batching import plan_run
from factrecall_bench.checkpoints import corrupted_checkpoints, warn_if_low_space
from factrecall_bench.config import RunConfig, RunOptions, config_hash
from factrecall_bench.data.dataset import ensure_dataset, load_saved_dataset
from factrecall_bench.data.facts import FactData, load_fact_data
from factrecall_bench.environment import environment_record
from factrecall_bench.errors import RunFailed, UserError
from factrecall_bench.evaluate import metric_hits, per_attribute_of, proportion, scored_sources
from factrecall_bench.events import EventLog, loss_curve, phase_evals, read_events
from factrecall_bench.metrics import all_metrics, sources_of
from factrecall_bench.models import build_model
from factrecall_bench.runfolder import (
    RESULT_SCHEMA_VERSION,
    Interval,
    ResultDocument,
    RunFolder,
    RunOutcome,
    reuse_finished_run,
    reused_outcome,
    run_config_dict,
    run_dir,
)
from factrecall_bench.tracking import check_trackers, requested_trackers, tracking, tracking_dir
from factrecall_bench.train import Trainer, find_resume_checkpoint, total_steps


def prepared_for_training(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model as accelerate prepares it: DDP-wrapped, or sharded in place under FSDP2.

    accelerate shards a model only together with an optimizer (it swaps the optimizer's
    parameters for the shards); every phase here makes its own optimizer from the sharded
    parameters, so this one is a stand-in that never steps.
    """
    if accelerator.is_fsdp2:
        stand_in = torch.optim.SGD(model.parameters(), lr=0.0)
        model, _ = accelerator.prepare(model, stand_in)
        return model
    return accelerator.prepare_model(model)


def accelerator_for(mixed_precision: str, log_with: str | None = None,
                    project_dir: Path | None = None) -> Accelerator:
    """The run's Accelerator; with trackers (`log_with`), local ones write under `project_dir`."""
    if mixed_precision == "auto":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        mixed_precision = "bf16" if bf16 else "no"
    distributed.start()
    trackers = requested_trackers(log_with)
    if not trackers:
        return Accelerator(mixed_precision=mixed_precision)
    check_trackers(log_with)  # accelerate would only warn, and track nothing
    return Accelerator(mixed_precision=mixed_precision, log_with=trackers,
                       project_dir=str(project_dir) if project_dir is not None else None)


def evaluate_recall(model: torch.nn.Module, data: FactData, batch_size: int
                    ) -> dict[str, Any]:
    """Every registered metric (`metrics.METRICS`: QA exact match and first token, ID and OOD,
    BIO value recall), per attribute where declared, and QA per question.

    Under several processes each scores its share and all get the whole result.
    """
    metrics = all_metrics()
    scored = scored_sources(model, data, batch_size, sources_of(metrics))
    return {
        "metrics": {metric.name: proportion(metric_hits(metric, scored)) for metric in metrics},
        "per_attribute": {metric.name: per_attribute_of(metric, scored)
                          for metric in metrics if metric.per_attribute},
        "per_question": {
            source: {"question_ids": item_scores.qa.question_ids,
                     "exact_match": item_scores.qa.exact_match,
                     "first_token": item_scores.qa.first_token}
            for source, item_scores in scored.items() if item_scores.qa is not None},
    }


def flat_metrics(metrics: Mapping[str, Interval]) -> dict[str, float]:
    return {name: round(values["value"], 6) for name, values in metrics.items()}


RunHook = Callable[[RunConfig, torch.nn.Module, FactData, dict[str, Any]], dict[str, Any] | None]
"""Called after evaluation (e.g. the gradient trace); its return goes to result["trace"]. Its
context holds "initial_state", "run_dir" and, with a recorder, "training_scores_by_score"."""

RecorderFor = Callable[[RunConfig, torch.nn.Module], Any]
"""A recorder that sees every backward of training (or None): see Trainer.recorder."""

ReferenceRows = Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]]
"""The initial weights the hook keeps, cut to what this process holds of the prepared model
(under FSDP2, its shards' rows: see trace.ablation.own_rows_of)."""


@dataclass(frozen=True)
class _Extras:
    """What a run does around training: the trace's hooks and the runtime options."""

    after_eval: RunHook | None
    recorder_for: RecorderFor | None
    reference_rows: ReferenceRows | None
    options: RunOptions
    analyses: RunHook | None = None
    """The mechanism analyses (analyses.at_end), after the trace; their return is result["analyses"]
    and their context also holds "trace"."""


def run_one(config: RunConfig, runs_root: Path, after_eval: RunHook | None = None,
            recorder_for: RecorderFor | None = None, options: RunOptions | None = None,
            reference_rows: ReferenceRows | None = None, analyses: RunHook | None = None
            ) -> RunOutcome:
    """Run (or skip, or resume) one run.

    A run is the unit of failure: whatever goes wrong inside it (a diverging loss, a full disk,
    an unwritable folder, out of GPU memory, a model that will not load, a bug in the trace)
    makes it `failed` with a one-line reason, in its events and its outcome; it never raises,
    except for an interrupt (Ctrl-C, SIGTERM), which it notes in its events first. Under several
    processes (DDP) only RunFailed is caught, as every process meets it alike; anything else
    propagates, so the launcher stops all processes rather than leave some waiting.
    `options` (trackers, samples) change what is reported, never what is trained. The hooks
    (`after_eval`, `recorder_for`, `reference_rows`) are the trace's (trace.hook) and `analyses`
    the mechanism analyses' (analyses.at_end, after the trace), given by the caller: the runner
    knows neither.
    """
    folder = run_dir(runs_root, config)
    extras = _Extras(after_eval, recorder_for, reference_rows, options or RunOptions(), analyses)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with distributed.main_process_lock(RunFolder(folder).lock) as locked:
            if not locked:
                return RunOutcome(config.run_id, "busy", None, "another process is running it")
            return _run_guarded(config, folder, runs_root, extras)
    except OSError as error:  # the run's folder or its lock cannot be made
        return _failed(config, folder, error, "creating the run folder")


def _run_guarded(config: RunConfig, folder: Path, runs_root: Path, extras: _Extras) -> RunOutcome:
    stage = RunStage()
    try:
        return _run_locked(config, folder, runs_root, extras, stage)
    except KeyboardInterrupt:
        if distributed.is_main():
            RunFolder(folder).record_failure(config.run_id, INTERRUPTED_REASON)
        raise
    except Exception as error:
        return _failed(config, folder, error, stage.name)


INTERRUPTED_REASON = "interrupted (Ctrl-C or SIGTERM); its checkpoints are kept: rerun to resume"


@dataclass
class RunStage:
    """What a run is doing, for the reason of a failure ("disk full while training")."""

    name: str = "starting"


def _failed(config: RunConfig, folder: Path, error: Exception, stage: str) -> RunOutcome:
    if distributed.is_distributed() and not isinstance(error, RunFailed):
        raise error
    reason = failure_reason(error, stage)
    detail = None if isinstance(error, RunFailed) else "".join(traceback.format_exception(error))
    if distributed.is_main():
        RunFolder(folder).record_failure(config.run_id, reason, detail)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # what the failed run held, for the next run in this process
    return RunOutcome(config.run_id, "failed", None, reason)


OOM_HINT = ("lower the memory per micro-batch: raise train.grad_accum (a micro-batch is "
            "train.batch_size / train.grad_accum examples) or lower train.batch_size, set "
            "model.gradient_checkpointing = true, or lower eval.batch_size (evaluation and "
            "trace); sequences are as long as the data's longest example (no setting)")


def failure_reason(error: BaseException, stage: str) -> str:
    """One line: what went wrong, while doing what, and what to do about it."""
    if isinstance(error, RunFailed):
        return str(error)
    chain = _causes(error)
    if any(_is_out_of_memory(e) for e in chain):
        return f"out of GPU memory while {stage}: {OOM_HINT}"
    if any(_is_disk_full(e) for e in chain):
        return (f"disk full while {stage}{_file_of(chain)}: free space, then rerun to resume "
                "from the last checkpoint")
    refused = next((e for e in chain if isinstance(e, OSError) and e.errno in UNWRITABLE), None)
    if refused is not None:
        return (f"cannot write while {stage}{_file_of(chain)}: {refused.strerror}; fix the "
                "folder, then rerun to resume")
    if isinstance(error, UserError):
        return f"{stage}: {_first_line(error)}"
    return f"{stage}: {type(error).__name__}: {_first_line(error)}"


UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_out_of_memory(error: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(error, oom_type) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)  # safetensors (SafetensorError) and torch.save say it in words only
    return "No space left on device" in text or "StorageFull" in text or "file write failed" in text


def _file_of(chain: list[BaseException]) -> str:
    named = next((e for e in chain if isinstance(e, OSError) and e.filename), None)
    return f" ({named.filename})" if named is not None else ""


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _run_locked(config: RunConfig, folder: Path, runs_root: Path, extras: _Extras,
                stage: RunStage) -> RunOutcome:
    run = RunFolder(folder)
    existing = distributed.computed_on_main(lambda: run.finished_result(config))
    if existing is not None:
        return RunOutcome(config.run_id, "skipped", existing if distributed.is_main() else None)
    reused = distributed.computed_on_main(lambda: reuse_finished_run(runs_root, config))
    if reused is not None:
        return reused_outcome(config.run_id, reused if distributed.is_main() else None,
                              reused["reused_from"])
    events = run.event_log(config.run_id, writes=distributed.is_main())
    if distributed.is_main():
        run.write_run_config(config)
        for bad in corrupted_checkpoints(run.checkpoints):
            events.emit("warning", message=f"corrupted checkpoint {bad.name} skipped")
    stage.name = "starting the trackers" if extras.options.log_with else "preparing training"
    accelerator = accelerator_for(config.train.mixed_precision, extras.options.log_with,
                                  tracking_dir(folder))
    with tracking(accelerator, events, config.suite, config.run_id, run_config_dict(config)):
        result = _train_and_measure(config, folder, runs_root, events, accelerator, extras, stage)
        if result is None:  # a non-main process: the main one evaluated and wrote the result
            return RunOutcome(config.run_id, "finished", None)
        stage.name = "writing the result"
        run.write_result(result)
        events.emit("run_end", step=result["total_steps"], wall_s=result["timings"]["total_s"],
                    metrics=flat_metrics(result["metrics"]))
    return RunOutcome(config.run_id, "finished", result)


def _train_and_measure(config: RunConfig, folder: Path, runs_root: Path, events: EventLog,
                       accelerator: Accelerator, extras: _Extras, stage: RunStage
                       ) -> ResultDocument | None:
    """The run's result document (None in non-main processes, which only help train)."""
    started = time.perf_counter()
    trainer, data, initial_state = _prepared_trainer(config, folder, runs_root, events,
                                                     accelerator, extras, stage)
    model = trainer.accelerator.unwrap_model(trainer.model)  # under FSDP2: the same module
    stage.name = "training"
    timings = trainer.run()
    stage.name = "evaluating"
    eval_started = time.perf_counter()
    recall = evaluate_recall(model, data, config.eval.batch_size)
    eval_s = time.perf_counter() - eval_started
    events.emit("eval", phase="final", step=trainer.total_steps,
                metrics=flat_metrics(recall["metrics"]))
    if extras.options.log_samples:
        stage.name = "writing the samples"
        _write_samples(config, folder, runs_root, model, data, recall, events)
    after_eval = extras.after_eval
    stage.name = "tracing"
    trace_started = time.perf_counter()
    context = {"initial_state": initial_state, "run_dir": folder,
               "training_scores_by_score": (trainer.recorder.scores_by_score()
                                            if trainer.recorder else None)}
    trace = after_eval(config, model, data, context) if after_eval else None  # every process
    if trace is not None:
        events.emit("trace", summary=trace.get("summary", {}))
    timings = {**timings, "eval_s": eval_s, "trace_s": time.perf_counter() - trace_started}
    stage.name = "running the analyses"
    analyses = extras.analyses(config, model, data, {**context, "trace": trace}) \
        if extras.analyses else None  # one process only (analyses.at_end refuses a launcher)
    if not distributed.is_main():
        distributed.barrier()  # until the main process has written
        return None
    result = _result_document(config, folder, recall, trace, trainer.total_steps, timings, started)
    result["analyses"] = analyses
    distributed.barrier()
    return result


def _write_samples(config: RunConfig, folder: Path, runs_root: Path, model: torch.nn.Module,
                   data: FactData, recall: dict[str, Any], events: EventLog) -> None:
    """samples.jsonl and samples-summary.json (every process generates: FSDP2 needs them all;
    the main one writes)."""
    dataset = load_saved_dataset(ensure_dataset(config.data, runs_root / "data"))
    lines = samples.collect_samples(model, data, dataset, config.eval.batch_size)
    if not distributed.is_main():
        return
    identity = {key: getattr(config, key) for key in ("run_id", "suite", "variant", "strategy",
                                                      "seed")}
    samples.write_samples(folder, lines,
                          samples.summary_document({**identity, "model": config.model.name}, lines))
    differ = samples.disagreements(lines, recall["per_question"])
    if differ:
        events.emit("warning", message=f"samples: greedy generation and teacher-forced exact "
                    f"match disagree on {len(differ)} questions (e.g. {differ[0]})")


def _prepared_trainer(config: RunConfig, folder: Path, runs_root: Path, events: EventLog,
                      accelerator: Accelerator, extras: _Extras, stage: RunStage
                      ) -> tuple[Trainer, FactData, dict[str, Any] | None]:
    """Data, model (resumed, prepared) and trainer, and the initial weights the trace needs."""
    stage.name = "loading the data"
    data = load_fact_data(config.data, config.model, config.eval, runs_root / "data",
                          values_only_bio_loss=config.train.bio_loss == "values")
    stage.name = "loading the model"
    model = build_model(config.model, data.tokenizer, config.seed)
    warn_if_low_space(RunFolder(folder).checkpoints, model)  # before hours of training, not after
    stage.name = "preparing training"
    after_eval, recorder_for = extras.after_eval, extras.recorder_for
    plans = plan_run(config.phases, data.source_sizes(), config.train.batch_size, config.seed)
    # The ablation and grafting reset parameters to their values before fact training: keep a
    # copy only if something after evaluation (the trace, the analyses) will need it.
    initial_state = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                     if after_eval is not None or extras.analyses is not None else None)
    checkpoint_dir = RunFolder(folder).checkpoints
    resume_from = find_resume_checkpoint(checkpoint_dir)
    if resume_from is not None:
        resume_from.load_model(model)  # whole weights, before DDP copies or FSDP2 shards them
    prepared = prepared_for_training(accelerator, model)
    model = accelerator.unwrap_model(prepared)  # under FSDP2: the same module, sharded
    if initial_state is not None and extras.reference_rows and distributed.is_sharded(model):
        initial_state = extras.reference_rows(initial_state, model)  # 1/N of it per process
    steps = total_steps(plans)
    phase_end_eval = _phase_end_eval(model, data, config, events, steps) \
        if config.eval.at_phase_end and len(plans) > 1 else None
    trainer = Trainer(model=prepared, plans=plans, examples=data.examples,
                      train=config.train, accelerator=accelerator, events=events,
                      checkpoint_dir=checkpoint_dir, pad_id=data.pad_id, resume_from=resume_from,
                      recorder=recorder_for(config, prepared) if recorder_for else None,
                      on_phase_end=phase_end_eval)
    events.emit("run_start", suite=config.suite, variant=config.variant, strategy=config.strategy,
                model=config.model.name, seed=config.seed, config_hash=config_hash(config),
                total_steps=steps,
                resumed_from_step=resume_from.step if resume_from else None,
                phases=[{"name": p.phase.name, "steps": len(p.batches)} for p in plans])
    return trainer, data, initial_state


def _result_document(config: RunConfig, folder: Path, recall: dict[str, Any],
                     trace: dict[str, Any] | None, total_steps: int, timings: dict[str, float],
                     started: float) -> ResultDocument:
    """result.json's content (written by the main process only)."""
    history = read_events(RunFolder(folder).events).events
    return {
        "schema_version": RESULT_SCHEMA_VERSION, "run_id": config.run_id, "suite": config.suite,
        "variant": config.variant, "strategy": config.strategy, "model": config.model.name,
        "seed": config.seed, "config_hash": config_hash(config), "config": run_config_dict(config),
        "metrics": recall["metrics"], "per_attribute": recall["per_attribute"],
        "per_question": recall["per_question"],
        "phase_evals": phase_evals(history), "loss_curve": loss_curve(history),
        "trace": trace, "analyses": None, "total_steps": total_steps,
        "timings": {"train_s": timings["train_s"], "eval_s": timings["eval_s"],
                    "trace_s": timings["trace_s"],
                    "total_s": time.perf_counter() - started},
        "throughput": {"train_tokens_per_s": timings["train_tokens_per_s"]},
        "environment": environment_record(),
    }


def _phase_end_eval(model: torch.nn.Module, data: FactData, config: RunConfig, events: EventLog,
                    last_step: int) -> Callable[[str, int], None]:
    def evaluate_at(phase: str, step: int) -> None:
        if step == last_step:  # the final evaluation measures the end of the last phase
            return
        recall = evaluate_recall(model, data, config.eval.batch_size)
        events.emit("eval", phase=phase, step=step, metrics=flat_metrics(recall["metrics"]))
    return evaluate_at

