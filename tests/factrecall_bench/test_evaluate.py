"""Evaluation: teacher-forced exact match equals greedy decoding, batched equals one by one."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from factrecall_bench.batching import collate
from factrecall_bench.config import DataSpec, ModelSpec
from factrecall_bench.data.dataset import generate_dataset
from factrecall_bench.data.examples import qa_examples, qa_items
from factrecall_bench.data.tokenizer import train_tokenizer
from factrecall_bench.evaluate import generate_answers, per_attribute, proportion, score_qa
from factrecall_bench.models import build_model
from factrecall_bench.train import optimizer_step


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama that memorized part of 120 QA pairs (so some answers are right, some not)."""
    dataset = generate_dataset(DataSpec(n_people=40, seed=5))
    tokenizer = train_tokenizer(dataset)
    items = qa_items(dataset["qa_train"], tokenizer)
    model = build_model(ModelSpec(n_layer=1, d_model=64, n_head=2, d_ff=128), tokenizer, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    examples = qa_examples(items)
    generator = torch.Generator().manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model.train()
    for _ in range(60):
        picked = torch.randperm(len(examples), generator=generator)[:32].tolist()
        batch = collate([examples[i] for i in picked], tokenizer.pad_token_id)
        optimizer_step(model, optimizer, [batch], accelerator, clip_norm=1.0)
    return model, tokenizer, items


def test_some_answers_right_and_some_wrong(trained):
    model, tokenizer, items = trained
    scores = score_qa(model, items, tokenizer.pad_token_id)
    assert 0 < sum(scores.exact_match) < len(items)


def test_teacher_forced_exact_match_equals_greedy_generation(trained):
    model, tokenizer, items = trained
    scores = score_qa(model, items, tokenizer.pad_token_id, batch_size=17)
    generated = generate_answers(model, items, tokenizer.pad_token_id, tokenizer.eos_token_id,
                                 batch_size=16, max_new_tokens=12)
    by_generation = [int(answer == item.answer_ids) for answer, item in zip(generated, items)]
    assert scores.exact_match == by_generation


def test_batched_generation_equals_one_by_one(trained):
    model, tokenizer, items = trained
    subset = items[:24]
    batched = generate_answers(model, subset, tokenizer.pad_token_id, tokenizer.eos_token_id,
                               batch_size=24, max_new_tokens=12)
    single = [generate_answers(model, [item], tokenizer.pad_token_id, tokenizer.eos_token_id,
                               batch_size=1, max_new_tokens=12)[0] for item in subset]
    assert batched == single


def test_batch_size_does_not_change_scores(trained):
    model, tokenizer, items = trained
    assert score_qa(model, items, tokenizer.pad_token_id, batch_size=7) == \
        score_qa(model, items, tokenizer.pad_token_id, batch_size=128)


def test_proportion_carries_wilson_interval():
    result = proportion([1] * 81 + [0] * 182)
    assert result["n"] == 263 and result["value"] == pytest.approx(81 / 263)
    assert result["low"] == pytest.approx(0.2553, abs=1e-4)
    assert result["high"] == pytest.approx(0.3662, abs=1e-4)


def test_per_attribute_groups_by_attribute(trained):
    model, tokenizer, items = trained
    scores = score_qa(model, items, tokenizer.pad_token_id)
    grouped = per_attribute(scores, "exact_match")
    assert sum(entry["n"] for entry in grouped.values()) == len(items)
    assert len(grouped) == 6
