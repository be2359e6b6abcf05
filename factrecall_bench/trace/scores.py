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
    return probe_scores_by_score(model, batches_by_task, settings, (settings.score,))[settings.score]


def probe_scores_by_score(
    model: nn.Module,
    batches_by_task: Mapping[str, Sequence[Batch]],
    settings: TraceSettings,
    score_names: Sequence[str],
) -> dict[str, dict[str, Scores]]:
    """probe_scores under each of score_names ("grad", "grad_x_weight"), from one set of
    backward passes: by score, then task."""
    unknown = [name for name in score_names if name not in ("grad", "grad_x_weight")]
    if unknown:
        raise ValueError(f"probe scores are grad or grad_x_weight, not {unknown}")
    params = scored_parameters(model)
    grads: dict[str, Scores] = {}
    with _probing(model):
        for task, batches in batches_by_task.items():
            probe = limit_examples(batches, settings.probe_examples)
            units = _single_examples(probe) if settings.aggregate == "per_example" else probe
            grads[task] = _mean_abs_grad(model, params, units)
    by_score: dict[str, dict[str, Scores]] = {}
    for name in score_names:
        if name == "grad":
            by_score[name] = grads
        else:  # theta does not move while probing: sum_b |g_b * theta| = |theta| * sum_b |g_b|
            by_score[name] = {task: _times_abs_weight(task_scores, params)
                              for task, task_scores in grads.items()}
    return by_score


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
def _times_abs_weight(scores: Scores, params: Mapping[str, nn.Parameter]) -> Scores:
    return {name: value * params[name].detach().abs() for name, value in scores.items()}


class TrainingTraceRecorder:
    """Accumulates per-task scores during training. Per micro-batch: before_backward(), backward,
    after_backward(task) (the gradient added since before_backward belongs to task). Per optimizer
    step, after the last backward and before optimizer.step(): on_optimizer_step(lr) adds, for
    every score the settings' definitions need, the step's summed per-task gradient g: |g| for
    "grad", |g * theta| for "grad_x_weight", lr * g (signed; its absolute value is the score) for
    "update". So k accumulated micro-batches score as one batch of their concatenation, and all
    definitions come from the same backward passes. Gradients are taken as they stand in .grad
    before clipping (the gradient of the loss the optimizer minimizes). Extra memory (fp32, in
    parameter counts): a snapshot while a micro-batch runs, one step buffer per task, one
    accumulator per task and score."""

    def __init__(self, model: nn.Module, settings: TraceSettings) -> None:
        self._params = scored_parameters(model)
        self.score_names = settings.training_scores_needed() or (settings.score,)
        # The settings' own score, or (main definition in probe mode) the first one recorded.
        self.main_score = settings.score if settings.score in self.score_names else \
            self.score_names[0]
        self._snapshot: dict[str, Tensor] | None = None
        self._step_grads: dict[str, dict[str, Tensor]] = {}
        self._sums: dict[str, dict[str, Scores]] = {score: {} for score in self.score_names}
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
    def on_optimizer_step(self, lr: float | None = None) -> None:
        """Add this step's per-task gradients to every accumulator; lr is the learning rate the
        optimizer is about to apply (needed by "update")."""
        if self._snapshot is not None:
            raise RuntimeError("on_optimizer_step() between before_backward() and after_backward()")
        if "update" in self.score_names and lr is None:
            raise ValueError("trace score 'update' needs the step's learning rate")
        for task, buffers in self._step_grads.items():
            for name, grad in buffers.items():
                for score, term in self._step_terms(name, grad, lr).items():
                    self._add(score, task, name, term)
        self._step_grads = {}
        self.steps += 1

    def _step_terms(self, name: str, grad: Tensor, lr: float | None) -> dict[str, Tensor]:
        """This step's term of every accumulated score; |g| is taken once for grad and
        grad_x_weight."""
        terms: dict[str, Tensor] = {}
        if "update" in self.score_names:
            terms["update"] = grad * float(lr)  # type: ignore[arg-type]
        if "grad" in self.score_names or "grad_x_weight" in self.score_names:
            magnitude = grad.abs_()  # the step buffer is dropped after this step
            if "grad_x_weight" in self.score_names:
                terms["grad_x_weight"] = magnitude * self._params[name].detach().abs().float()
            if "grad" in self.score_names:
                terms["grad"] = magnitude
        return terms

    def _add(self, score: str, task: str, name: str, term: Tensor) -> None:
        task_sums = self._sums[score].setdefault(task, {})
        if name in task_sums:
            task_sums[name].add_(term)
        else:
            task_sums[name] = term

    def state_dict(self) -> dict[str, Tensor]:
        """The sums so far and the step count, flat ("score/task/parameter"), on CPU: what a
        checkpoint keeps so that a resumed run goes on summing (call between optimizer steps)."""
        if self._step_grads or self._snapshot is not None:
            raise RuntimeError("state_dict() in the middle of an optimizer step")
        state = {f"{score}/{task}/{name}": value.detach().cpu().contiguous()
                 for score, sums in self._sums.items()
                 for task, task_sums in sums.items()
                 for name, value in task_sums.items()}
        state["steps"] = torch.tensor([self.steps], dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load state_dict()'s output; keys "task/parameter" (written before the recorder held
        several scores) are the main score's."""
        entries = [(self._state_key(key), value) for key, value in state.items() if key != "steps"]
        unknown = [f"{s}/{t}/{n}" for (s, t, n), _ in entries
                   if n not in self._params or s not in self._sums]
        if unknown:
            raise ValueError(f"recorder state for unknown parameters or scores: {unknown[:3]}")
        missing = [score for score in self.score_names
                   if entries and not any(s == score for (s, _, _), _ in entries)]
        if missing:
            raise ValueError(f"recorder state holds no sums for score(s) {missing}: the "
                             "checkpoint was written with other trace definitions")
        self._sums = {score: {} for score in self.score_names}
        for (score, task, name), value in entries:
            device = self._params[name].device
            self._sums[score].setdefault(task, {})[name] = value.to(device=device,
                                                                    dtype=torch.float32)
        self.steps = int(state["steps"][0]) if "steps" in state else 0

    def _state_key(self, key: str) -> tuple[str, str, str]:
        parts = key.split("/", 2)
        if len(parts) == 2:
            return (self.main_score, parts[0], parts[1])
        return (parts[0], parts[1], parts[2])

    def scores(self, score: str | None = None) -> dict[str, Scores]:
        """Per task, the scores so far under `score` (the settings' score by default): the sums,
        or |sum| for "update". Every scored parameter is present (zeros where the task never
        reached it). Live tensors except for "update": clone them to keep a snapshot."""
        score = score or self.main_score
        if score not in self._sums:
            raise ValueError(f"the recorder did not accumulate score {score!r}")
        return {
            task: {
                name: self._finished(score, task_sums.get(name), p)
                for name, p in self._params.items()
            }
            for task, task_sums in self._sums[score].items()
        }

    def scores_by_score(self) -> dict[str, dict[str, Scores]]:
        """scores() of every accumulated score, by score name."""
        return {score: self.scores(score) for score in self.score_names}

    def signed_updates(self) -> dict[str, Scores]:
        """Per task, the signed sum of lr * gradient ("update" must be accumulated)."""
        if "update" not in self._sums:
            raise ValueError("the recorder did not accumulate score 'update'")
        return {task: dict(task_sums) for task, task_sums in self._sums["update"].items()}

    @staticmethod
    def _finished(score: str, value: Tensor | None, param: nn.Parameter) -> Tensor:
        if value is None:
            return torch.zeros_like(param, dtype=torch.float32)
        return value.abs() if score == "update" else value
