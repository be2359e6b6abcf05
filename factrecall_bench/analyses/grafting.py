"""Grafting (Panigrahi et al., ICML 2023): the smallest set of trained scalar parameters that,
grafted onto the weights before fact training (`gamma * theta_ft + (1 - gamma) * theta_pre`),
recovers a stated share of the fine-tuned model's recall.

Sets are flat boolean masks over the model's trainable parameters in `named_parameters()` order
(one index space of n scalars). The search over set sizes and the random controls live here; the
learned mask (sigmoid relaxation) is in `analyses.mask_learning`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from factrecall_bench.analyses.settings import GraftingSettings

Evaluate = Callable[[nn.Module], Mapping[str, float]]
Passes = Callable[[int], tuple[bool, dict[str, Any]]]



def trainable_names(model: nn.Module) -> list[str]:
    """The grafted parameters: trainable ones, tied weights once (first name)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def flat_delta(pre: Mapping[str, Tensor], finetuned: Mapping[str, Tensor], names: list[str]
               ) -> Tensor:
    """theta_ft - theta_pre of every named parameter, flattened and concatenated (fp32)."""
    return torch.cat([(finetuned[n].float() - pre[n].float()).flatten() for n in names])


def top_k_mask(values: Tensor, k: int) -> Tensor:
    """The k largest values (ties broken by position: a stable sort), as a flat bool mask."""
    order = torch.argsort(values.flatten(), descending=True, stable=True)
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def top_delta_mask(delta: Tensor, k: int) -> Tensor:
    """The k largest |theta_ft - theta_pre|: the simple grafting baseline."""
    return top_k_mask(delta.abs(), k)


def random_mask(n: int, k: int, seed: int) -> Tensor:
    """k scalars drawn uniformly without replacement (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask


@torch.no_grad()
def graft(model: nn.Module, pre: Mapping[str, Tensor], finetuned: Mapping[str, Tensor],
          names: list[str], mask: Tensor) -> None:
    """Set the model's parameters to theta_ft where the flat mask is True, theta_pre elsewhere."""
    params = dict(model.named_parameters())
    offset = 0
    for name in names:
        param = params[name]
        part = mask[offset:offset + param.numel()].view(param.shape).to(param.device)
        param.copy_(torch.where(part, finetuned[name].to(param.device), pre[name].to(param.device)))
        offset += param.numel()


def recovered(grafted: Mapping[str, float], finetuned: Mapping[str, float],
              pre: Mapping[str, float], settings: GraftingSettings) -> dict[str, float | None]:
    """Per metric, the share of the fine-tuned recall the grafted model keeps (None: nothing to
    recover, the fine-tuned value is at most min_finetuned or no better than pre under "gain")."""
    shares: dict[str, float | None] = {}
    for metric, full in finetuned.items():
        floor = pre[metric] if settings.recovery == "gain" else 0.0
        if full <= settings.min_finetuned or full - floor <= 0.0:
            shares[metric] = None
            continue
        shares[metric] = (grafted[metric] - floor) / (full - floor)
    return shares


def meets_target(shares: Mapping[str, float | None], share: float) -> bool:
    """Every metric with something to recover keeps at least `share` of it (1e-9 slack for
    exact-match fractions that equal the target)."""
    return all(value >= share - 1e-9 for value in shares.values() if value is not None)


def smallest_passing_size(passes: Passes, n: int, settings: GraftingSettings
                          ) -> dict[str, Any]:
    """Doubling from initial_fraction * n until `passes(k)`, then bisection between the last
    failing and the first passing size. Returns the size found (None if even n fails), its record
    and every size tried. Assumes recall grows with k; where it does not, the boundary found is
    one of possibly several."""
    tried: list[dict[str, Any]] = []

    def attempt(k: int) -> bool:
        ok, record = passes(k)
        tried.append({"k": k, "passes": ok, **record})
        return ok

    failing, k = 0, max(1, min(n, round(settings.initial_fraction * n)))
    while not attempt(k):
        if k >= n or len(tried) >= settings.max_evaluations:
            return {"k": None, "record": None, "tried": tried}
        failing, k = k, min(n, 2 * k)
    passing = k
    while passing - failing > max(1, settings.tolerance * passing) and \
            len(tried) < settings.max_evaluations:
        middle = (passing + failing) // 2
        if attempt(middle):
            passing = middle
        else:
            failing = middle
    record = next(entry for entry in reversed(tried) if entry["k"] == passing)
    return {"k": passing, "record": record, "tried": tried}


def mask_locations(mask: Tensor, names: list[str], sizes: list[int]) -> dict[str, int]:
    """Scalars of the mask per parameter tensor (only tensors it touches)."""
    counts = {}
    for name, part in zip(names, torch.split(mask, sizes), strict=True):
        count = int(part.sum())
        if count:
            counts[name] = count
    return counts


def overlap(mask: Tensor, other: Tensor) -> dict[str, float]:
    """|mask & other|, its share of the mask, what independent sets of these sizes would share by
    chance (|mask| |other| / n), and the ratio of the two (enrichment)."""
    count = int((mask & other).sum())
    size, other_size, n = int(mask.sum()), int(other.sum()), mask.numel()
    expected = size * other_size / n if n else 0.0
    return {"count": count, "share_of_set": count / size if size else 0.0,
            "other_size": other_size, "expected_by_chance": expected,
            "enrichment": count / expected if expected else 0.0}


@dataclass(frozen=True)
class GraftingProblem:
    """What grafting needs of a run: the model (holding theta_ft), both weight sets, recall."""

    model: nn.Module
    pre: Mapping[str, Tensor]
    finetuned: Mapping[str, Tensor]
    evaluate: Evaluate
    names: list[str]

    @property
    def sizes(self) -> list[int]:
        return [self.finetuned[name].numel() for name in self.names]


MaskOfSize = Callable[[int], Tensor]


def measure(problem: GraftingProblem, mask: Tensor) -> dict[str, float]:
    graft(problem.model, problem.pre, problem.finetuned, problem.names, mask)
    return {metric: float(value) for metric, value in problem.evaluate(problem.model).items()}


def grafting_analysis(problem: GraftingProblem, masks_by_method: Mapping[str, MaskOfSize],
                      shared_sets: Mapping[str, Tensor], settings: GraftingSettings
                      ) -> dict[str, Any]:
    """Per method, the smallest grafted set meeting the target, with its overlaps and random
    controls. The model is left holding theta_ft."""
    delta = flat_delta(problem.pre, problem.finetuned, problem.names)
    n = delta.numel()
    try:
        finetuned = measure(problem, torch.ones(n, dtype=torch.bool))
        pre = measure(problem, torch.zeros(n, dtype=torch.bool))
        baseline = {"finetuned": finetuned, "pre": pre}
        methods = {method: _method_result(problem, mask_of_size, delta, baseline, shared_sets,
                                          settings)
                   for method, mask_of_size in masks_by_method.items()}
    finally:
        graft(problem.model, problem.pre, problem.finetuned, problem.names,
              torch.ones(n, dtype=torch.bool))
    return {"settings": settings.to_dict(), "n_parameters": n,
            "n_changed": int((delta != 0).sum()), "finetuned": finetuned, "pre": pre,
            "methods": methods}


def _method_result(problem: GraftingProblem, mask_of_size: MaskOfSize, delta: Tensor,
                   baseline: Mapping[str, Mapping[str, float]],
                   shared_sets: Mapping[str, Tensor], settings: GraftingSettings
                   ) -> dict[str, Any]:
    found_masks: dict[int, Tensor] = {}

    def passes(k: int) -> tuple[bool, dict[str, Any]]:
        mask = mask_of_size(k)
        metrics = measure(problem, mask)
        shares = recovered(metrics, baseline["finetuned"], baseline["pre"], settings)
        ok = meets_target(shares, settings.share)
        if ok:
            found_masks.clear()
            found_masks[k] = mask
        return ok, {"metrics": metrics, "recovered": shares}

    search = smallest_passing_size(passes, delta.numel(), settings)
    result: dict[str, Any] = {"k": search["k"], "tried": search["tried"]}
    if search["k"] is None:
        return result
    mask = found_masks[search["k"]]
    result.update(
        fraction=search["k"] / delta.numel(), metrics=search["record"]["metrics"],
        recovered=search["record"]["recovered"],
        by_tensor=mask_locations(mask, problem.names, problem.sizes),
        overlap_with_top_delta=overlap(mask, top_delta_mask(delta, search["k"])),
        overlap_with_shared={key: overlap(mask, shared) for key, shared in shared_sets.items()},
        random=_random_controls(problem, search["k"], baseline, shared_sets, settings))
    return result


def _random_controls(problem: GraftingProblem, k: int,
                     baseline: Mapping[str, Mapping[str, float]],
                     shared_sets: Mapping[str, Tensor], settings: GraftingSettings
                     ) -> list[dict[str, Any]]:
    n = sum(problem.sizes)
    draws = []
    for draw in range(settings.random_draws):
        mask = random_mask(n, k, settings.seed + 1 + draw)
        metrics = measure(problem, mask)
        draws.append({
            "metrics": metrics,
            "recovered": recovered(metrics, baseline["finetuned"], baseline["pre"], settings),
            "overlap_with_shared": {key: overlap(mask, shared)
                                    for key, shared in shared_sets.items()}})
    return draws
