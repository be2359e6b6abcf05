"""Packing: the packed step's loss and gradients equal the padded step's (float64, Llama and NeoX),
with accumulation and with BIO and QA in one micro-batch; and the equivalence notices the bugs
packing invites (examples seeing each other, positions not restarting)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

from factrecall_bench import packing
from factrecall_bench.batching import MicroBatch, make_micro_batch
from factrecall_bench.data.examples import IGNORE, Example
from factrecall_bench.packing import layout_rows, pack
from factrecall_bench.train import optimizer_step

VOCAB = 50
TOLERANCE = {"rtol": 1e-10, "atol": 1e-12}


def tiny_float64_model(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=128, pad_token_id=0)
    config = (LlamaConfig(num_key_value_heads=2, **common) if kind == "llama"
              else GPTNeoXConfig(hidden_dropout=0.0, attention_dropout=0.0, **common))
    return AutoModelForCausalLM.from_config(config).double()


def mixed_examples(count: int, seed: int) -> list[Example]:
    """Long BIO examples (loss everywhere) and short QA ones (loss on the answer only)."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        qa = index % 3 == 1
        length = int(torch.randint(5, 10, (1,), generator=generator)) if qa else \
            int(torch.randint(12, 30, (1,), generator=generator))
        ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        labels = [IGNORE] * (length - 3) + ids[-3:] if qa else list(ids)
        examples.append(Example(ids, labels, "qa" if qa else "bio"))
    return examples


class GradientCapture:
    """Stands in for the optimizer: keeps the gradients `optimizer_step` would apply."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.grads: dict[str, torch.Tensor] = {}

    def step(self) -> None:
        self.grads = {name: p.grad.detach().clone() for name, p in self.model.named_parameters()
                      if p.grad is not None}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=set_to_none)


def step_gradients(model: torch.nn.Module, micro_batches: list[MicroBatch]
                   ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    capture = GradientCapture(model)
    losses = optimizer_step(model, capture, micro_batches,  # type: ignore[arg-type]
                            Accelerator(cpu=True), clip_norm=0.0)
    sums = {task: float(loss) for task, loss in losses.loss_sum.items()}
    return {**sums, **{f"tokens_{t}": n for t, n in losses.tokens.items()}}, capture.grads


def padded_today(examples: list[Example]) -> list[MicroBatch]:
    """Today's default: one micro-batch per task, right-padded."""
    return [make_micro_batch([e for e in examples if e.task == task], pad_id=0)
            for task in ("bio", "qa")]


def packed(examples: list[Example], micro_batches: int = 1, width: int = 0) -> list[MicroBatch]:
    size = -(-len(examples) // micro_batches)
    return [make_micro_batch(examples[i:i + size], pad_id=0, packing=True, pack_width=width)
            for i in range(0, len(examples), size)]


def assert_same_update(expected: tuple[dict, dict], actual: tuple[dict, dict]) -> None:
    (expected_losses, expected_grads), (losses, grads) = expected, actual
    assert losses.keys() == expected_losses.keys()
    for key, value in expected_losses.items():
        assert losses[key] == pytest.approx(value, rel=1e-10)
    assert grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, **TOLERANCE)


@pytest.mark.parametrize("kind", ["llama", "neox"])
@pytest.mark.parametrize(("micro_batches", "width"), [(1, 0), (1, 64), (3, 0), (2, 40)])
def test_packed_step_equals_padded_step(kind, micro_batches, width):
    examples = mixed_examples(12, seed=micro_batches + width)
    expected = step_gradients(tiny_float64_model(kind), padded_today(examples))
    actual = step_gradients(tiny_float64_model(kind), packed(examples, micro_batches, width))
    assert_same_update(expected, actual)


def test_a_mixed_micro_batch_packs_both_tasks_into_shared_rows():
    micro = packed(mixed_examples(12, seed=0), width=64)[0]
    assert list(micro.task_tokens) == ["qa", "bio"] and micro.packed
    tasks = micro.tensors["loss_task"].view(-1)
    rows = micro.tensors["loss_index"] // micro.tensors["input_ids"].size(1)
    assert any(set(tasks[rows == row].tolist()) == {0, 1} for row in rows.unique())


def test_packed_with_a_plain_causal_mask_is_caught(monkeypatch):
    """Examples that see each other (what a forward with a cache silently does) change it."""
    examples = mixed_examples(12, seed=5)
    expected = step_gradients(tiny_float64_model("llama"), padded_today(examples))
    monkeypatch.setattr(packing, "segment_mask", lambda segments: torch.ones(
        segments.size(1), segments.size(1), dtype=torch.bool).tril().expand(
        segments.size(0), 1, -1, -1))
    leaky = step_gradients(tiny_float64_model("llama"), packed(examples, width=64))
    with pytest.raises(AssertionError):
        assert_same_update(expected, leaky)


def test_packed_without_restarting_positions_is_caught():
    examples = mixed_examples(12, seed=6)
    expected = step_gradients(tiny_float64_model("neox"), padded_today(examples))
    micro = packed(examples, width=64)[0]
    row_positions = torch.arange(micro.tensors["input_ids"].size(1)).expand_as(
        micro.tensors["input_ids"])
    micro.tensors["position_ids"] = row_positions.clone()
    with pytest.raises(AssertionError):
        assert_same_update(expected, step_gradients(tiny_float64_model("neox"), [micro]))


def test_layout_places_every_example_once_within_the_width():
    lengths = [30, 5, 7, 22, 9, 9, 3, 40]
    layout = layout_rows(lengths, width=32)
    assert layout.width == 40  # never narrower than the longest example
    assert sorted(i for row in layout.rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= layout.width for row in layout.rows)
    assert len(layout.rows) < len(lengths)


def test_packed_tensors_restart_positions_and_keep_loss_inside_each_example():
    examples = [Example([5, 6, 7], [5, 6, 7], "bio"), Example([8, 9], [IGNORE, 9], "qa")]
    tensors = pack(examples, pad_id=0, width=6)
    assert tensors["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0]]
    assert tensors["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0]]
    # 5->6, 6->7 (bio), 8->9 (qa); never 7->8 across the boundary
    assert tensors["loss_index"].tolist() == [0, 1, 3]
    assert tensors["loss_targets"].tolist() == [6, 7, 9]
    assert tensors["loss_task"].tolist() == [0, 0, 1]
    mask = tensors["attention_mask"][0, 0]
    assert not mask[3, :3].any() and mask[4, 3] and mask[5, 5]  # padding sees itself only


def test_a_stand_in_micro_batch_carries_no_loss():
    micro = make_micro_batch(mixed_examples(2, seed=1)[:1], pad_id=0, packing=True,
                             carries_loss=False)
    losses, grads = step_gradients(tiny_float64_model("llama"), [micro])
    assert losses == {"bio": 0.0, "tokens_bio": 0}
    assert all(not grad.any() for grad in grads.values())


def test_padded_micro_batch_counts_match_what_its_tensors_say():
    examples = mixed_examples(9, seed=2)
    micro = make_micro_batch(examples, pad_id=0)
    counted = micro.tensors["labels"][:, 1:] != IGNORE
    is_qa = micro.tensors["is_qa"]
    assert micro.task_tokens == {"qa": int(counted[is_qa].sum()), "bio": int(counted[~is_qa].sum())}
    assert micro.task_rows["qa"].tolist() == is_qa.nonzero().flatten().tolist()
