"""Grafting on planted cases: a model where only a known set of scalars changed."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from factrecall_bench.analyses.grafting import (
    GraftingProblem,
    GraftingSettings,
    flat_delta,
    graft,
    grafting_analysis,
    meets_target,
    overlap,
    random_mask,
    recovered,
    smallest_passing_size,
    top_delta_mask,
    trainable_names,
)
from factrecall_bench.analyses.mask_learning import learn_mask


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def planted(model: LlamaForCausalLM, n_changed: int, seed: int = 99):
    """theta_pre, theta_ft (= pre except n_changed scalars) and the flat mask of those scalars."""
    names = trainable_names(model)
    pre = {name: p.detach().clone() for name, p in model.named_parameters()}
    n = sum(pre[name].numel() for name in names)
    chosen = random_mask(n, n_changed, seed)
    finetuned = {name: value.clone() for name, value in pre.items()}
    offset = 0
    for name in names:
        part = chosen[offset:offset + pre[name].numel()].view(pre[name].shape)
        finetuned[name][part] += 1.0
        offset += pre[name].numel()
    return names, pre, finetuned, chosen


def share_of_planted_at_finetuned(names, finetuned, chosen):
    """A recall stand-in: the share of the planted scalars holding their fine-tuned value."""
    def evaluate(model):
        current = torch.cat([dict(model.named_parameters())[n].detach().flatten() for n in names])
        target = torch.cat([finetuned[n].flatten() for n in names])
        held = float((current[chosen] == target[chosen]).float().mean())
        return {"id_exact_match": held, "ood_exact_match": held}
    return evaluate


def test_top_delta_finds_exactly_the_planted_set_and_recovers_all():
    model = tiny_llama()
    names, pre, finetuned, chosen = planted(model, n_changed=7)
    graft(model, pre, finetuned, names, torch.ones(chosen.numel(), dtype=torch.bool))
    problem = GraftingProblem(model, pre, finetuned,
                              share_of_planted_at_finetuned(names, finetuned, chosen), names)
    delta = flat_delta(pre, finetuned, names)
    settings = GraftingSettings(share=1.0, methods=("top_delta",), tolerance=0.0,
                                max_evaluations=60, random_draws=2)
    result = grafting_analysis(problem, {"top_delta": lambda k: top_delta_mask(delta, k)},
                               {"planted": chosen}, settings)
    found = result["methods"]["top_delta"]
    assert result["n_changed"] == 7
    assert found["k"] == 7
    assert found["recovered"] == {"id_exact_match": 1.0, "ood_exact_match": 1.0}
    assert found["overlap_with_shared"]["planted"]["count"] == 7
    assert found["overlap_with_shared"]["planted"]["share_of_set"] == 1.0
    assert all(draw["recovered"]["id_exact_match"] < 1.0 for draw in found["random"])
    assert sum(found["by_tensor"].values()) == 7
    for name, param in model.named_parameters():  # left holding theta_ft
        assert torch.equal(param.detach(), finetuned[name])


def test_grafting_everything_gives_the_finetuned_model_and_nothing_the_initial_one():
    model = tiny_llama()
    names, pre, finetuned, chosen = planted(model, n_changed=30)
    ids = torch.tensor([[1, 2, 3, 4]])
    graft(model, pre, finetuned, names, torch.ones(chosen.numel(), dtype=torch.bool))
    with torch.no_grad():
        after = model(input_ids=ids).logits
        model.load_state_dict({**model.state_dict(), **finetuned})
        assert torch.equal(model(input_ids=ids).logits, after)
        graft(model, pre, finetuned, names, torch.zeros(chosen.numel(), dtype=torch.bool))
        model_pre = tiny_llama()
        assert torch.equal(model(input_ids=ids).logits, model_pre(input_ids=ids).logits)


@pytest.mark.parametrize("threshold", [1, 37, 500, 1000])
def test_the_size_search_finds_the_smallest_passing_size(threshold):
    settings = GraftingSettings(initial_fraction=0.001, tolerance=0.0, max_evaluations=60)
    result = smallest_passing_size(lambda k: (k >= threshold, {}), 1000, settings)
    assert result["k"] == threshold
    assert len(result["tried"]) <= 2 * 10 + 1


def test_the_size_search_reports_none_when_even_everything_fails():
    result = smallest_passing_size(lambda k: (False, {}), 50, GraftingSettings())
    assert result["k"] is None and result["tried"][-1]["k"] == 50


def test_recovery_skips_metrics_with_nothing_to_recover_and_gain_discounts_pre():
    ratio = recovered({"id": 0.45, "ood": 0.0}, {"id": 0.5, "ood": 0.0}, {"id": 0.1, "ood": 0.0},
                      GraftingSettings())
    assert ratio == {"id": pytest.approx(0.9), "ood": None}
    gain = recovered({"id": 0.45}, {"id": 0.5}, {"id": 0.1}, GraftingSettings(recovery="gain"))
    assert gain == {"id": pytest.approx(0.875)}
    assert meets_target(ratio, 0.9) and not meets_target(gain, 0.9)


def test_overlap_counts_against_chance():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    stats = overlap(a, b)
    assert stats["count"] == 1 and stats["expected_by_chance"] == 1.0
    assert stats["share_of_set"] == 0.5 and stats["enrichment"] == 1.0


def test_a_learned_mask_without_steps_is_the_top_delta_set_and_always_has_k_scalars():
    model = tiny_llama()
    names, pre, finetuned, _ = planted(model, n_changed=40)
    delta = flat_delta(pre, finetuned, names) * torch.linspace(1.0, 2.0, sum(
        pre[n].numel() for n in names))  # distinct magnitudes: a unique top-k
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "attention_mask": torch.ones(1, 4,
             dtype=torch.long), "labels": torch.tensor([[1, 2, 3, 4]])}
    no_steps = learn_mask(model, pre, delta, names, [batch], 10,
                          GraftingSettings(mask_steps=0))
    assert torch.equal(no_steps, top_delta_mask(delta, 10))
    trained = GraftingSettings(mask_steps=5, mask_lr=1.0)
    first = learn_mask(model, pre, delta, names, [batch], 10, trained)
    again = learn_mask(model, pre, delta, names, [batch], 10, trained)
    assert int(first.sum()) == 10 and torch.equal(first, again)


def test_bad_settings_are_refused():
    for bad in [dict(share=0.0), dict(methods=("magic",)), dict(recovery="x"),
                dict(random_draws=-1)]:
        with pytest.raises(ValueError):
            GraftingSettings(**bad)
