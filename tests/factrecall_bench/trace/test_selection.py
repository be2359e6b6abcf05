"""The trace's top-k and shared sets (trace/selection.py) as mutation testing (docs/mutation.md)
found them unpinned: k = round-half-up of fraction x n and at least 1, only positive scores count,
ties taken in parameter order then position (also when the threshold is found by bisection), the
messages for a bad ranking or diverged scores, and every overlap number of the shared set."""

from __future__ import annotations

import pytest
import torch

from factrecall_bench.trace import selection
from factrecall_bench.trace.selection import (
    _k_of,
    count_true,
    intersect,
    mask_count,
    shared_stats,
    shared_stats_from_masks,
    top_k_masks,
)


def _chosen(masks: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {name: mask.flatten().nonzero().flatten().tolist() for name, mask in masks.items()}


@pytest.fixture(params=[False, True], ids=["candidates", "bisection"])
def bisection(request, monkeypatch) -> bool:
    if request.param:
        monkeypatch.setattr(selection, "MAX_TOPK_CANDIDATES", 0)
    return request.param


def test_k_is_the_fraction_rounded_half_up_and_at_least_one():
    assert _k_of(0.25, 10) == 3  # 2.5 -> 3 (Python's round would give 2)
    assert _k_of(0.35, 10) == 4  # 3.5 -> 4
    assert _k_of(0.24, 10) == 2
    assert _k_of(0.001, 10) == 1
    assert _k_of(1.0, 7) == 7


def test_ranking_must_be_global_or_per_matrix():
    with pytest.raises(ValueError) as error:
        top_k_masks({"a": torch.ones(3)}, 0.5, "per_tensor")
    assert str(error.value) == "ranking must be global or per_matrix; got 'per_tensor'"


def test_diverged_scores_are_refused_naming_the_first_three_tensors():
    scores = {name: torch.tensor([1.0, value]) for name, value in
              (("ok", 1.0), ("a", float("nan")), ("b", float("inf")), ("c", -float("inf")),
               ("d", float("nan")))}
    with pytest.raises(ValueError) as error:
        top_k_masks(scores, 0.5)
    assert str(error.value) == "scores of ['a', 'b', 'c'] are not finite (a diverged model?)"
    with pytest.raises(ValueError, match=r"\['a'\]"):
        top_k_masks({"a": torch.tensor([1.0, float("nan")]), "b": torch.ones(2)}, 0.5,
                    "per_matrix")


def test_ties_are_taken_in_parameter_order_then_position(bisection):
    scores = {"first": torch.tensor([0.5, 2.0, 1.0, 1.0]), "second": torch.tensor([1.0, 3.0, 1.0])}
    # k = 4 of 7: 3.0 and 2.0, then two of the four 1.0s: first[2], first[3]
    masks = top_k_masks(scores, 4 / 7)
    assert _chosen(masks) == {"first": [1, 2, 3], "second": [1]}
    masks = top_k_masks(scores, 5 / 7)
    assert _chosen(masks) == {"first": [1, 2, 3], "second": [0, 1]}
    assert all(mask.dtype == torch.bool for mask in masks.values())


def test_only_positive_scores_qualify(bisection):
    scores = {"a": torch.tensor([0.0, 2.0, 0.0]), "b": torch.tensor([0.0, 0.0, 1.0])}  # scores are >= 0
    masks = top_k_masks(scores, 1.0)  # k = 6, two positive
    assert _chosen(masks) == {"a": [1], "b": [2]}
    assert _chosen(top_k_masks({"z": torch.zeros(4)}, 0.5)) == {"z": []}


def test_exact_k_from_the_candidates_of_each_tensor(bisection):
    scores = {"a": torch.tensor([9.0, 8.0, 7.0, 1.0]), "b": torch.tensor([6.0, 5.0]),
              "c": torch.tensor([4.0, 3.0, 2.0])}
    for k, expected in [(1, {"a": [0], "b": [], "c": []}),
                        (4, {"a": [0, 1, 2], "b": [0], "c": []}),
                        (6, {"a": [0, 1, 2], "b": [0, 1], "c": [0]}),
                        (9, {"a": [0, 1, 2, 3], "b": [0, 1], "c": [0, 1, 2]})]:
        masks = top_k_masks(scores, k / 9)
        assert _chosen(masks) == expected, k
        assert mask_count(masks) == k


def test_per_matrix_takes_k_of_each_tensor_with_its_own_ties():
    scores = {"a": torch.tensor([1.0, 1.0, 1.0, 0.5]), "b": torch.tensor([0.1, 0.3, 0.2, 0.3])}
    masks = top_k_masks(scores, 0.5, "per_matrix")
    assert _chosen(masks) == {"a": [0, 1], "b": [1, 3]}


def test_bisection_finds_the_kth_largest_over_every_float_range():
    scores = {"a": torch.tensor([1e-30, 3e-30, 2e-30, 5e30, 0.0])}
    selection.MAX_TOPK_CANDIDATES, saved = 0, selection.MAX_TOPK_CANDIDATES
    try:
        assert selection._kth_largest(scores, 1) == pytest.approx(5e30, rel=1e-6)
        assert selection._kth_largest(scores, 3) == pytest.approx(2e-30, rel=1e-6)
        assert selection._kth_largest(scores, 4) == pytest.approx(1e-30, rel=1e-6)
        assert selection._kth_largest(scores, 5) == 0.0
    finally:
        selection.MAX_TOPK_CANDIDATES = saved
    assert selection._float_of_bits(0x3F800000) == 1.0
    assert selection._float_of_bits(0x7F800000) == float("inf")


def test_kth_largest_is_zero_when_k_exceeds_the_parameters():
    assert selection._kth_largest({"a": torch.tensor([3.0, 2.0])}, 3) == 0.0
    assert selection._kth_largest({"a": torch.tensor([3.0, 2.0])}, 2) == 2.0


def test_count_at_least_counts_ties():
    scores = {"a": torch.tensor([1.0, 2.0, 2.0]), "b": torch.tensor([2.0, 0.5])}
    assert selection._count_at_least(scores, 2.0) == 3
    assert selection._count_at_least(scores, 0.75) == 4


def test_counts_and_intersection():
    a = {"x": torch.tensor([True, False, True]), "y": torch.tensor([[True, True]])}
    b = {"x": torch.tensor([True, True, False]), "y": torch.tensor([[False, True]])}
    assert count_true(a["x"]) == 2 and count_true(a["y"]) == 2
    assert mask_count(a) == 4
    both = intersect(a, b)
    assert _chosen(both) == {"x": [0], "y": [1]}


def test_shared_numbers_of_two_sets():
    bio = {"x": torch.tensor([True, True, True, False, False, False, False, False]),
           "y": torch.tensor([True, False])}
    qa = {"x": torch.tensor([True, False, False, True, False, False, False, False]),
          "y": torch.tensor([True, True])}
    stats = shared_stats_from_masks(bio, qa)
    assert stats == {"count": 2, "k": {"bio": 4, "qa": 4}, "n_parameters": 10,
                     "share_of_k": 0.5, "jaccard": 2 / 6, "overlap_over_smaller": 0.5,
                     "expected_by_chance": pytest.approx(1.6), "enrichment": pytest.approx(1.25)}
    per_matrix = shared_stats_from_masks(bio, qa, "per_matrix")
    assert per_matrix["expected_by_chance"] == pytest.approx(3 * 2 / 8 + 1 * 2 / 2)
    assert per_matrix["enrichment"] == pytest.approx(2 / 1.75)


def test_shared_numbers_when_the_sets_differ_in_size_or_are_empty():
    bio = {"x": torch.tensor([True, True, True, False])}
    qa = {"x": torch.tensor([True, False, False, False])}
    stats = shared_stats_from_masks(bio, qa)
    assert (stats["share_of_k"], stats["overlap_over_smaller"], stats["jaccard"]) == (
        1 / 3, 1.0, 1 / 3)
    empty = {"x": torch.zeros(4, dtype=torch.bool)}
    stats = shared_stats_from_masks(empty, empty)
    assert stats["count"] == 0 and stats["expected_by_chance"] == 0.0
    assert (stats["share_of_k"], stats["jaccard"], stats["overlap_over_smaller"],
            stats["enrichment"]) == (0.0, 0.0, 0.0, 0.0)


def test_shared_stats_ranks_each_task_with_the_given_ranking():
    bio = {"a": torch.tensor([4.0, 3.0, 0.1, 0.2]), "b": torch.tensor([0.3, 0.4, 0.9, 0.5])}
    qa = {"a": torch.tensor([4.0, 3.0, 0.1, 0.2]), "b": torch.tensor([0.1, 0.2, 0.3, 0.05])}
    assert shared_stats(bio, qa, 0.25)["count"] == 2  # global, k = 2: a[0], a[1] for both
    per_matrix = shared_stats(bio, qa, 0.25, "per_matrix")
    # per tensor k = 1: bio a[0], b[2]; qa a[0], b[2]
    assert per_matrix["count"] == 2
    assert per_matrix["k"] == {"bio": 2, "qa": 2}
    assert per_matrix["expected_by_chance"] == pytest.approx(1 / 4 + 1 / 4)


def test_bisection_does_not_skip_the_pattern_just_below_a_rejected_midpoint():
    # The search's first midpoint is the bit pattern of 1.5; the largest float32 below it is the
    # answer when it is the k-th largest score.
    below = selection._float_of_bits(0x3FC00000 - 1)
    assert below < 1.5
    selection.MAX_TOPK_CANDIDATES, saved = 0, selection.MAX_TOPK_CANDIDATES
    try:
        assert selection._kth_largest({"a": torch.tensor([below, 0.25])}, 1) == below
        assert selection._kth_largest({"a": torch.tensor([0.25, below, 2.0])}, 2) == below
    finally:
        selection.MAX_TOPK_CANDIDATES = saved


# --- sharded scores (FSDP2): one process, so the sums over processes are its own counts ----------


def _sharded(mesh, scores):
    from torch.distributed.tensor import Shard, distribute_tensor

    return {name: distribute_tensor(value, mesh, [Shard(0)]) for name, value in scores.items()}


def _local(masks):
    return {name: mask.to_local().flatten().nonzero().flatten().tolist()
            for name, mask in masks.items()}


def test_sharded_scores_select_what_plain_ones_do(mesh):
    scores = {"first": torch.tensor([[0.5, 2.0], [1.0, 1.0]]),
              "second": torch.tensor([[1.0, 3.0, 1.0]])}
    for k, expected in [(4, {"first": [1, 2, 3], "second": [1]}),
                        (5, {"first": [1, 2, 3], "second": [0, 1]}),
                        (2, {"first": [1], "second": [1]})]:
        masks = top_k_masks(_sharded(mesh, scores), k / 7)
        assert _local(masks) == expected, k
        assert mask_count(masks) == k
        assert sum(count_true(mask) for mask in masks.values()) == k
    stats = shared_stats_from_masks(top_k_masks(_sharded(mesh, scores), 4 / 7),
                                    top_k_masks(_sharded(mesh, scores), 2 / 7))
    assert (stats["count"], stats["k"], stats["n_parameters"]) == (2, {"bio": 4, "qa": 2}, 7)


def test_sharded_diverged_scores_are_refused(mesh):
    scores = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[float("nan"), 1.0]])}
    with pytest.raises(ValueError, match=r"scores of \['b'\] are not finite"):
        top_k_masks(_sharded(mesh, scores), 0.5)
