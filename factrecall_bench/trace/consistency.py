"""Gradient consistency: the cosine between the BIO and QA summed gradients, over the whole model
and per layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from factrecall_bench.trace.location import layer_of
from factrecall_bench.trace.scores import _batch_loss, _probing, scored_parameters
from factrecall_bench.trace.settings import TASKS, Batch, Scores
from factrecall_bench.trace.sharding import _total, local_part


def gradient_consistency(
    model: nn.Module, batches_by_task: Mapping[str, Sequence[Batch]], tasks: Sequence[str] = TASKS
) -> dict[str, Any]:
    """Cosine between the two tasks' summed gradients (sum over batches of the mean-loss gradient),
    over the whole model and per layer (outside_layers: embeddings, final norm, head)."""
    params = scored_parameters(model)
    with _probing(model):
        first = _summed_gradient(model, params, batches_by_task[tasks[0]])
        second = _summed_gradient(model, params, batches_by_task[tasks[1]])
    sums: dict[int | None, list[float]] = {}
    for name in params:
        a, b = local_part(first[name]).double(), local_part(second[name]).double()
        group = sums.setdefault(layer_of(name), [0.0, 0.0, 0.0])
        group[0] += float((a * b).sum())
        group[1] += float(a.square().sum())
        group[2] += float(b.square().sum())
    flat = _total([value for group in sums.values() for value in group], first)
    sums = {key: flat[3 * i:3 * i + 3] for i, key in enumerate(sums)}
    total = [sum(values[i] for values in sums.values()) for i in range(3)]
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", 0)
    return {
        "cosine": _cosine(*total),
        "per_layer": [_cosine(*sums.get(layer, [0.0, 0.0, 0.0])) for layer in range(n_layers)],
        "outside_layers": _cosine(*sums.get(None, [0.0, 0.0, 0.0])),
        f"norm_{tasks[0]}": math.sqrt(total[1]),
        f"norm_{tasks[1]}": math.sqrt(total[2]),
    }


def _summed_gradient(
    model: nn.Module, params: Mapping[str, nn.Parameter], batches: Sequence[Batch]
) -> Scores:
    for batch in batches:
        loss = _batch_loss(model, batch)
        if loss is not None:
            loss.backward()  # backward adds into .grad: the sum over batches
    summed = {
        name: p.grad.detach().float()
        if p.grad is not None
        else torch.zeros_like(p, dtype=torch.float32)
        for name, p in params.items()
    }
    model.zero_grad(set_to_none=True)  # the summed tensors stay alive, detached from the params
    return summed


def _cosine(dot: float, aa: float, bb: float) -> float:
    return dot / math.sqrt(aa * bb) if aa > 0.0 and bb > 0.0 else 0.0
