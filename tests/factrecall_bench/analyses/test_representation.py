"""Representation consistency on known answers: identical inputs, CKA against its formula."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from factrecall_bench.analyses.representation import (
    FactPair,
    RepresentationSettings,
    consistency_of,
    cosine_per_layer,
    fact_pairs,
    hidden_states_at,
    linear_cka,
    mismatched,
)
from factrecall_bench.data.examples import BioItem, QAItem


def hand_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA in its kernel form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, H centring."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, m = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, m) / torch.sqrt(hsic(k, k) * hsic(m, m)))


def test_cka_of_a_matrix_with_itself_is_one_and_matches_the_kernel_formula():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=generator)
    y = torch.randn(12, 7, generator=generator)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(hand_cka(x, y))


def test_cka_is_invariant_to_orthogonal_maps_scaling_and_shifts():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, generator=generator)
    y = torch.randn(20, 6, generator=generator)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator))
    assert linear_cka(x @ q * 3.0 + 5.0, y) == pytest.approx(linear_cka(x, y))


def test_cosine_is_one_for_identical_states_and_zero_for_orthogonal_ones():
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert cosine_per_layer(a, a) == [pytest.approx(1.0)]
    assert cosine_per_layer(a, torch.tensor([[[0.0, 1.0], [3.0, 0.0]]])) == [pytest.approx(0.0)]


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def test_hidden_states_do_not_depend_on_padding_or_batching():
    model = tiny_llama()
    sequences, positions = [[1, 2, 3], [4, 5, 6, 7, 8, 9]], [2, 4]
    together = hidden_states_at(model, sequences, positions, pad_id=0, batch_size=2)
    alone = torch.cat([hidden_states_at(model, [s], [p], 0) for s, p in
                       zip(sequences, positions)], dim=1)
    assert together.shape == (3, 2, 8)  # embeddings + two layers
    torch.testing.assert_close(together, alone)


def test_identical_storage_and_query_forms_are_fully_consistent():
    model = tiny_llama()
    pairs = [FactPair(person, attribute, [1, person + 2, 3, 4], 2, [1, person + 2, 3, 4], 2)
             for attribute in ("a", "b") for person in range(5)]
    result = consistency_of(model, pairs, 0, RepresentationSettings(attributes=("major",)))
    assert result["n_people"] == 5 and result["n_pairs"] == 10
    assert result["cosine"] == pytest.approx([1.0] * 3)
    assert result["cka"][1:] == pytest.approx([1.0] * 2)
    assert min(result["cosine_mismatched"][1:]) < 1.0


def test_mismatched_pairs_each_query_with_another_person_of_the_same_attribute():
    query = torch.arange(6.0).view(1, 6, 1)
    rolled = mismatched(query, ["a", "a", "a", "b", "b", "b"])
    assert rolled.flatten().tolist() == [2.0, 0.0, 1.0, 5.0, 3.0, 4.0]


def test_pairs_match_each_biography_value_with_the_question_about_it():
    bio = BioItem(7, [1, 5, 6, 9, 9, 2], {"major": (3, 5), "university": (4, 5)})
    questions = [QAItem("p7/major", "major", [1, 11, 12], [9, 2]),
                 QAItem("p7/university", "university", [1, 13], [9, 2]),
                 QAItem("p8/major", "major", [1, 14], [9, 2])]
    settings = RepresentationSettings(attributes=("major", "university"))
    pairs = fact_pairs([bio], questions, settings)
    assert [(p.attribute, p.storage_position, p.query_position) for p in pairs] == \
        [("major", 2, 2), ("university", 3, 1)]
    assert pairs[0].query_ids == [1, 11, 12, 9, 2]


def test_a_sequence_given_several_times_is_read_alike_when_run_once():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=32))
    biography, other = [3, 5, 7, 9, 11, 13], [4, 6, 8]
    sequences, positions = [biography, other, biography, biography], [1, 2, 4, 5]
    # the reference: each sequence alone, one forward per row
    alone = torch.cat([hidden_states_at(model, [s], [p], pad_id=0)
                       for s, p in zip(sequences, positions, strict=True)], dim=1)
    once = hidden_states_at(model, sequences, positions, pad_id=0, batch_size=2,
                            distinct_once=True)
    assert once.shape == alone.shape == (3, 4, 16)
    torch.testing.assert_close(once, alone, rtol=1e-5, atol=1e-5)
