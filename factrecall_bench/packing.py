"""Packed micro-batches: several examples per fixed-width row, none attending to another.

Each example keeps its own position ids (0, 1, ...) and sees only itself through a block-diagonal
causal mask, so its hidden states are the ones it would have alone in a padded row. Only the
positions that carry loss go through the LM head: the update equals the padded path's (tested in
float64 against it) while computing fewer positions and far fewer logit rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from factrecall_bench.data.examples import IGNORE, Example

TASKS = ("bio", "qa")
"""Task order of the per-task loss sums (the index of `loss_task`)."""


@dataclass(frozen=True)
class RowLayout:
    """Which examples share each row, in order; a row's examples fit its width together."""

    rows: list[list[int]]
    width: int


def layout_rows(lengths: list[int], width: int) -> RowLayout:
    """First-fit decreasing: few rows, deterministic. `width` grows to the longest example."""
    width = max(width, max(lengths))
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = next((row for row, room in enumerate(free) if room >= lengths[index]), None)
        if slot is None:
            rows.append([])
            free.append(width)
            slot = len(rows) - 1
        rows[slot].append(index)
        free[slot] -= lengths[index]
    return RowLayout(rows, width)


def pack(examples: list[Example], pad_id: int, width: int = 0) -> dict[str, torch.Tensor]:
    """Packed host tensors of a micro-batch (`width` 0: the longest example's length).

    `loss_index` are flat positions (row * width + column) whose next token carries loss,
    `loss_targets` those next tokens and `loss_task` their task (an index into TASKS): the loss is
    taken there only, and per-task sums need no boolean indexing (which would sync a device).
    """
    layout = layout_rows([len(example.input_ids) for example in examples], width)
    shape = (len(layout.rows), layout.width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)  # -1: the row's trailing padding
    loss_index: list[int] = []
    loss_targets: list[int] = []
    loss_task: list[int] = []
    for row, members in enumerate(layout.rows):
        start = 0
        for segment, index in enumerate(members):
            example = examples[index]
            length = len(example.input_ids)
            input_ids[row, start:start + length] = torch.tensor(example.input_ids)
            position_ids[row, start:start + length] = torch.arange(length)
            segments[row, start:start + length] = segment
            for offset, label in enumerate(example.labels[1:]):
                if label != IGNORE:  # position `offset` predicts the token after it
                    loss_index.append(row * layout.width + start + offset)
                    loss_targets.append(label)
                    loss_task.append(TASKS.index(example.task))
            start += length
    return {"input_ids": input_ids, "position_ids": position_ids,
            "attention_mask": segment_mask(segments),
            "loss_index": torch.tensor(loss_index, dtype=torch.long),
            "loss_targets": torch.tensor(loss_targets, dtype=torch.long),
            "loss_task": torch.tensor(loss_task, dtype=torch.long)}


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """[rows, 1, width, width] boolean: a position sees the earlier positions of its own segment.

    Trailing padding is one segment of its own, so no query row is fully masked (a fully masked
    softmax row is NaN, and NaN would reach the gradients through the backward of attention).
    """
    causal = torch.ones(segments.size(1), segments.size(1), dtype=torch.bool).tril()
    same = segments[:, :, None] == segments[:, None, :]
    return (same & causal)[:, None]


def attention_mask_for(model: torch.nn.Module, mask: torch.Tensor, dtype: torch.dtype
                       ) -> torch.Tensor:
    """The boolean mask as the model's attention takes a ready 4D mask: SDPA a boolean one,
    eager an additive one (0 where seen, the dtype's minimum elsewhere)."""
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")
    if implementation == "sdpa":
        return mask
    if implementation == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min)
    raise ValueError(f"packing supports sdpa and eager attention, not {implementation!r}")


def packed_token_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy at the loss positions only ([loss positions], in `loss_index`
    order): the decoder runs on the packed rows, the LM head on the gathered hidden states."""
    causal_lm: Any = model  # transformers' methods, which torch's Module type does not know
    decoder = causal_lm.get_decoder() if hasattr(model, "get_decoder") else causal_lm.base_model
    head = causal_lm.get_output_embeddings()
    dtype = head.weight.dtype if torch.is_floating_point(head.weight) else torch.float32
    hidden = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=attention_mask_for(model, batch["attention_mask"], dtype),
                     use_cache=False).last_hidden_state
    gathered = hidden.reshape(-1, hidden.size(-1)).index_select(0, batch["loss_index"])
    logits = head(gathered)
    return F.cross_entropy(at_least_float32(logits), batch["loss_targets"], reduction="none")


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the loss; float64 stays float64 (exactness tests)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def task_sums(losses: torch.Tensor, loss_task: torch.Tensor) -> torch.Tensor:
    """[len(TASKS)] summed losses per task, without reading anything back to the host."""
    return torch.zeros(len(TASKS), dtype=losses.dtype, device=losses.device).index_add(
        0, loss_task, losses)
