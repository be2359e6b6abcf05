"""The training loop on `accelerate`: phases, AdamW, warmup + cosine, clipping, accumulation.

One optimizer step sees `batch_size` examples split into `grad_accum` micro-batches; the loss is
the sum of token losses over the whole step divided by the step's loss-token count, so k
accumulated micro-batches give exactly the update of one batch of their concatenation.
Checkpoints are written atomically; a resumed run continues from the latest valid one.

Under DDP or FSDP2 (several processes) each process takes every world_size-th example of each
micro-batch, and the loss is divided by the whole step's loss-token count over world_size (both
average the processes' gradients), so the update equals one process's. Only the main process
writes; under FSDP2 all of them first gather the state it writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from factrecall_bench import distributed
from factrecall_bench.batching import (
    Batch,
    MicroBatch,
    PhasePlan,
    loss_tokens,
    make_micro_batch,
    split_micro_batches,
)
from factrecall_bench.checkpoints import (
    Checkpoint,
    gather_sharded_state,
    latest_checkpoint,
    save_checkpoint,
)
from factrecall_bench.config import Phase, TrainSpec
from factrecall_bench.data.examples import IGNORE, Example
from factrecall_bench.errors import RunFailed, UserError
from factrecall_bench.events import EventLog
from factrecall_bench.packing import TASKS, at_least_float32, packed_token_losses, task_sums

PhaseEndHook = Callable[[str, int], None]


@dataclass
class StepLosses:
    """Summed token losses and token counts of one optimizer step, per task (kept on device)."""

    loss_sum: dict[str, torch.Tensor]
    tokens: dict[str, int]

    def mean(self) -> float:
        total = sum(self.tokens.values())
        return float(sum(self.loss_sum.values()).item()) / max(total, 1)  # type: ignore[union-attr]

    def task_means(self) -> dict[str, float]:
        return {f"loss_{task}": float(self.loss_sum[task].item()) / count
                for task, count in self.tokens.items() if count}

    def summed_over_processes(self, accelerator: Accelerator) -> StepLosses:
        """The step's losses over every process (the same on all, so all judge divergence alike)."""
        if accelerator.num_processes == 1:
            return self
        tasks = ("bio", "qa")
        local = torch.tensor([[float(self.loss_sum[task]) if task in self.loss_sum else 0.0,
                               float(self.tokens.get(task, 0))] for task in tasks],
                             dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, reduction="sum")
        return StepLosses({task: total[i, 0] for i, task in enumerate(tasks) if total[i, 1] > 0},
                          {task: int(total[i, 1]) for i, task in enumerate(tasks) if total[i, 1] > 0})


def token_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[batch, width-1] next-token cross-entropy, 0 where the label is ignored."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    losses = F.cross_entropy(at_least_float32(logits[:, :-1]).reshape(-1, logits.size(-1)),
                             targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    return losses.view(targets.shape)


def task_losses(model: torch.nn.Module, micro: MicroBatch) -> dict[str, tuple[torch.Tensor, int]]:
    """Summed token loss (a device tensor) and loss-token count (known on the host) per task.

    Nothing here reads a tensor back: the tasks and counts come with the micro-batch, and rows
    or positions of a task are picked by precomputed indices, not boolean masks.
    """
    if micro.packed:
        sums = task_sums(packed_token_losses(model, micro.tensors), micro.tensors["loss_task"])
        return {task: (sums[TASKS.index(task)], count)
                for task, count in micro.task_tokens.items()}
    losses = token_losses(model, micro.tensors)
    if not micro.task_rows:  # one task: all rows (the same sum as picking them all)
        return {task: (losses.sum(), count) for task, count in micro.task_tokens.items()}
    return {task: (losses.index_select(0, micro.task_rows[task]).sum(), count)
            for task, count in micro.task_tokens.items()}


def _host_described(batch: dict[str, torch.Tensor]) -> MicroBatch:
    """A padded batch from a caller that brings no host-side description: its tasks and counts
    read back from the tensors (a synchronisation the Trainer's own micro-batches avoid)."""
    counted = batch["labels"][:, 1:] != IGNORE
    task_tokens, task_rows = {}, {}
    for task, rows in (("qa", batch["is_qa"]), ("bio", ~batch["is_qa"])):
        if rows.any():
            task_tokens[task] = int(counted[rows].sum())
            task_rows[task] = rows.nonzero().flatten()
    return MicroBatch(batch, task_tokens, task_rows if len(task_tokens) > 1 else {})


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   micro_batches: list[MicroBatch] | list[dict[str, torch.Tensor]],
                   accelerator: Accelerator, clip_norm: float, recorder: Any = None,
                   normalizer: float | None = None) -> StepLosses:
    """Forward/backward every micro-batch, clip, step; returns this process's per-task losses.

    The summed token loss is divided by `normalizer`: by default the micro-batches' loss-token
    count; under DDP the whole step's count over the number of processes.
    """
    micros = [m if isinstance(m, MicroBatch) else _host_described(m) for m in micro_batches]
    total_tokens = normalizer or max(sum(sum(m.task_tokens.values()) for m in micros), 1)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for index, micro in enumerate(micros):
        last = index == len(micros) - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            per_task = task_losses(model, micro)
            _backward(per_task, total_tokens, accelerator, recorder)
        for task, (loss_sum, count) in per_task.items():
            sums[task] = sums.get(task, 0) + loss_sum.detach()  # type: ignore[assignment]
            counts[task] = counts.get(task, 0) + count
    if clip_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), clip_norm)
    if recorder is not None:  # the rate this step applies: the trace's "update" weights by it
        recorder.on_optimizer_step(lr=float(optimizer.param_groups[0]["lr"]))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepLosses(sums, counts)


def _backward(per_task: dict[str, tuple[torch.Tensor, int]], total_tokens: float,
              accelerator: Accelerator, recorder: Any) -> None:
    if recorder is None:
        accelerator.backward(sum(loss for loss, _ in per_task.values()) / total_tokens)
        return
    tasks = list(per_task)
    for position, task in enumerate(tasks):
        recorder.before_backward()
        accelerator.backward(per_task[task][0] / total_tokens,
                             retain_graph=position < len(tasks) - 1)
        recorder.after_backward(task)


def make_optimizer(model: torch.nn.Module, phase: Phase, train: TrainSpec
                   ) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW is one kernel for all parameters, but exists only on CUDA; foreach elsewhere
    # (the CPU numbers depend on it).
    on_cuda = all(p.is_cuda for p in decay + no_decay)
    implementation = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(groups, lr=phase.lr, betas=(train.beta1, train.beta2),
                             **implementation)


def make_scheduler(optimizer: torch.optim.Optimizer, steps: int, train: TrainSpec
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train.warmup_fraction * steps),
        num_training_steps=max(steps, 1), min_lr_rate=train.min_lr_fraction)


def find_resume_checkpoint(checkpoint_dir: Path) -> Checkpoint | None:
    """The latest valid checkpoint of a run, found (and verified) by the main process and shared
    with the others. Load its model weights (`load_model`) before the model is prepared."""
    return distributed.computed_on_main(lambda: latest_checkpoint(checkpoint_dir))


def total_steps(plans: list[PhasePlan]) -> int:
    """Optimizer steps of a run: every phase's batches."""
    return sum(len(plan.batches) for plan in plans)


@dataclass
class Trainer:
    """Runs a plan of phases on one model, writing events and checkpoints."""

    model: torch.nn.Module
    """The model being trained, as accelerate prepared it (DDP-wrapped, FSDP2-sharded)."""
    plans: list[PhasePlan]
    examples: dict[str, list[Example]]
    train: TrainSpec
    accelerator: Accelerator
    events: EventLog
    checkpoint_dir: Path
    pad_id: int
    resume_from: Checkpoint | None = None
    """The checkpoint to go on from (`find_resume_checkpoint`); its model weights are already in
    `model`, loaded before the model was prepared (sharded). None: train from the start."""
    recorder: Any = None
    """Sees every backward (the gradient trace's training mode: TrainingTraceRecorder); its
    state is saved with every checkpoint and restored on resume."""
    on_phase_end: PhaseEndHook | None = None

    def __post_init__(self) -> None:
        # The packed forward calls the decoder and the LM head itself, past the DDP / FSDP2
        # wrapper's forward (which prepares gradient reduction and unsharding): one process only.
        if self.train.packing and self.accelerator.num_processes > 1:
            raise UserError("train.packing runs on one process for now (not under DDP or FSDP2)")

    @property
    def total_steps(self) -> int:
        return total_steps(self.plans)

    def run(self) -> dict[str, Any]:
        """Train to the end (resuming from `resume_from`, whose weights the model already holds);
        returns timing and throughput."""
        resume = self.resume_from
        if resume is not None:
            if self.recorder is not None:
                resume.load_recorder(self.recorder)
            self.events.emit("resume", step=resume.step, path=str(resume.path))
        started, tokens = time.perf_counter(), 0
        global_step = 0
        for phase_index, plan in enumerate(self.plans):
            first = global_step
            global_step += len(plan.batches)
            if resume is not None and resume.step >= global_step:
                continue
            done_in_phase = resume.step - first if resume is not None and resume.step > first else 0
            tokens += self._run_phase(phase_index, plan, first, done_in_phase, resume)
        wall = time.perf_counter() - started
        return {"train_s": wall, "train_tokens": tokens,
                "train_tokens_per_s": tokens / wall if wall > 0 else 0.0}

    def _run_phase(self, phase_index: int, plan: PhasePlan, first_step: int, done: int,
                   resume: Checkpoint | None) -> int:
        optimizer = make_optimizer(self.model, plan.phase, self.train)
        scheduler = make_scheduler(optimizer, len(plan.batches), self.train)
        if done and resume is not None:
            resume.load_optimizer(optimizer, scheduler, self.model)
        optimizer = self.accelerator.prepare_optimizer(optimizer)
        self.events.emit("phase_start", phase=plan.phase.name, phase_index=phase_index,
                         steps=len(plan.batches))
        tokens, window_start, window_tokens = 0, time.perf_counter(), 0
        for offset in range(done, len(plan.batches)):
            step = first_step + offset + 1
            lr = float(scheduler.get_last_lr()[0])  # the rate this step uses (logged with it)
            losses, step_tokens = self._step(optimizer, plan.batches[offset])
            scheduler.step()
            tokens, window_tokens = tokens + step_tokens, window_tokens + step_tokens
            phase_done = offset + 1 == len(plan.batches)
            if step % self.train.log_every == 0 or phase_done:
                rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                self._log_step(plan.phase, step, losses, lr, rate)
                window_start, window_tokens = time.perf_counter(), 0
            if step % self.train.checkpoint_every == 0 or phase_done:
                self._checkpoint(step, optimizer, scheduler, phase_done)
        self.events.emit("phase_end", phase=plan.phase.name, step=first_step + len(plan.batches))
        if self.on_phase_end is not None:
            self.on_phase_end(plan.phase.name, first_step + len(plan.batches))
        return tokens

    def _step(self, optimizer: torch.optim.Optimizer, batch: Batch) -> tuple[StepLosses, int]:
        """One optimizer step; returns this process's losses and the step's tokens (all processes)."""
        examples = [[self.examples[source][index] for source, index in micro]
                    for micro in split_micro_batches(batch, self.train.grad_accum,
                                                     sources_apart=not self.train.packing)]
        step_tokens = sum(len(example.input_ids) for micro in examples for example in micro)
        step_loss_tokens = max(sum(loss_tokens(e) for micro in examples for e in micro), 1)
        micro_batches = [self._local_micro_batch(micro) for micro in examples]
        self.model.train()
        losses = optimizer_step(self.model, optimizer, micro_batches, self.accelerator,
                                self.train.clip_norm, self.recorder,
                                normalizer=step_loss_tokens / self.accelerator.num_processes)
        return losses, step_tokens

    def _local_micro_batch(self, micro: list[Example]) -> MicroBatch:
        """This process's share of a micro-batch, on its device.

        A process whose share is empty still runs forward and backward (DDP reduces gradients
        in every backward) on one example whose loss is masked out: it adds zero gradient.
        """
        share = distributed.shard(micro)
        built = make_micro_batch(share or micro[:1], self.pad_id, packing=self.train.packing,
                                 pack_width=self.train.pack_width, carries_loss=bool(share))
        return built.to(self.accelerator.device)

    def _log_step(self, phase: Phase, step: int, losses: StepLosses, lr: float,
                  tokens_per_s: float) -> None:
        """The `step` event: the step's losses and the learning rate the step used (read before
        the scheduler moves on, not the next step's)."""
        losses = losses.summed_over_processes(self.accelerator)
        loss = losses.mean()
        if not math.isfinite(loss) or loss > self.train.divergence_loss:
            raise RunFailed(f"loss diverged at step {step}: {loss}")
        self.events.emit("step", phase=phase.name, step=step, loss=round(loss, 6),
                         lr=lr, tokens_per_s=round(tokens_per_s, 1),
                         **{k: round(v, 6) for k, v in losses.task_means().items()})

    def _checkpoint(self, step: int, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LambdaLR, phase_done: bool) -> None:
        gathered = (gather_sharded_state(self.model, getattr(optimizer, "optimizer", optimizer))
                    if distributed.is_sharded(self.model) else None)
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        recorder_state = self.recorder.state_dict() if self.recorder is not None else None
        path = save_checkpoint(self.checkpoint_dir, step, model, optimizer, scheduler,
                               phase_done=phase_done, gathered=gathered,
                               recorder_state=recorder_state)
        self.events.emit("checkpoint", step=step, path=str(path))
