"""Packing: the packed step's loss and gradients equal the padded step's (float64, Llama and NeoX),
with accumulation and with BIO and QA in one micro-batch; and the equivalence notices the bugs
packing invites (examples seeing each other, positions not restarting)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

from factrecall_bench import packing
from factrecall_bench.batching import MicroBatch, make_micro_batch
from factrecall_bench.data.examples import IGNORE, Example
from factrecall_bench.packing import (
    at_least_float32,
    attention_mask_for,
    layout_rows,
    pack,
    packed_token_losses,
    segment_mask,
    task_sums,
)
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


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/packing.py (docs/mutation.md,
# fifth round): the first-fit-decreasing layout at its boundaries (exact fit, ties, a width that must grow),
# the packed tensors of several rows (padding, positions, segments, flat loss positions), the block-diagonal
# mask, the mask as sdpa and eager attention take it, the losses at the loss positions against per-example
# references, and the per-task sums.


SMALL_VOCAB = 30


@pytest.mark.parametrize(("lengths", "width", "rows", "final_width"), [
    ([5, 3, 4, 2, 8], 8, [[4], [0, 1], [2, 3]], 8),
    ([3, 5], 8, [[1, 0]], 8),  # an exact fit shares the row
    ([3, 3, 3], 6, [[0, 1], [2]], 6),  # ties in index order
    ([2, 6, 2], 4, [[1], [0, 2]], 6),  # the width grows to the longest example
    ([1, 1], 0, [[0], [1]], 1),
    ([4, 2, 3, 1], 5, [[0, 3], [2, 1]], 5),
])  # fmt: skip
def test_first_fit_decreasing_layout(lengths: list[int], width: int, rows: list[list[int]],
                                     final_width: int) -> None:
    layout = layout_rows(lengths, width)
    assert layout.rows == rows and layout.width == final_width


def test_pack_fills_rows_and_flat_loss_positions() -> None:
    examples = [Example([1, 2, 3, 4], [1, 2, 3, 4], "bio"),  # row 0, alone
                Example([5, 6], [IGNORE, 6], "qa"),  # row 1, after the longer one
                Example([7, 8, 9], [IGNORE, IGNORE, 9], "qa")]  # row 1, first
    tensors = pack(examples, pad_id=-1, width=5)
    assert tensors["input_ids"].tolist() == [[1, 2, 3, 4, -1], [7, 8, 9, 5, 6]]
    assert tensors["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert tensors["loss_index"].tolist() == [0, 1, 2, 5 + 1, 5 + 3]
    assert tensors["loss_targets"].tolist() == [2, 3, 4, 9, 6]
    assert tensors["loss_task"].tolist() == [0, 0, 0, 1, 1]
    assert all(tensors[key].dtype == torch.long
               for key in ("input_ids", "position_ids", "loss_index", "loss_targets",
                           "loss_task"))
    expected_mask = segment_mask(torch.tensor([[0, 0, 0, 0, -1], [0, 0, 0, 1, 1]]))
    assert torch.equal(tensors["attention_mask"], expected_mask)


def test_trailing_padding_is_a_segment_of_its_own() -> None:
    examples = [Example([1, 2], [1, 2], "bio"), Example([3, 4], [3, 4], "bio")]
    tensors = pack(examples, pad_id=0, width=6)
    assert tensors["input_ids"].tolist() == [[1, 2, 3, 4, 0, 0]]
    expected = segment_mask(torch.tensor([[0, 0, 1, 1, -1, -1]]))
    assert torch.equal(tensors["attention_mask"], expected)
    assert not tensors["attention_mask"][0, 0, 4:, :4].any()


def test_pack_of_examples_without_loss_has_empty_loss_tensors() -> None:
    tensors = pack([Example([1, 2], [IGNORE, IGNORE], "bio")], pad_id=0)
    assert tensors["input_ids"].tolist() == [[1, 2]]
    for key in ("loss_index", "loss_targets", "loss_task"):
        assert tensors[key].tolist() == [] and tensors[key].dtype == torch.long


def test_segment_mask_is_causal_within_each_segment_and_padding() -> None:
    mask = segment_mask(torch.tensor([[0, 0, 1, 1, 1, -1, -1]]))
    assert mask.shape == (1, 1, 7, 7) and mask.dtype == torch.bool
    expected = torch.zeros(7, 7, dtype=torch.bool)
    for start, stop in ((0, 2), (2, 5), (5, 7)):
        expected[start:stop, start:stop] = torch.ones(stop - start, stop - start,
                                                      dtype=torch.bool).tril()
    assert torch.equal(mask[0, 0], expected)


class WithAttention(nn.Module):
    def __init__(self, implementation: str | None) -> None:
        super().__init__()
        if implementation is not None:
            self.config = type("Config", (), {"_attn_implementation": implementation})()


def test_sdpa_takes_the_boolean_mask_and_is_the_default() -> None:
    mask = segment_mask(torch.tensor([[0, 0, 1]]))
    assert attention_mask_for(WithAttention("sdpa"), mask, torch.float32) is mask
    assert attention_mask_for(WithAttention(None), mask, torch.float32) is mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_eager_takes_an_additive_mask(dtype: torch.dtype) -> None:
    mask = segment_mask(torch.tensor([[0, 0, 1]]))
    additive = attention_mask_for(WithAttention("eager"), mask, dtype)
    assert additive.dtype == dtype and additive.shape == mask.shape
    assert torch.equal(additive[mask], torch.zeros(int(mask.sum()), dtype=dtype))
    assert bool((additive[~mask] == torch.finfo(dtype).min).all())


def test_other_attention_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as error:
        attention_mask_for(WithAttention("flash_attention_2"), torch.ones(1, 1, 1, 1,
                                                                          dtype=torch.bool),
                           torch.float32)
    assert str(error.value) == (
        "packing supports sdpa and eager attention, not 'flash_attention_2'")


def tiny_llama(implementation: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=SMALL_VOCAB, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=32)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=implementation)
    assert model.config._attn_implementation == implementation
    return model.to(dtype).eval()


EXAMPLES = [Example([3, 4, 5, 6, 7], [3, 4, 5, 6, 7], "bio"),
            Example([8, 9, 10], [IGNORE, 9, 10], "qa"),
            Example([11, 12], [IGNORE, 12], "qa")]


def reference_token_losses(model: nn.Module, examples: list[Example]) -> list[float]:
    """Each example alone: the cross-entropy of every labelled next token."""
    out = []
    with torch.no_grad():
        for example in examples:
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0].double()
            for t, label in enumerate(example.labels[1:]):
                if label != IGNORE:
                    out.append(float(F.cross_entropy(logits[t], torch.tensor(label))))
    return out


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_packed_losses_equal_each_example_alone(implementation: str) -> None:
    model = tiny_llama(implementation, torch.float64)
    tensors = pack(EXAMPLES, pad_id=0, width=8)
    assert tensors["input_ids"].shape == (2, 8)
    with torch.no_grad():
        losses = packed_token_losses(model, tensors)
    assert losses.dtype == torch.float64
    assert tensors["input_ids"].tolist()[1] == [11, 12, 0, 0, 0, 0, 0, 0]
    assert losses.tolist() == pytest.approx(reference_token_losses(model, EXAMPLES), rel=1e-9)


class DecoderAndHead(nn.Module):
    """A causal LM that is not a transformers model: a base_model and an output embedding, no
    get_decoder()."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.base_model = model.model
        assert isinstance(model.lm_head, nn.Module)
        self.head = model.lm_head
        self.config = model.config

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_a_model_without_get_decoder_runs_its_base_model() -> None:
    model = tiny_llama("sdpa", torch.float64)
    tensors = pack(EXAMPLES, pad_id=0)
    with torch.no_grad():
        expected = packed_token_losses(model, tensors)
        losses = packed_token_losses(DecoderAndHead(model), tensors)
    assert torch.equal(losses, expected)


def test_half_precision_losses_are_computed_in_float32() -> None:
    model = tiny_llama("eager", torch.bfloat16)
    with torch.no_grad():
        losses = packed_token_losses(model, pack(EXAMPLES, pad_id=0))
    assert losses.dtype == torch.float32 and bool(torch.isfinite(losses).all())


def test_at_least_float32() -> None:
    double = torch.ones(2, dtype=torch.float64)
    assert at_least_float32(double) is double
    assert at_least_float32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_float32(torch.ones(2, dtype=torch.float16)).dtype == torch.float32


def test_task_sums_add_each_loss_to_its_task() -> None:
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    sums = task_sums(losses, torch.tensor([1, 0, 1, 1]))
    assert sums.tolist() == [2.0, 13.0] and sums.dtype == torch.float64
    assert task_sums(torch.tensor([]), torch.tensor([], dtype=torch.long)).tolist() == [0.0, 0.0]
