"""Influence scores: per task, an fp32 score per scalar parameter, from probe batches after training
(probe_scores) or summed over the optimizer steps of training (TrainingTraceRecorder); and the
batches, losses and parameters they are taken over.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from factrecall_bench.distributed import reshard
from factrecall_bench.trace.settings import Batch, Scores, TraceSettings

IGNORE_INDEX = -100


# ---------------------------------------------------------------- batches and losses


def scored_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters the trace scores: trainable ones, tied weights once (first name). Under
    FSDP2 the model is resharded first, so these are the sharded parameters."""
    reshard(model)
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def limit_examples(batches: Sequence[Batch], n_examples: int) -> list[dict[str, Tensor]]:
    """The first n_examples examples of batches, the last batch cut short if needed."""
    kept: list[dict[str, Tensor]] = []
    left = n_examples
    for batch in batches:
        if left <= 0:
            break
        kept.append({key: value[:left] for key, value in batch.items()})
        left -= batch["input_ids"].shape[0]
    return kept


def _single_examples(batches: Sequence[Batch]) -> Iterator[dict[str, Tensor]]:
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            yield {key: value[i : i + 1] for key, value in batch.items()}


def _batch_loss(model: nn.Module, batch: Batch) -> Tensor | None:
    """The model's mean loss on batch, or None when no token carries loss (labels shift by one)."""
    if not (batch["labels"][:, 1:] != IGNORE_INDEX).any():
        return None
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
    return model(**inputs).loss


@contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no stale gradients while probing; the mode is restored after."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


# ---------------------------------------------------------------- influence scores


def probe_scores(
    model: nn.Module, batches_by_task: Mapping[str, Sequence[Batch]], settings: TraceSettings
) -> dict[str, Scores]:
    """Per task, an fp32 score per scalar parameter: the mean over backward units (batches, or
    examples when aggregate is per_example) of |g|, times |theta| for grad_x_weight. Extra memory:
    one fp32 accumulator per task; no per-example gradient is kept. Leaves .grad cleared."""
    params = scored_parameters(model)
    scores: dict[str, Scores] = {}
    with _probing(model):
        for task, batches in batches_by_task.items():
            probe = limit_examples(batches, settings.probe_examples)
            units = _single_examples(probe) if settings.aggregate == "per_example" else probe
            scores[task] = _mean_abs_grad(model, params, units)
    if settings.score == "grad_x_weight":
        # theta does not move while probing, so sum_b |g_b * theta| = |theta| * sum_b |g_b|.
        for task_scores in scores.values():
            _times_abs_weight(task_scores, params)
    return scores


def _mean_abs_grad(
    model: nn.Module, params: Mapping[str, nn.Parameter], units: Iterator[Batch] | Sequence[Batch]
) -> Scores:
    acc = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    n_units = 0
    for unit in units:
        loss = _batch_loss(model, unit)
        if loss is None:
            continue
        loss.backward()
        for name, p in params.items():
            if p.grad is not None:
                acc[name].add_(p.grad.abs_())  # in place: this gradient is dropped right after
                p.grad = None
        n_units += 1
    for value in acc.values():
        value.div_(max(n_units, 1))
    return acc


@torch.no_grad()
def _times_abs_weight(scores: Scores, params: Mapping[str, nn.Parameter]) -> None:
    for name, value in scores.items():
        value.mul_(params[name].detach().abs())


class TrainingTraceRecorder:
    """Accumulates per-task scores during training. Per micro-batch: before_backward(), backward,
    after_backward(task) (the gradient added since before_backward belongs to task). Per optimizer
    step, after the last backward and before optimizer.step(): on_optimizer_step() adds |g_task|
    (or |g_task * theta|) of the step's summed per-task gradient, so k accumulated micro-batches
    score as one batch of their concatenation. Gradient-scaler or DDP-reduced gradients are taken
    as they stand in .grad. Extra memory (fp32, in parameter counts): a snapshot while a micro-batch
    runs, one step buffer per task, one score per task."""

    def __init__(self, model: nn.Module, settings: TraceSettings) -> None:
        self._params = scored_parameters(model)
        self._times_weight = settings.score == "grad_x_weight"
        self._snapshot: dict[str, Tensor] | None = None
        self._step_grads: dict[str, dict[str, Tensor]] = {}
        self._scores: dict[str, Scores] = {}
        self.steps = 0

    @torch.no_grad()
    def before_backward(self) -> None:
        # After zero_grad(set_to_none=True) there is nothing to copy: a missing entry means zero.
        self._snapshot = {
            name: p.grad.detach().float().clone()
            for name, p in self._params.items()
            if p.grad is not None
        }

    @torch.no_grad()
    def after_backward(self, task: str) -> None:
        if self._snapshot is None:
            raise RuntimeError("after_backward() called without before_backward()")
        buffers = self._step_grads.setdefault(task, {})
        for name, p in self._params.items():
            if p.grad is None:
                continue
            snapshot = self._snapshot.get(name)
            if snapshot is None:
                delta = p.grad.detach().to(torch.float32, copy=True)
            else:  # reuse the snapshot's memory for the delta
                delta = snapshot.neg_().add_(p.grad.detach())
            if name in buffers:
                buffers[name].add_(delta)
            else:
                buffers[name] = delta
        self._snapshot = None

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        if self._snapshot is not None:
            raise RuntimeError("on_optimizer_step() between before_backward() and after_backward()")
        for task, buffers in self._step_grads.items():
            task_scores = self._scores.setdefault(task, {})
            for name, grad in buffers.items():
                step_score = grad.abs_()
                if self._times_weight:
                    step_score.mul_(self._params[name].detach().abs())
                if name in task_scores:
                    task_scores[name].add_(step_score)
                else:
                    task_scores[name] = step_score
        self._step_grads = {}
        self.steps += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The summed scores so far and the step count, flat ("task/parameter"), on CPU: what a
        checkpoint keeps so that a resumed run goes on summing (call between optimizer steps)."""
        if self._step_grads or self._snapshot is not None:
            raise RuntimeError("state_dict() in the middle of an optimizer step")
        state = {f"{task}/{name}": value.detach().cpu().contiguous()
                 for task, task_scores in self._scores.items()
                 for name, value in task_scores.items()}
        state["steps"] = torch.tensor([self.steps], dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        unknown = [key for key in state if key != "steps"
                   and key.partition("/")[2] not in self._params]
        if unknown:
            raise ValueError(f"recorder state for unknown parameters: {unknown[:3]}")
        self._scores = {}
        for key, value in state.items():
            if key == "steps":
                continue
            task, _, name = key.partition("/")
            device = self._params[name].device
            self._scores.setdefault(task, {})[name] = value.to(device=device, dtype=torch.float32)
        self.steps = int(state["steps"][0]) if "steps" in state else 0

    def scores(self) -> dict[str, Scores]:
        """Summed scores so far (live tensors: clone them to keep a snapshot), every scored
        parameter present (zeros where the task never reached it)."""
        return {
            task: {
                name: task_scores.get(name, torch.zeros_like(p, dtype=torch.float32))
                for name, p in self._params.items()
            }
            for task, task_scores in self._scores.items()
        }
