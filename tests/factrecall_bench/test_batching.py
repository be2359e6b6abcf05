"""Tests written for the survivors of mutation testing of factrecall_bench/batching.py
(docs/mutation.md, third round): the batch plan (how many examples of each source a phase takes,
whole shuffled epochs, the seeded order checked against an independent reference, one plan
whatever the strategy is called, phases continuing one random stream), the accumulation split,
and the tensors and token counts of a micro-batch."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from factrecall_bench import batching
from factrecall_bench.batching import (
    MicroBatch,
    collate,
    example_counts,
    loss_tokens,
    make_micro_batch,
    plan_phase,
    plan_run,
    split_micro_batches,
)
from factrecall_bench.config import Phase
from factrecall_bench.data.examples import IGNORE, Example

SIZES = {"bio": 7, "qa_train": 5}


def _reference_plan(phases, sizes, batch_size, seed):
    """The plan as documented, written out independently: per phase, per source (in the phase's
    order, skipping empty ones) whole shuffled epochs cut to the count, then one shuffled
    interleaving of the sources, cut into batches; one generator seeded [seed, 1] for the run."""
    rng = np.random.default_rng([seed, 1])
    plans = []
    for phase in phases:
        counts = {s: round(e * sizes[s]) for s, e in phase.epochs.items()}
        if phase.mix:
            total, shares = sum(counts.values()), sum(phase.mix.values())
            counts = {s: round(total * w / shares) for s, w in phase.mix.items()}
        counts = {s: c for s, c in counts.items() if c > 0}
        streams = {}
        for source, count in counts.items():
            size = sizes[source]
            parts = [rng.permutation(size) for _ in range(-(-count // size))] if size else []
            streams[source] = list(np.concatenate(parts)[:count]) if parts else []
        labels = []
        for index, count in enumerate(counts.values()):
            labels += [index] * count
        order = rng.permutation(np.array(labels, dtype=np.int64))
        names = list(counts)
        taken = dict.fromkeys(names, 0)
        items = []
        for index in order:
            source = names[index]
            items.append((source, int(streams[source][taken[source]])))
            taken[source] += 1
        plans.append([items[i:i + batch_size] for i in range(0, len(items), batch_size)])
    return plans


PHASES = [
    (Phase("bio", {"bio": 2.0}), Phase("qa", {"qa_train": 1.5, "bio": 0.3})),
    (Phase("mixed", {"bio": 1.0, "qa_train": 1.0}, mix={"bio": 1.0, "qa_train": 3.0}),),
    (Phase("mixed", {"bio": 1.0, "qa_train": 0.0}),),
    (Phase("mixed", {"bio": 1.0, "qa_train": 0.2}),),  # one qa example
]


@pytest.mark.parametrize("phases", PHASES)
@pytest.mark.parametrize("seed", [0, 3])
def test_the_plan_is_the_documented_seeded_shuffle(phases, seed) -> None:
    plans = plan_run(phases, SIZES, batch_size=4, seed=seed)
    assert [plan.batches for plan in plans] == _reference_plan(phases, SIZES, 4, seed)
    assert [plan.phase for plan in plans] == list(phases)


def test_the_plan_does_not_depend_on_names_only_on_phases() -> None:
    a = (Phase("bio", {"bio": 2.0}, lr=1e-3), Phase("qa", {"qa_train": 1.0}, lr=1e-4))
    b = (Phase("first", {"bio": 2.0}, lr=5e-3), Phase("second", {"qa_train": 1.0}, lr=5e-3))
    assert [p.batches for p in plan_run(a, SIZES, 3, 9)] == [
        p.batches for p in plan_run(b, SIZES, 3, 9)]


def test_phases_continue_one_random_stream() -> None:
    phase = Phase("bio", {"bio": 1.0})
    plans = plan_run((phase, phase), SIZES, 7, seed=2)
    fresh = plan_phase(phase, SIZES, 7, np.random.default_rng([2, 1]))
    assert plans[0].batches == fresh.batches
    assert plans[1].batches != plans[0].batches  # the second phase is not a replay


def test_counts_batches_and_whole_epochs() -> None:
    phase = Phase("x", {"bio": 2.5, "qa_train": 0.4})
    assert example_counts(phase, {"bio": 10, "qa_train": 5}) == {"bio": 25, "qa_train": 2}
    plan = plan_phase(phase, {"bio": 10, "qa_train": 5}, 4, np.random.default_rng(0))
    assert [len(batch) for batch in plan.batches] == [4, 4, 4, 4, 4, 4, 3]
    items = [item for batch in plan.batches for item in batch]
    bio = [index for source, index in items if source == "bio"]
    assert len(bio) == 25 and sorted(Counter(bio).values()) == [2] * 5 + [3] * 5
    # whole epochs first: each of the first two passes holds every example once
    stream = batching._index_stream(10, 25, np.random.default_rng(1))
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert len(stream) == 25 and len(set(stream[20:])) == 5
    assert batching._index_stream(0, 0, np.random.default_rng(1)).tolist() == []
    assert batching._index_stream(4, 0, np.random.default_rng(1)).tolist() == []
    assert batching._index_stream(4, 0, np.random.default_rng(1)).dtype.kind == "i"
    assert batching._index_stream(3, 3, np.random.default_rng(1)).dtype.kind == "i"


def test_mix_shares_split_the_total_and_empty_sources_are_dropped() -> None:
    phase = Phase("m", {"bio": 1.0, "qa_train": 1.0}, mix={"bio": 2.0, "qa_train": 2.0})
    assert example_counts(phase, {"bio": 6, "qa_train": 4}) == {"bio": 5, "qa_train": 5}
    uneven = Phase("m", {"bio": 1.0}, mix={"bio": 1.0, "qa_train": 2.0})
    assert example_counts(uneven, {"bio": 9, "qa_train": 4}) == {"bio": 3, "qa_train": 6}
    none = Phase("m", {"bio": 0.0, "qa_train": 1.0})
    plan = plan_phase(none, {"bio": 4, "qa_train": 3}, 10, np.random.default_rng(0))
    assert {source for batch in plan.batches for source, _ in batch} == {"qa_train"}
    assert plan_phase(Phase("m", {"bio": 0.0}), {"bio": 4}, 2, np.random.default_rng(0)) \
        .batches == []
    single = plan_phase(Phase("m", {"bio": 1.0, "qa_train": 0.2}), {"bio": 4, "qa_train": 5}, 10,
                        np.random.default_rng(0))
    assert Counter(source for batch in single.batches for source, _ in batch) == {
        "bio": 4, "qa_train": 1}


@pytest.mark.parametrize("grad_accum", [1, 2, 3, 4, 7])
def test_the_accumulation_split(grad_accum) -> None:
    batch = [("qa_train", 0), ("bio", 1), ("qa_train", 2), ("bio", 3), ("qa_train", 4),
             ("bio", 5), ("qa_train", 6)]
    size = math.ceil(len(batch) / grad_accum)
    mixed = split_micro_batches(batch, grad_accum, sources_apart=False)
    assert mixed == [batch[i:i + size] for i in range(0, 7, size)]
    apart = split_micro_batches(batch, grad_accum)
    bio = [item for item in batch if item[0] == "bio"]
    qa = [item for item in batch if item[0] == "qa_train"]
    assert apart == ([bio[i:i + size] for i in range(0, 3, size)]
                     + [qa[i:i + size] for i in range(0, 4, size)])


def test_the_split_of_a_step_at_fixed_sizes() -> None:
    batch = [("b", i) for i in range(5)] + [("a", 9)]
    assert split_micro_batches(batch, 2) == [[("a", 9)], [("b", 0), ("b", 1), ("b", 2)],
                                             [("b", 3), ("b", 4)]]
    assert split_micro_batches(batch, 4, False) == [batch[0:2], batch[2:4], batch[4:6]]
    assert split_micro_batches(batch, 1, True)[1] == batch[:5]


def _qa(ids, labels):
    return Example(list(ids), list(labels), "qa")


def _bio(ids, labels):
    return Example(list(ids), list(labels), "bio")


def test_collate_pads_right_without_loss_or_attention() -> None:
    out = collate([_qa([5, 6, 7], [IGNORE, 6, 7]), _bio([8, 9], [8, 9])], pad_id=3)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 9, 3]]
    assert out["labels"].tolist() == [[IGNORE, 6, 7], [8, 9, IGNORE]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["is_qa"].tolist() == [True, False]
    for key in ("input_ids", "labels", "attention_mask"):
        assert out[key].dtype == torch.long
    assert set(out) == {"input_ids", "labels", "attention_mask", "is_qa"}


def test_loss_tokens_skip_the_first_position() -> None:
    assert loss_tokens(_qa([1, 2, 3, 4], [7, IGNORE, 2, 3])) == 2
    assert loss_tokens(_bio([1, 2], [1, 2])) == 1


def test_a_padded_micro_batch_counts_tokens_and_rows_per_task() -> None:
    examples = [_bio([1, 2, 3], [1, 2, 3]), _qa([4, 5, 6, 7], [IGNORE, IGNORE, 6, 7]),
                _bio([8, 9], [8, 9])]
    micro = make_micro_batch(examples, pad_id=0)
    assert list(micro.task_tokens.items()) == [("qa", 2), ("bio", 3)]
    assert {t: r.tolist() for t, r in micro.task_rows.items()} == {"qa": [1], "bio": [0, 2]}
    assert list(micro.task_rows) == ["qa", "bio"]
    assert not micro.packed
    assert micro.tensors["labels"].tolist() == collate(examples, 0)["labels"].tolist()
    one = make_micro_batch(examples[:1], pad_id=0)
    assert one.task_tokens == {"bio": 2} and one.task_rows == {}
    qa_only = make_micro_batch(examples[1:2], pad_id=0)
    assert qa_only.task_tokens == {"qa": 2} and qa_only.task_rows == {}


def test_a_packed_micro_batch_and_a_stand_in() -> None:
    examples = [_qa([4, 5, 6], [IGNORE, 5, 6]), _bio([1, 2, 3], [1, 2, 3])]
    micro = make_micro_batch(examples, pad_id=0, packing=True, pack_width=8)
    assert micro.packed and micro.task_rows == {}
    assert micro.tensors["input_ids"].shape == (1, 8)
    assert micro.task_tokens == {"qa": 2, "bio": 2}
    narrow = make_micro_batch(examples, pad_id=0, packing=True)
    assert narrow.tensors["input_ids"].shape[1] == 3
    stand_in = make_micro_batch(examples, pad_id=0, carries_loss=False)
    assert stand_in.task_tokens == {"qa": 0, "bio": 0}
    assert (stand_in.tensors["labels"] == IGNORE).all()
    assert stand_in.tensors["input_ids"].tolist() == [[4, 5, 6], [1, 2, 3]]
    assert stand_in.tensors["is_qa"].tolist() == [True, False]
    assert batching._without_loss(examples[1]) == Example([1, 2, 3], [IGNORE] * 3, "bio")


class _FakeTensor:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def pin_memory(self):
        self.log.append(("pin", self.name))
        return self

    def to(self, device, non_blocking=False):
        self.log.append(("to", self.name, device.type, non_blocking))
        return ("moved", self.name)


def test_moving_a_micro_batch() -> None:
    micro = MicroBatch({"input_ids": torch.tensor([[1, 2]])}, {"qa": 1},
                       {"qa": torch.tensor([0])})
    moved = micro.to(torch.device("cpu"))
    assert moved.tensors["input_ids"].tolist() == [[1, 2]] and moved.task_tokens == {"qa": 1}
    assert moved.task_rows["qa"].tolist() == [0]
    assert MicroBatch({}, {}).task_rows == {}
    log: list = []
    fake = MicroBatch({"a": _FakeTensor(log, "a")}, {"bio": 2}, {"bio": _FakeTensor(log, "r")})
    on_gpu = fake.to(torch.device("cuda"))
    assert log == [("pin", "a"), ("to", "a", "cuda", True), ("pin", "r"), ("to", "r", "cuda", True)]
    assert on_gpu.tensors == {"a": ("moved", "a")} and on_gpu.task_rows == {"bio": ("moved", "r")}
    assert on_gpu.task_tokens == {"bio": 2}
    log.clear()
    fake.to(torch.device("meta"))
    assert log == [("to", "a", "meta", False), ("to", "r", "meta", False)]
