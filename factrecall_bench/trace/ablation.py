"""Ablation: reset the shared set to the weights before fact training and re-measure, against
seeded random sets of the same size and the BIO-only control; the weights are restored exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from factrecall_bench.metrics import higher_is_better
from factrecall_bench.trace.scores import scored_parameters
from factrecall_bench.trace.selection import _top_count_masks, count_true, mask_count
from factrecall_bench.trace.settings import Evaluate, Masks, Scores
from factrecall_bench.trace.sharding import _like, _rows_of_whole, local_part


def own_rows_of(reference_state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """reference_state (whole tensors, e.g. the weights before training) cut to the rows this
    process holds of each sharded parameter, as DTensors laid out like them: under FSDP2 each
    process keeps 1/N of the ablation's reference instead of a whole copy. Unchanged otherwise."""
    params = scored_parameters(model)
    return {name: _like(_rows_of_whole(value, params[name]).to(local_part(params[name]).device),
                        params[name])
            if isinstance(params.get(name), DTensor) else value
            for name, value in reference_state.items()}


def _reference_rows(reference: Tensor, param: Tensor) -> Tensor:
    """This process's rows of a reference value, given whole or already cut (own_rows_of)."""
    return local_part(reference) if isinstance(reference, DTensor) else _rows_of_whole(reference,
                                                                                      param)


def ablate(
    model: nn.Module,
    masks: Masks,
    reference_state: Mapping[str, Tensor],
    evaluate: Evaluate,
    n_random_draws: int = 3,
    seed: int = 0,
    *,
    bio_only_masks: Masks | None = None,
    baseline: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Reset the masked elements to reference_state (the weights before fact training), evaluate,
    restore; the same for n_random_draws seeded draws of as many random elements (over the masked
    tensors) and, if given, for the BIO-only control. drop = baseline - ablated, per metric
    (ablated - baseline for a metric that is not higher-is-better, `metrics.Metric`). The
    model's weights are restored exactly, also when evaluate raises. Under FSDP2 evaluate must
    leave the model sharded, as evaluate.py's scorers do."""
    params = scored_parameters(model)
    missing = [name for name in masks if name not in reference_state or name not in params]
    if missing:
        raise ValueError(f"ablation: no parameter or reference value for {missing[:3]}")
    base = dict(baseline) if baseline is not None else dict(evaluate(model))
    count = mask_count(masks)
    shared = _evaluate_reset(model, params, masks, reference_state, evaluate)
    draws = [
        _evaluate_reset(
            model, params, random_masks(masks, count, seed + i), reference_state, evaluate
        )
        for i in range(n_random_draws)
    ]
    result: dict[str, Any] = {"count": count, "baseline": base, "shared": shared}
    result["drop"] = _drops(base, shared)
    result["random_drop_draws"] = [_drops(base, draw) for draw in draws]
    result["random_drop_mean"], result["random_drop_sd"] = _mean_sd(result["random_drop_draws"])
    if bio_only_masks is not None:
        bio_only = _evaluate_reset(model, params, bio_only_masks, reference_state, evaluate)
        result["bio_only"], result["bio_only_drop"] = bio_only, _drops(base, bio_only)
    return result


def random_masks(like: Masks, count: int, seed: int) -> Masks:
    """count elements drawn uniformly without replacement over all tensors of like (seeded):
    count distinct flat indices over the tensors in order (`distinct_indices`), so no draw depends
    on how equal random values are ordered (float32 noise ties on models of a few million
    parameters, and a top-count of it would prefer earlier positions). Every process makes the same
    draw and keeps its own rows."""
    sizes = [mask.numel() for mask in like.values()]
    chosen = distinct_indices(sum(sizes), count, torch.Generator().manual_seed(seed)).sort().values
    offsets = [0, *itertools.accumulate(sizes)]
    bounds = torch.searchsorted(chosen, torch.tensor(offsets)).tolist()
    out = {}
    for index, (name, mask) in enumerate(like.items()):
        whole = torch.zeros(sizes[index], dtype=torch.bool)
        whole[chosen[bounds[index]:bounds[index + 1]] - offsets[index]] = True
        out[name] = _like(_rows_of_whole(whole.view(mask.shape), mask)
                          .to(local_part(mask).device), mask)
    return out


def distinct_indices(n: int, k: int, generator: torch.Generator) -> Tensor:
    """min(k, n) distinct integers of [0, n) (int64), a uniform draw without replacement: the first
    distinct values of the generator's stream of uniform integers (torch.randint), in the order
    they first appear. Above half of n, the complement of such a draw of n - k (sorted)."""
    k = min(max(k, 0), n)
    if k > n // 2:
        keep = torch.ones(n, dtype=torch.bool)
        keep[distinct_indices(n, n - k, generator)] = False
        return keep.nonzero().flatten()
    drawn = torch.zeros(0, dtype=torch.int64)
    while True:
        values, inverse = torch.unique(drawn, return_inverse=True)
        first = torch.full((values.numel(),), drawn.numel(), dtype=torch.int64).scatter_reduce_(
            0, inverse, torch.arange(drawn.numel()), "amin")
        if values.numel() >= k:
            return values[first.argsort()][:k]
        missing = k - values.numel()
        drawn = torch.cat([drawn, torch.randint(n, (missing + missing // 2 + 16,),
                                                generator=generator)])


def bio_only_masks(scores_bio: Scores, shared: Masks, ranking: str = "global") -> Masks:
    """The highest-scoring BIO elements outside the shared set, as many as it holds (per tensor
    under per_matrix ranking): the control that tells shared from merely BIO-important."""
    outside = {
        name: value.float().masked_fill(shared[name], 0.0) for name, value in scores_bio.items()
    }
    if ranking == "per_matrix":
        return {
            name: _top_count_masks({name: value}, count_true(shared[name]))[name]
            for name, value in outside.items()
        }
    return _top_count_masks(outside, mask_count(shared))


def _evaluate_reset(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    masks: Masks,
    reference_state: Mapping[str, Tensor],
    evaluate: Evaluate,
) -> dict[str, float]:
    was_training = model.training
    saved = _reset_to_reference(params, masks, reference_state)
    try:
        return {metric: float(value) for metric, value in evaluate(model).items()}
    finally:
        _restore(params, masks, saved)
        model.train(was_training)


@torch.no_grad()
def _reset_to_reference(
    params: Mapping[str, nn.Parameter], masks: Masks, reference_state: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    saved = {}
    for name, mask in masks.items():
        p = local_part(params[name])
        where = local_part(mask).to(p.device)
        reference = _reference_rows(reference_state[name], params[name])
        saved[name] = p[where].clone()
        p[where] = reference.to(device=p.device, dtype=p.dtype)[where]
    return saved


@torch.no_grad()
def _restore(params: Mapping[str, nn.Parameter], masks: Masks, saved: Mapping[str, Tensor]) -> None:
    for name, values in saved.items():
        p = local_part(params[name])
        p[local_part(masks[name]).to(p.device)] = values


def _drops(baseline: Mapping[str, float], ablated: Mapping[str, float]) -> dict[str, float]:
    """How much worse the ablated model does, per metric (a rise, for a lower-is-better one)."""
    return {metric: _worsening(metric, baseline[metric], ablated[metric])
            for metric in baseline if metric in ablated}


def _worsening(metric: str, baseline: float, ablated: float) -> float:
    return baseline - ablated if higher_is_better(metric) else ablated - baseline


def _mean_sd(draws: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric mean and sample sd (0.0 with one draw) over the draws."""
    if not draws:
        return {}, {}
    means = {m: sum(d[m] for d in draws) / len(draws) for m in draws[0]}
    sds = {
        m: math.sqrt(sum((d[m] - means[m]) ** 2 for d in draws) / (len(draws) - 1))
        if len(draws) > 1
        else 0.0
        for m in draws[0]
    }
    return means, sds
