"""One process of tests/integration/test_fsdp.py, under `torchrun --nproc_per_node 2` on CPU (gloo).

First the run goes through the DDP path (which equals one process, see test_distributed.py).
Then the same run goes through FSDP2: accelerate picks FSDP only when it sees GPUs, so here its
state is switched to FSDP2 by hand (`as_fsdp2`); from there on everything is the code a GPU runs:
accelerate's FSDP2 preparation (torch's `fully_shard` on each decoder layer and the root), its
no_sync and clipping, and the library's Trainer (with checkpoints and a resume), evaluation and
gradient trace. The main process writes what both gave to the JSON file named by argv[2].

Usage: torchrun --standalone --nproc_per_node 2 tests/integration/fsdp_worker.py SUITE.toml OUT.json WORK_DIR
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from factrecall_bench import distributed
from factrecall_bench.batching import plan_run
from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.data.facts import load_fact_data
from factrecall_bench.errors import UserError
from factrecall_bench.events import EventLog, read_events
from factrecall_bench.models import build_model
from factrecall_bench.runner import accelerator_for, evaluate_recall, prepared_for_training
from factrecall_bench.suite import load_suite
from factrecall_bench.trace import TraceSettings, own_rows_of, trace_summary
from factrecall_bench.trace.hook import ablation_evaluator, probe_batches
from factrecall_bench.train import Trainer, find_resume_checkpoint, make_optimizer, make_scheduler

EVAL_BATCH = 3  # small, so the two processes' shares take different numbers of batches


def as_fsdp2(accelerator: Accelerator) -> Accelerator:
    """The decision `accelerate launch --config_file configs/accelerate/fsdp2.yaml` makes on GPUs."""
    PartialState().distributed_type = DistributedType.FSDP  # accelerate copies it from here
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
        state_dict_type="FULL_STATE_DICT")
    assert accelerator.is_fsdp2
    return accelerator


def whole_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if distributed.is_sharded(model):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def train(config, data, model, folder: Path, fsdp: bool) -> dict:
    """Train with the library's Trainer (resuming from folder's checkpoints): the step it resumed
    from and the losses logged since. One accelerator per run, as the runner has."""
    accelerator = accelerator_for("no")
    if fsdp:
        as_fsdp2(accelerator)
    plans = plan_run(config.phases, data.source_sizes(), config.train.batch_size, config.seed)
    events = EventLog(folder / "events.jsonl", config.run_id, writes=distributed.is_main())
    resume_from = find_resume_checkpoint(folder / "checkpoints")
    if resume_from is not None:
        resume_from.load_model(model)
    prepared = prepared_for_training(accelerator, model)
    assert distributed.is_sharded(prepared) == accelerator.is_fsdp2
    # As the runner does: evaluate between the stages, then train on (FSDP2 leaves the root
    # gathered after a no_grad forward; training must go on from there).
    trainer = Trainer(model=prepared, plans=plans, examples=data.examples, train=config.train,
                      accelerator=accelerator, events=events, checkpoint_dir=folder / "checkpoints",
                      pad_id=data.pad_id, resume_from=resume_from,
                      on_phase_end=lambda phase, step: evaluate_recall(model, data, EVAL_BATCH))
    trainer.run()
    distributed.barrier()
    events = read_events(folder / "events.jsonl").events
    resumes = [index for index, event in enumerate(events) if event["event"] == "resume"]
    since = resumes[-1] if resumes else 0
    return {"resumed_from": events[since]["step"] if resumes else None,
            "losses": [[e["step"], e["loss"]] for e in events[since:] if e["event"] == "step"]}


def load_optimizer_state(checkpoint_dir: Path, model: torch.nn.Module, config) -> dict:
    """Load a checkpoint's optimizer state into a fresh AdamW of `model`: its first-moment sum,
    or the one-line refusal."""
    checkpoint = latest_checkpoint(checkpoint_dir)
    phase = config.phases[-1]
    optimizer = make_optimizer(model, phase, config.train)
    try:
        checkpoint.load_optimizer(optimizer, make_scheduler(optimizer, 10, config.train), model)
    except UserError as refusal:
        return {"refused": str(refusal)}
    moments = [state["exp_avg"] for state in optimizer.state.values()]
    local = torch.tensor(sum(float(m.to_local().abs().sum()) if hasattr(m, "to_local")
                             else float(m.abs().sum()) for m in moments), dtype=torch.float64)
    if distributed.is_sharded(model):
        torch.distributed.all_reduce(local)
    return {"exp_avg_abs_sum": float(local), "tensors": len(moments)}


def trace(model: torch.nn.Module, data, initial: dict[str, torch.Tensor]) -> dict:
    settings = TraceSettings(top_k=(0.01, 0.1), probe_examples=12, ablation_random_draws=2,
                             seed=5)
    batches = probe_batches(data, settings)
    agree = None if distributed.is_sharded(model) else distributed.tensors_from_main
    if distributed.is_sharded(model):  # as the runner keeps it: each process its own rows
        initial = own_rows_of(initial, model)
    result = trace_summary(model, batches, settings, reference_state=initial,
                           evaluate=ablation_evaluator(data, EVAL_BATCH), agree_on_scores=agree)
    per_matrix = trace_summary(model, batches, TraceSettings(
        top_k=(0.05,), probe_examples=12, ranking="per_matrix", score="grad",
        ablation_random_draws=0), agree_on_scores=agree)
    return {"global": result, "per_matrix": per_matrix}


def main(suite_path: str, out: str, work: str) -> None:
    (config,) = load_suite(Path(suite_path)).runs
    work_dir = Path(work)
    data = load_fact_data(config.data, config.model, config.eval, work_dir / "data")
    built = build_model(config.model, data.tokenizer, config.seed)
    initial = whole_state(built)
    results: dict = {}
    trained = {}
    for layout in ("ddp", "fsdp"):
        model = copy.deepcopy(built)
        results[layout] = train(config, data, model, work_dir / layout, fsdp=layout == "fsdp")
        trained[layout] = model
        results[f"{layout}_checkpoints"] = sorted(
            p.name for p in (work_dir / layout / "checkpoints").glob("step-*"))
    # Resume the sharded run from its earlier (mid-phase) checkpoint: the same weights at the end.
    if distributed.is_main():
        shutil.copytree(work_dir / "fsdp", work_dir / "fsdp-resumed")
        shutil.rmtree(max((work_dir / "fsdp-resumed" / "checkpoints").glob("step-*")))
    distributed.barrier()
    resumed = copy.deepcopy(built)
    results["fsdp_resumed"] = train(config, data, resumed, work_dir / "fsdp-resumed", fsdp=True)
    weights = {layout: whole_state(model) for layout, model in trained.items()}
    weights["fsdp_resumed"] = whole_state(resumed)
    results["max_weight_difference"] = {
        f"{a}_vs_{b}": max(float((weights[a][key] - weights[b][key]).abs().max())
                           for key in weights[b])
        for a, b in (("fsdp", "ddp"), ("fsdp_resumed", "fsdp"))}
    # Checkpoints across layouts: a sharded run's loads whole; a whole run's is refused sharded.
    results["optimizer_loads"] = {
        "fsdp_into_whole": load_optimizer_state(work_dir / "fsdp" / "checkpoints",
                                                copy.deepcopy(built), config),
        "fsdp_into_sharded": load_optimizer_state(work_dir / "fsdp" / "checkpoints",
                                                  trained["fsdp"], config),
        "whole_into_sharded": load_optimizer_state(work_dir / "ddp" / "checkpoints",
                                                   trained["fsdp"], config)}
    # Evaluation and trace of the same weights, whole and sharded.
    plain = trained["ddp"]  # the module DDP wrapped
    plain.load_state_dict(weights["fsdp"])
    results["recall"] = {layout: evaluate_recall(model, data, EVAL_BATCH)
                         for layout, model in (("ddp", plain), ("fsdp", trained["fsdp"]))}
    results["trace"] = {layout: trace(model, data, initial)
                        for layout, model in (("ddp", plain), ("fsdp", trained["fsdp"]))}
    if distributed.is_main():
        Path(out).write_text(json.dumps(results))
    distributed.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:4])
