"""Top-k and shared sets: each task's top-k parameters by score (exact k, ties broken by order,
the global threshold found by bisection when sharded or too many), and how much the BIO and QA
sets overlap.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from factrecall_bench.trace.settings import _CHOICES, Masks, Scores
from factrecall_bench.trace.sharding import _any_sharded, _total, local_part, summed

# Above this many per-tensor top-k candidates the global threshold is found by bisection instead.
MAX_TOPK_CANDIDATES = 2**24


def top_k_masks(scores: Scores, fraction: float, ranking: str = "global") -> Masks:
    """The top fraction of scalar parameters (k = max(1, round(fraction * n)), over all tensors for
    "global", inside each tensor for "per_matrix"). Exactly k, ties broken by parameter order then
    position; only positive scores qualify, so a set is smaller when fewer than k are positive."""
    if ranking not in _CHOICES["ranking"]:
        raise ValueError(f"ranking must be global or per_matrix; got {ranking!r}")
    scores = {name: value.float() for name, value in scores.items()}
    not_finite = _total([float((~torch.isfinite(local_part(value))).sum())
                         for value in scores.values()], scores)
    bad = [name for name, count in zip(scores, not_finite, strict=True) if count]
    if bad:
        raise ValueError(f"scores of {bad[:3]} are not finite (a diverged model?)")
    if ranking == "per_matrix":
        return {
            name: _top_count_masks({name: value}, _k_of(fraction, value.numel()))[name]
            for name, value in scores.items()
        }
    return _top_count_masks(scores, _k_of(fraction, sum(v.numel() for v in scores.values())))


def _k_of(fraction: float, n: int) -> int:
    return max(1, math.floor(fraction * n + 0.5))


def _top_count_masks(scores: Scores, k: int) -> Masks:
    if k <= 0:
        return {name: torch.zeros_like(value, dtype=torch.bool) for name, value in scores.items()}
    threshold = _kth_largest(scores, k)
    masks = {name: value > threshold for name, value in scores.items()}
    if threshold > 0.0:
        _fill_ties(masks, scores, threshold, k - mask_count(masks))
    return masks


def _kth_largest(scores: Scores, k: int) -> float:
    """The k-th largest value over all tensors, never sorting them all: the k-th of the per-tensor
    top-k candidates, or a bisection when the candidates would be too many (0.0 if k > n)."""
    sizes = [min(k, value.numel()) for value in scores.values()]
    if sum(sizes) < k:
        return 0.0
    if sum(sizes) > MAX_TOPK_CANDIDATES or _any_sharded(scores) is not None:
        return _kth_largest_by_bisection(scores, k)
    candidates = torch.cat(
        [v.flatten().topk(m).values.cpu() for v, m in zip(scores.values(), sizes, strict=True)]
    )
    return float(candidates.kthvalue(candidates.numel() - k + 1).values)


def _kth_largest_by_bisection(scores: Scores, k: int) -> float:
    """Largest t with count(score >= t) >= k, searched over the int32 bit patterns of non-negative
    float32 (ordered as the values are): 31 counting passes, exact, no sort and no big buffer."""
    low, high = 0, 0x7F800000  # +0.0 ... +inf
    while low < high:
        mid = (low + high + 1) // 2
        if _count_at_least(scores, _float_of_bits(mid)) >= k:
            low = mid
        else:
            high = mid - 1
    return _float_of_bits(low)


def _float_of_bits(bits: int) -> float:
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32)[0])


def _count_at_least(scores: Scores, threshold: float) -> int:
    local = sum(int((local_part(value) >= threshold).sum()) for value in scores.values())
    return int(_total([local], scores)[0])


def _fill_ties(masks: Masks, scores: Scores, threshold: float, missing: int) -> None:
    """Add `missing` elements scoring exactly threshold, in parameter order then position; under
    FSDP2 the processes' ties are taken in rank order (the lower ranks' first)."""
    ties = {name: (local_part(value) == threshold).flatten().nonzero().flatten()
            for name, value in scores.items()}
    like = _any_sharded(scores)
    if like is not None:
        mesh = like.device_mesh
        per_process = torch.zeros(mesh.size(), dtype=torch.float64)
        per_process[mesh.get_local_rank()] = sum(t.numel() for t in ties.values())
        earlier = summed(per_process, like).cpu()[:mesh.get_local_rank()].sum()
        missing -= int(earlier)
    for name, positions in ties.items():
        if missing <= 0:
            return
        chosen = positions[:missing]
        local_part(masks[name]).view(-1)[chosen] = True
        missing -= chosen.numel()


def count_true(mask: Tensor) -> int:
    """True elements of one (possibly sharded) mask, over the whole tensor."""
    return int(_total([float(local_part(mask).sum())], {"mask": mask})[0])


def mask_count(masks: Masks) -> int:
    return int(sum(_total([float(local_part(mask).sum()) for mask in masks.values()], masks)))


def intersect(masks_a: Masks, masks_b: Masks) -> Masks:
    return {name: mask & masks_b[name] for name, mask in masks_a.items()}


def shared_stats(
    scores_bio: Scores, scores_qa: Scores, fraction: float, ranking: str = "global"
) -> dict[str, Any]:
    """Overlap of the BIO and QA top-k sets at one fraction (see shared_stats_from_masks)."""
    return shared_stats_from_masks(
        top_k_masks(scores_bio, fraction, ranking),
        top_k_masks(scores_qa, fraction, ranking),
        ranking,
    )


def shared_stats_from_masks(
    masks_bio: Masks, masks_qa: Masks, ranking: str = "global"
) -> dict[str, Any]:
    """count = |bio & qa|; share_of_k = count / max(k_bio, k_qa) (= count / k unless a task has
    fewer than k positive scores); expected_by_chance = k_bio * k_qa / n for global ranking, the
    same summed per tensor for per_matrix; enrichment = count / expected_by_chance."""
    count = mask_count(intersect(masks_bio, masks_qa))
    k_bio, k_qa = mask_count(masks_bio), mask_count(masks_qa)
    n_parameters = sum(mask.numel() for mask in masks_bio.values())
    if ranking == "per_matrix":
        expected = sum(
            count_true(masks_bio[n]) * count_true(masks_qa[n]) / masks_bio[n].numel()
            for n in masks_bio
        )
    else:
        expected = k_bio * k_qa / n_parameters
    return {
        "count": count,
        "k": {"bio": k_bio, "qa": k_qa},
        "n_parameters": n_parameters,
        "share_of_k": _ratio(count, max(k_bio, k_qa)),
        "jaccard": _ratio(count, k_bio + k_qa - count),
        "overlap_over_smaller": _ratio(count, min(k_bio, k_qa)),
        "expected_by_chance": expected,
        "enrichment": _ratio(count, expected),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0
