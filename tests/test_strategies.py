"""Strategies as data: resolution, matched compute, mixing, and errors."""

from __future__ import annotations

import numpy as np
import pytest

from factrecall_bench.batching import example_counts, plan_run, split_micro_batches
from factrecall_bench.config import TrainSpec
from factrecall_bench.errors import UserError
from factrecall_bench.strategies import STRATEGIES, resolve_strategy

SIZES = {"bio": 1000, "qa_train": 600}


def total_examples(name: str, train: TrainSpec) -> int:
    return sum(sum(example_counts(phase, SIZES).values())
               for phase in resolve_strategy(name, train))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_spends_the_reference_budget(name):
    train = TrainSpec(bio_epochs=4, qa_epochs=2)
    assert total_examples(name, train) == 4 * 1000 + 2 * 600


def test_two_stage_is_bio_then_qa_at_stage2_lr():
    phases = resolve_strategy("two-stage", TrainSpec(lr=1e-3, stage2_lr=1e-4))
    assert [p.name for p in phases] == ["bio", "qa"]
    assert phases[0].epochs == {"bio": 16.0} and phases[1].epochs == {"qa_train": 16.0}
    assert (phases[0].lr, phases[1].lr) == (1e-3, 1e-4)


def test_mixed_qa_share_sets_the_stream():
    natural = resolve_strategy("mixed", TrainSpec(bio_epochs=1, qa_epochs=1))[0]
    assert example_counts(natural, SIZES) == {"bio": 1000, "qa_train": 600}
    shared = resolve_strategy("mixed", TrainSpec(bio_epochs=1, qa_epochs=1, qa_share=0.8))[0]
    assert example_counts(shared, SIZES) == {"bio": 320, "qa_train": 1280}


def test_replay_keeps_a_share_of_bio_in_stage_two():
    phases = resolve_strategy("two-stage-replay", TrainSpec(qa_epochs=1, replay_share=0.25))
    assert example_counts(phases[1], SIZES) == {"qa_train": 450, "bio": 150}


def test_bio_only_never_sees_qa():
    phase = resolve_strategy("bio-only", TrainSpec(bio_epochs=1, qa_epochs=1))[0]
    assert example_counts(phase, SIZES) == {"bio": 1600}


def test_suite_defined_order_needs_no_code():
    custom = {"qa-last": [{"name": "qa", "epochs": {"qa_train": "0.5*qa_epochs"}, "lr": 2e-4}]}
    phases = resolve_strategy("qa-last", TrainSpec(qa_epochs=8), custom)
    assert phases[0].epochs == {"qa_train": 4.0} and phases[0].lr == 2e-4


@pytest.mark.parametrize("custom, message", [
    ({"x": [{"epochs": {"people": 1}}]}, "unknown source"),
    ({"x": [{"epochs": {"bio": "no_such_setting"}}]}, "train setting"),
    ({"x": [{"epochs": {"bio": 1}, "mix": {"bio": -1}}]}, "mix shares"),
    ({"x": []}, "no phases"),
])
def test_bad_strategies_are_user_errors(custom, message):
    with pytest.raises(UserError, match=message):
        resolve_strategy("x", TrainSpec(), custom)


def test_unknown_strategy():
    with pytest.raises(UserError, match="unknown strategy"):
        resolve_strategy("three-stage", TrainSpec())


def test_bio_variants_of_a_person_do_not_cluster():
    phases = resolve_strategy("two-stage", TrainSpec(bio_epochs=1, qa_epochs=1))
    plan = plan_run(phases, {"bio": 500, "qa_train": 300}, batch_size=25, seed=0)
    order = [index for batch in plan[0].batches for _, index in batch]
    assert sorted(order) == list(range(500))
    person = np.array(order) // 5  # rows are person-major, 5 variants each
    assert np.mean(person[1:] == person[:-1]) < 0.05


def test_plan_is_a_function_of_the_seed():
    phases = resolve_strategy("mixed", TrainSpec(bio_epochs=2, qa_epochs=2))
    first = plan_run(phases, SIZES, 32, seed=4)[0].batches
    assert first == plan_run(phases, SIZES, 32, seed=4)[0].batches
    assert first != plan_run(phases, SIZES, 32, seed=5)[0].batches


def test_micro_batches_keep_sources_apart_and_cover_the_batch():
    batch = [("bio", 1), ("qa_train", 2), ("bio", 3), ("qa_train", 4), ("bio", 5)]
    micro = split_micro_batches(batch, grad_accum=1)
    assert sorted(item for mb in micro for item in mb) == sorted(batch)
    assert all(len({source for source, _ in mb}) == 1 for mb in micro)
