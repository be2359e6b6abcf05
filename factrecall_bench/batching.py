"""The batch plan of a run: which examples each optimizer step sees, fixed by the seed up front.

Because the whole plan is a pure function of (phases, source sizes, batch size, seed), a resumed
run replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from factrecall_bench.config import Phase
from factrecall_bench.data.examples import IGNORE, Example
from factrecall_bench.packing import pack

Batch = list[tuple[str, int]]
"""One optimizer step's examples as (source, index into that source)."""


@dataclass(frozen=True)
class PhasePlan:
    phase: Phase
    batches: list[Batch]


def example_counts(phase: Phase, source_sizes: dict[str, int]) -> dict[str, int]:
    """Examples per source in a phase: `epochs` fixes the total; `mix` (if set) splits it."""
    counts = {source: round(epochs * source_sizes[source]) for source, epochs in phase.epochs.items()}
    if not phase.mix:
        return counts
    total, share_sum = sum(counts.values()), sum(phase.mix.values())
    return {source: round(total * share / share_sum) for source, share in phase.mix.items()}


def _index_stream(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` indices into a source: whole shuffled epochs, then a shuffled partial one."""
    epochs = math.ceil(count / size) if size else 0
    return np.concatenate([rng.permutation(size) for _ in range(epochs)] or [np.array([], int)])[
        :count]


def plan_phase(phase: Phase, source_sizes: dict[str, int], batch_size: int,
               rng: np.random.Generator) -> PhasePlan:
    counts = {source: count for source, count in example_counts(phase, source_sizes).items()
              if count > 0}
    streams = {source: _index_stream(source_sizes[source], count, rng).tolist()
               for source, count in counts.items()}
    order = rng.permutation(np.repeat(np.arange(len(counts)), list(counts.values())))
    sources = list(counts)
    cursors = dict.fromkeys(sources, 0)
    items: Batch = []
    for source_index in order.tolist():
        source = sources[source_index]
        items.append((source, streams[source][cursors[source]]))
        cursors[source] += 1
    batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
    return PhasePlan(phase, batches)


def plan_run(phases: tuple[Phase, ...], source_sizes: dict[str, int], batch_size: int,
             seed: int) -> list[PhasePlan]:
    rng = np.random.default_rng([seed, 1])
    return [plan_phase(phase, source_sizes, batch_size, rng) for phase in phases]


def split_micro_batches(batch: Batch, grad_accum: int, sources_apart: bool = True) -> list[Batch]:
    """At most ceil(len/grad_accum) examples each, and (by default) one source each.

    Keeping short QA and long BIO examples apart saves the padding a mixed batch would carry;
    packed rows carry no such padding, so with packing a mixed step is one micro-batch
    (`sources_apart=False`). The loss is normalized over the whole step, so the split does not
    change the update.
    """
    size = math.ceil(len(batch) / grad_accum)
    if not sources_apart:
        return [batch[i:i + size] for i in range(0, len(batch), size)]
    micro_batches = []
    for source in sorted({source for source, _ in batch}):
        same_source = [item for item in batch if item[0] == source]
        micro_batches += [same_source[i:i + size] for i in range(0, len(same_source), size)]
    return micro_batches


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding carries no loss and no attention."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
    is_qa = torch.tensor([example.task == "qa" for example in examples])
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
            "is_qa": is_qa}


@dataclass
class MicroBatch:
    """One micro-batch's tensors and what the host knows about them, so that the training step
    never has to read a tensor back to learn which tasks it holds or how many tokens carry loss."""

    tensors: dict[str, torch.Tensor]
    task_tokens: dict[str, int]
    """Loss-carrying tokens per task present ("qa" before "bio"; 0 where labels are masked)."""
    task_rows: dict[str, torch.Tensor] = field(default_factory=dict)
    """Padded and holding both tasks: each task's row indices (empty otherwise)."""

    @property
    def packed(self) -> bool:
        return "loss_index" in self.tensors

    def to(self, device: torch.device) -> MicroBatch:
        """On `device`; on CUDA through pinned memory, without blocking the host."""
        def move(tensor: torch.Tensor) -> torch.Tensor:
            if device.type != "cuda":
                return tensor.to(device)
            return tensor.pin_memory().to(device, non_blocking=True)

        return MicroBatch({name: move(t) for name, t in self.tensors.items()}, self.task_tokens,
                          {task: move(rows) for task, rows in self.task_rows.items()})


def loss_tokens(example: Example) -> int:
    """Tokens that carry loss in one example (labels are predicted from the position before)."""
    return sum(label != IGNORE for label in example.labels[1:])


def make_micro_batch(examples: list[Example], pad_id: int, packing: bool = False,
                     pack_width: int = 0, carries_loss: bool = True) -> MicroBatch:
    """Padded (`collate`) or packed (`packing.pack`) tensors with their per-task token counts.

    `carries_loss=False`: the examples only stand in (a process with no share of the micro-batch
    still runs forward and backward under DDP); their labels are masked, adding zero gradient.
    """
    examples = examples if carries_loss else [_without_loss(e) for e in examples]
    tensors = pack(examples, pad_id, pack_width) if packing else collate(examples, pad_id)
    tasks = [task for task in ("qa", "bio") if any(e.task == task for e in examples)]
    task_tokens = {task: sum(loss_tokens(e) for e in examples if e.task == task) for task in tasks}
    task_rows = {}
    if not packing and len(tasks) > 1:
        task_rows = {task: torch.tensor([row for row, e in enumerate(examples) if e.task == task])
                     for task in tasks}
    return MicroBatch(tensors, task_tokens, task_rows)


def _without_loss(example: Example) -> Example:
    return Example(example.input_ids, [IGNORE] * len(example.labels), example.task)
