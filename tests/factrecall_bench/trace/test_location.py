"""Tests written for the survivors of mutation testing of factrecall_bench/trace/location.py
(docs/mutation.md, fifth round): the module kind and layer every Llama and NeoX parameter name
maps to, the counts per layer, kind, head and neuron of a mask set, and the centralization
measures at their edges, against values worked out by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from factrecall_bench.trace.location import (
    centralization,
    gini,
    layer_of,
    locate,
    normalized_entropy,
    parameter_kind,
)

HIDDEN, INTER, HEADS = 16, 32, 4
HEAD_DIM = HIDDEN // HEADS


def tiny_llama(kv_heads: int = 4, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=32, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=layers,
        num_attention_heads=HEADS, num_key_value_heads=kv_heads, max_position_embeddings=32))


def tiny_neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=32, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=2,
        num_attention_heads=HEADS, max_position_embeddings=32))


def no_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}


@pytest.mark.parametrize(("name", "kind"), [
    ("model.embed_tokens.weight", "embed"),
    ("embed_tokens.weight", "embed"),
    ("gpt_neox.embed_in.weight", "embed"),
    ("lm_head.weight", "lm_head"),
    ("model.lm_head.weight", "lm_head"),
    ("embed_out.weight", "lm_head"),
    ("gpt_neox.layers.0.attention.query_key_value.weight", "qkv"),
    ("model.layers.0.self_attn.q_proj.weight", "q"),
    ("model.layers.0.self_attn.k_proj.weight", "k"),
    ("model.layers.0.self_attn.v_proj.bias", "v"),
    ("model.layers.0.self_attn.o_proj.weight", "o"),
    ("gpt_neox.layers.1.attention.dense.bias", "o"),
    ("model.layers.0.mlp.gate_proj.weight", "mlp_gate"),
    ("model.layers.0.mlp.up_proj.weight", "mlp_up"),
    ("gpt_neox.layers.0.mlp.dense_h_to_4h.bias", "mlp_up"),
    ("model.layers.0.mlp.down_proj.weight", "mlp_down"),
    ("gpt_neox.layers.0.mlp.dense_4h_to_h.weight", "mlp_down"),
    ("model.layers.0.input_layernorm.weight", "norm"),
    ("model.norm.weight", "norm"),
    ("gpt_neox.final_layer_norm.bias", "norm"),
    ("model.norm.scale", "other"),
    ("xembed_tokens.weight", "other"),
    ("model.rotary_emb.inv_freq", "other"),
])  # fmt: skip
def test_parameter_kind_of_llama_and_neox_names(name: str, kind: str) -> None:
    assert parameter_kind(name) == kind


def test_layer_of_reads_the_layer_index() -> None:
    assert layer_of("model.layers.12.mlp.up_proj.weight") == 12
    assert layer_of("gpt_neox.layers.0.attention.dense.weight") == 0
    assert layer_of("model.norm.weight") is None
    assert layer_of("layers.3.mlp.up_proj.weight") is None


def test_counts_outside_the_layers_before_and_after_layer_tensors() -> None:
    """Tensors outside the layers come first in the dict: they must not stop the count."""
    model = tiny_llama()
    masks = no_masks(model)
    masks["model.embed_tokens.weight"][:2, :3] = True  # 6
    masks["model.norm.weight"][:5] = True  # 5
    masks["lm_head.weight"][0, :4] = True  # 4
    masks["model.layers.1.input_layernorm.weight"][:2] = True  # 2
    masks["model.layers.0.mlp.up_proj.weight"][3, :7] = True  # 7
    location = locate(masks, model)
    assert location["outside_layers"] == 15
    assert location["by_layer"] == [7, 2]
    assert location["by_kind"] == {"embed": 6, "norm": 7, "lm_head": 4, "q": 0, "k": 0, "v": 0,
                                   "o": 0, "mlp_gate": 0, "mlp_up": 7, "mlp_down": 0}
    assert location["neurons"][0][3] == 7 and sum(map(sum, location["neurons"])) == 7
    assert torch.tensor(location["heads"]).sum() == 0


def test_a_kind_seen_twice_in_one_layer_adds_up() -> None:
    model = tiny_llama()
    masks = no_masks(model)
    masks["model.layers.0.mlp.up_proj.weight"][2, :3] = True
    masks["model.layers.1.mlp.up_proj.weight"][2, :4] = True
    masks["model.layers.1.mlp.gate_proj.weight"][2, :5] = True
    location = locate(masks, model)
    assert location["by_kind"]["mlp_up"] == 7 and location["by_kind"]["mlp_gate"] == 5
    assert location["neurons"][1][2] == 9 and location["neurons"][0][2] == 3


def test_q_v_and_o_heads_in_a_full_attention_llama() -> None:
    model = tiny_llama(kv_heads=HEADS)
    masks = no_masks(model)
    masks["model.layers.0.self_attn.v_proj.weight"][HEAD_DIM:HEAD_DIM + 1, :5] = True  # head 1
    masks["model.layers.0.self_attn.q_proj.weight"][3 * HEAD_DIM, :2] = True  # head 3
    masks["model.layers.0.self_attn.o_proj.weight"][:3, 2 * HEAD_DIM] = True  # head 2's column
    location = locate(masks, model)
    assert location["heads"][0] == [0.0, 5.0, 3.0, 2.0]
    assert location["kv_heads"][0] == [0.0, 5.0, 0.0, 0.0]
    assert location["heads"][1] == [0.0] * HEADS


def test_bias_of_neox_attention_output_and_mlp_down_counts_by_kind_only() -> None:
    """A 1-D output bias has no head or neuron columns: it counts for its kind and layer only."""
    model = tiny_neox()
    masks = no_masks(model)
    masks["gpt_neox.layers.0.attention.dense.bias"][:3] = True
    masks["gpt_neox.layers.0.mlp.dense_4h_to_h.bias"][:2] = True
    location = locate(masks, model)
    assert location["by_kind"]["o"] == 3 and location["by_kind"]["mlp_down"] == 2
    assert location["by_layer"] == [5, 0]
    assert torch.tensor(location["heads"]).sum() == 0
    assert torch.tensor(location["neurons"]).sum() == 0


def test_neox_kv_heads_take_the_k_and_v_rows_of_the_fused_matrix() -> None:
    model = tiny_neox()
    masks = no_masks(model)
    qkv = masks["gpt_neox.layers.0.attention.query_key_value.weight"].view(HEADS, 3, HEAD_DIM,
                                                                           HIDDEN)
    qkv[0, 0, 0, :1] = True  # q of head 0: 1
    qkv[1, 1, 0, :2] = True  # k of head 1: 2
    qkv[3, 2, 0, :4] = True  # v of head 3: 4
    location = locate(masks, model)
    assert location["heads"][0] == [1.0, 2.0, 0.0, 4.0]
    assert location["kv_heads"][0] == [0.0, 2.0, 0.0, 4.0]


def test_mlp_down_columns_count_for_neurons_not_heads() -> None:
    model = tiny_llama(kv_heads=2)
    masks = no_masks(model)
    masks["model.layers.1.mlp.down_proj.weight"][:3, 30] = True
    masks["model.layers.1.mlp.down_proj.weight"][5, 1] = True
    location = locate(masks, model)
    assert location["neurons"][1][30] == 3 and location["neurons"][1][1] == 1
    assert torch.tensor(location["heads"]).sum() == 0
    assert len(location["kv_heads"][1]) == 2


def test_a_kv_head_shared_by_three_query_heads_splits_in_thirds() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=32, hidden_size=12, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=32))
    masks = no_masks(model)
    masks["model.layers.0.self_attn.k_proj.weight"][0, 0] = True  # kv head 0 (head_dim 2)
    masks["model.layers.0.self_attn.v_proj.weight"][2, :2] = True  # kv head 1
    location = locate(masks, model)
    assert location["heads"][0] == [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3]
    assert location["kv_heads"][0] == [1.0, 2.0]


def test_neuron_counts_are_integers() -> None:
    model = tiny_llama()
    masks = no_masks(model)
    masks["model.layers.0.mlp.gate_proj.weight"][1, :2] = True
    neurons = locate(masks, model)["neurons"]
    assert neurons[0][1] == 2 and all(type(v) is int for row in neurons for v in row)


# ---------------------------------------------------------------- centralization


def reference_gini(values: list[float]) -> float:
    """Mean absolute difference over twice the mean."""
    n, mean = len(values), sum(values) / len(values)
    return sum(abs(a - b) for a in values for b in values) / (2 * n * n * mean)


@pytest.mark.parametrize("values", [[1, 2, 3, 4], [4, 1, 3, 2], [0, 0, 5, 1, 9], [7], [2, 2, 3]])
def test_gini_equals_the_mean_absolute_difference(values: list[float]) -> None:
    assert gini(values) == pytest.approx(reference_gini(values))


def test_gini_and_entropy_of_a_total_of_one() -> None:
    """Fractional counts (a kv head split over query heads) can sum to 1."""
    assert gini([0.0, 1.0]) == 0.5 and gini([0.0, 0.5, 0.5]) == pytest.approx(1 / 3)
    assert normalized_entropy([0.0, 1.0]) == 0.0
    assert normalized_entropy([0.25, 0.5]) == pytest.approx(reference_entropy([0.25, 0.5]))


PAST_FLOAT32 = [16777217.0, 16777216.0]  # 2 ** 24 + 1 and 2 ** 24: one float32 for both


def close(value: float) -> Any:
    """Within 1e-9 relative and no absolute slack (approx's default 1e-12 would hide it)."""
    return pytest.approx(value, rel=1e-9, abs=0.0)


def test_centralization_is_computed_in_float64() -> None:
    """Counts pass 2 ** 24 in large models; float32 would lose them and round the measures."""
    assert gini(PAST_FLOAT32) == close(1 / (4 * 16777216.5))
    stats = centralization({"heads": [PAST_FLOAT32], "neurons": [[1]]}, top_heads=1)
    assert stats["gini_heads"] == close(1 / (4 * 16777216.5))
    assert stats["top1_heads_share"] == close(16777217 / 33554433)
    skewed = [1.0, 16777217.0, 3.0]
    assert normalized_entropy(skewed) == close(reference_entropy(skewed))


def test_gini_of_nothing_is_zero() -> None:
    assert gini([]) == 0.0
    assert gini([0, 0, 0]) == 0.0
    assert gini(torch.zeros(2, 3)) == 0.0


def reference_entropy(values: list[float]) -> float:
    total = sum(values)
    return -sum(v / total * math.log(v / total) for v in values if v > 0) / math.log(len(values))


@pytest.mark.parametrize("values", [[1, 3], [1, 1], [0, 1, 1], [5, 0, 2, 2, 1]])
def test_normalized_entropy_equals_shannon_over_log_n(values: list[float]) -> None:
    assert normalized_entropy(values) == pytest.approx(reference_entropy(values))


def test_normalized_entropy_of_nothing_or_one_value_is_one() -> None:
    assert normalized_entropy([]) == 1.0
    assert normalized_entropy([4]) == 1.0
    assert normalized_entropy([0, 0, 0]) == 1.0


def test_centralization_of_heads_and_neurons() -> None:
    location = {"heads": [[0, 1, 2], [3, 4, 5], [6, 7, 8]], "neurons": [[1, 0], [0, 3]]}
    stats = centralization(location)
    heads = [float(v) for v in range(9)]
    assert stats == pytest.approx({
        "gini_heads": reference_gini(heads),
        "entropy_heads": reference_entropy(heads),
        "top5_heads_share": (8 + 7 + 6 + 5 + 4) / 36,
        "gini_neurons": reference_gini([1, 0, 0, 3]),
        "entropy_neurons": reference_entropy([1, 0, 0, 3]),
    })
    assert centralization({"heads": [[0, 0]], "neurons": [[0]]}, top_heads=2) == {
        "gini_heads": None, "entropy_heads": None, "top2_heads_share": None,
        "gini_neurons": None, "entropy_neurons": None}
    only_neurons = centralization({"heads": [[0, 0]], "neurons": [[0, 2]]}, top_heads=2)
    assert only_neurons["gini_heads"] is None and only_neurons["gini_neurons"] == 0.5


def test_one_parameter_in_one_head_and_one_neuron_is_measured() -> None:
    # A total of 1 is a set, not nothing: one of 4 heads (of 3 neurons) holds it all.
    stats = centralization({"heads": [[1, 0], [0, 0]], "neurons": [[0, 1, 0]]}, top_heads=2)
    assert stats == pytest.approx({"gini_heads": 3 / 4, "entropy_heads": 0.0,
                                   "top2_heads_share": 1.0, "gini_neurons": 2 / 3,
                                   "entropy_neurons": 0.0})
