"""Tests written for the survivors of mutation testing of factrecall_bench/trace/summary.py
(docs/mutation.md, fifth round): every number of the trace equals its recomputation from the
public pieces (top-k, intersection, shared stats, location, centralization, consistency,
ablation), the flat summary's names and values, the compact neuron list, when ablation and the
heatmap happen, and the heatmap's file, size, labels and title.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from factrecall_bench.trace import summary as summary_module
from factrecall_bench.trace.ablation import ablate, bio_only_masks
from factrecall_bench.trace.consistency import gradient_consistency
from factrecall_bench.trace.location import centralization, locate
from factrecall_bench.trace.scores import probe_scores
from factrecall_bench.trace.selection import intersect, shared_stats_from_masks, top_k_masks
from factrecall_bench.trace.settings import TraceSettings
from factrecall_bench.trace.summary import (
    _compact_location,
    flat_summary,
    heatmap_png,
    trace_summary,
)

VOCAB, HIDDEN, INTER, HEADS = 32, 8, 24, 2


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=32)).eval()


def batch(seed: int, size: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (size, length), generator=generator)
    labels = ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def batches() -> dict[str, list[dict[str, torch.Tensor]]]:
    return {"bio": [batch(1), batch(2)], "qa": [batch(3), batch(4)]}


def counting_evaluate(reference_model: nn.Module):  # noqa: ANN201
    """A metric of the weights: the L1 distance to another model; counts its calls."""
    reference = {n: p.detach().clone() for n, p in reference_model.named_parameters()}
    calls: list[int] = []

    def evaluate(model: nn.Module) -> dict[str, float]:
        calls.append(1)
        distance = sum(float((p.detach() - reference[n]).abs().sum())
                       for n, p in model.named_parameters())
        return {"ood": distance, "ind": 2.0 * distance}

    return evaluate, calls


def expected_entry(model: nn.Module, scores: dict, fraction: float, ranking: str) -> tuple:
    masks_bio = top_k_masks(scores["bio"], fraction, ranking)
    masks_qa = top_k_masks(scores["qa"], fraction, ranking)
    shared = intersect(masks_bio, masks_qa)
    location = locate(shared, model)
    entry = {
        "shared": shared_stats_from_masks(masks_bio, masks_qa, ranking),
        "location": _compact_location(location),
        "centralization": centralization(location),
        "by_kind_bio": locate(masks_bio, model)["by_kind"],
        "by_kind_qa": locate(masks_qa, model)["by_kind"],
        "heatmap": None,
    }
    return entry, shared


@pytest.mark.parametrize("ranking", ["global", "per_matrix"])
def test_the_trace_equals_its_recomputation(ranking: str) -> None:
    model, reference_model = tiny_llama(0), tiny_llama(1)
    reference = reference_model.state_dict()
    settings = TraceSettings(top_k=(0.5, 0.02), ranking=ranking,  # type: ignore[arg-type]
                             ablation_random_draws=1, seed=4, probe_examples=3)
    evaluate, calls = counting_evaluate(reference_model)
    result = trace_summary(model, batches(), settings, reference_state=reference,
                           evaluate=evaluate)
    limited = {"bio": [batch(1), {k: v[:1] for k, v in batch(2).items()}],
               "qa": [batch(3), {k: v[:1] for k, v in batch(4).items()}]}
    scores = probe_scores(model, limited, settings)
    assert list(result) == ["settings", "n_parameters", "per_k", "consistency", "ablation",
                            "definition", "definitions", "summary"]
    main = f"probe/grad_x_weight/{ranking}"
    assert result["definition"] == main and list(result["definitions"]) == [main]
    assert result["settings"] == settings.to_dict()
    assert result["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert result["consistency"] == gradient_consistency(model, limited)
    assert list(result["per_k"]) == ["0.5", "0.02"]
    baseline = evaluate(model)
    for key, fraction in (("0.5", 0.5), ("0.02", 0.02)):
        entry, shared = expected_entry(model, scores, fraction, ranking)
        assert result["per_k"][key] == entry
        expected_ablation = ablate(model, shared, reference, evaluate, 1, 4,
                                   bio_only_masks=bio_only_masks(scores["bio"], shared, ranking),
                                   baseline=baseline)
        assert result["ablation"][key] == expected_ablation
    assert len(calls) == 1 + 2 * 3 + 1 + 2 * 3  # the trace's baseline and sets, then ours
    assert result["summary"] == flat_summary(result)


def test_scores_agreed_on_are_the_ones_traced() -> None:
    model = tiny_llama()
    settings = TraceSettings(top_k=(0.1,))
    planted = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    planted["lm_head.weight"][3, :4] = 1.0
    seen: list[set[str]] = []

    def agree(scores: dict) -> dict:
        seen.append(set(scores))
        return {"bio": planted, "qa": planted}

    result = trace_summary(model, batches(), settings, agree_on_scores=agree)
    assert seen == [{"bio", "qa"}]
    assert result["per_k"]["0.1"]["shared"]["count"] == 4
    assert result["per_k"]["0.1"]["location"]["by_kind"]["lm_head"] == 4


def seeded_scores(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=generator) for name, p in model.named_parameters()}


def test_every_further_definition_is_traced_from_its_own_agreed_scores() -> None:
    model = tiny_llama()
    by_score = {"grad": {"bio": seeded_scores(model, 1), "qa": seeded_scores(model, 2)},
                "update": {"bio": seeded_scores(model, 3), "qa": seeded_scores(model, 4)}}
    settings = TraceSettings(mode="training", score="grad", top_k=(0.5, 0.02),
                             definitions=("training/update/per_matrix", "training/grad/global"))
    seen: list[torch.Tensor] = []

    def agree(scores: dict) -> dict:  # one process's scores for all: here BIO's for both tasks
        seen.append(scores["bio"]["lm_head.weight"])
        return {"bio": scores["bio"], "qa": scores["bio"]}

    result = trace_summary(model, batches(), settings, training_scores_by_score=by_score,
                           agree_on_scores=agree)
    assert len(seen) == 2  # the main definition (listed again: not repeated) and update's
    assert torch.equal(seen[1], by_score["update"]["bio"]["lm_head.weight"])
    assert list(result["definitions"]) == ["training/grad/global", "training/update/per_matrix"]
    agreed = by_score["update"]["bio"]
    entry = result["definitions"]["training/update/per_matrix"]
    assert (entry["mode"], entry["score"], entry["ranking"]) == ("training", "update",
                                                                 "per_matrix")
    assert list(entry["per_k"]) == ["0.5", "0.02"]
    for key, fraction in (("0.5", 0.5), ("0.02", 0.02)):
        masks = top_k_masks(agreed, fraction, "per_matrix")
        shared = shared_stats_from_masks(masks, masks, "per_matrix")
        measures = centralization(locate(masks, model))
        assert entry["per_k"][key] == {"shared": shared, "centralization": measures}
        assert entry["summary"][f"shared_count@{key}"] == float(shared["count"])
        assert entry["summary"][f"jaccard@{key}"] == 1.0  # the same set for both tasks
        for name, value in measures.items():
            assert entry["summary"].get(f"{name}@{key}") == (None if value is None else value)
    main = result["definitions"]["training/grad/global"]
    assert main["per_k"]["0.5"]["shared"] == result["per_k"]["0.5"]["shared"]


def test_training_mode_takes_the_recorder_scores() -> None:
    model = tiny_llama()
    planted = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    planted["model.norm.weight"][:3] = 1.0
    result = trace_summary(model, batches(), TraceSettings(mode="training", top_k=(0.5,)),
                           training_scores={"bio": planted, "qa": planted, "other": {}})
    assert result["per_k"]["0.5"]["location"]["by_kind"]["norm"] == 3
    assert result["per_k"]["0.5"]["shared"]["count"] == 3


def test_training_mode_without_both_tasks_is_refused_by_name() -> None:
    model = tiny_llama()
    scores = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    with pytest.raises(ValueError) as error:
        trace_summary(model, batches(), TraceSettings(mode="training"),
                      training_scores={"bio": scores})
    assert str(error.value) == ("trace definition training/grad_x_weight/global needs the "
                                "recorder's 'grad_x_weight' scores for 'bio' and 'qa'")


@pytest.mark.parametrize("given", ["reference", "evaluate"])
def test_no_ablation_without_both_reference_and_evaluate(given: str) -> None:
    model = tiny_llama()
    evaluate, calls = counting_evaluate(tiny_llama(1))
    kwargs: dict[str, Any] = ({"reference_state": tiny_llama(1).state_dict()}
                              if given == "reference" else {"evaluate": evaluate})
    result = trace_summary(model, batches(), TraceSettings(top_k=(0.1,)), **kwargs)
    assert result["ablation"] is None and calls == []
    assert not any(key.startswith("ablation") for key in result["summary"])


def test_heatmap_only_when_asked_and_given_a_folder(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    drawn: list[tuple] = []

    def fake_heatmap(heads: list, path: Path, title: str) -> Path:
        drawn.append((heads, path, title))
        return path

    monkeypatch.setattr(summary_module, "heatmap_png", fake_heatmap)
    model = tiny_llama()
    asked = TraceSettings(top_k=(0.25,), heatmap=True)
    assert trace_summary(model, batches(), asked)["per_k"]["0.25"]["heatmap"] is None
    not_asked = TraceSettings(top_k=(0.25,))
    assert trace_summary(model, batches(), not_asked,
                         heatmap_dir=tmp_path)["per_k"]["0.25"]["heatmap"] is None
    assert drawn == []
    result = trace_summary(model, batches(), asked, heatmap_dir=tmp_path)
    path = tmp_path / "trace-heads@0.25.png"
    assert result["per_k"]["0.25"]["heatmap"] == str(path)
    (heads, drawn_path, title), = drawn
    assert drawn_path == path and title == "shared heads, k=0.25"
    assert heads == result["per_k"]["0.25"]["location"]["heads"]


# ---------------------------------------------------------------- compact location


def test_compact_location_keeps_the_top_twenty_touched_neurons() -> None:
    neurons = torch.zeros(2, 30, dtype=torch.int64)
    neurons[1, :25] = torch.arange(100, 125)  # 25 touched, distinct counts
    neurons[0, 7] = 3
    location = {"by_layer": [1, 2], "heads": [[0.0]], "neurons": neurons.tolist()}
    compact = _compact_location(location)
    assert sorted(compact) == ["by_layer", "heads", "neurons_touched_by_layer", "top_neurons"]
    assert compact["neurons_touched_by_layer"] == [1, 25]
    assert compact["top_neurons"] == [[1, n, 100 + n] for n in range(24, 4, -1)]


def test_compact_location_lists_only_touched_neurons() -> None:
    neurons = [[0, 0, 5], [2, 0, 1]]
    compact = _compact_location({"neurons": neurons})
    assert compact["top_neurons"] == [[0, 2, 5], [1, 0, 2], [1, 2, 1]]
    assert compact["neurons_touched_by_layer"] == [1, 2]
    one_wide = _compact_location({"neurons": [[0], [1], [4]]})
    assert one_wide["top_neurons"] == [[2, 0, 4], [1, 0, 1]]
    assert _compact_location({"neurons": [[0, 0]]})["top_neurons"] == []


# ---------------------------------------------------------------- flat summary


def hand_made_trace(ablation: Any) -> dict[str, Any]:
    stats = {"count": 3, "k": {"bio": 10, "qa": 12}, "share_of_k": 0.25, "jaccard": 0.2,
             "overlap_over_smaller": 0.3, "expected_by_chance": 0.5, "enrichment": 6.0,
             "not_in_summary": 99}
    return {"consistency": {"cosine": 0.125},
            "per_k": {"0.1": {"shared": stats, "centralization": {"gini_heads": 0.5,
                                                                  "top5_heads_share": 1}}},
            "ablation": ablation}


def test_flat_summary_names_every_number() -> None:
    ablation = {"0.1": {"count": 3, "drop": {"ood": 0.5, "ind": 0.25},
                        "random_drop_mean": {"ood": 0.125}, "random_drop_sd": {"ood": 0.0625},
                        "bio_only_drop": {"ood": 0.375, "ind": 0.75}}}
    summary = flat_summary(hand_made_trace(ablation))
    assert summary == {
        "cosine_bio_qa": 0.125, "shared_count@0.1": 3.0, "k_bio@0.1": 10.0, "k_qa@0.1": 12.0,
        "share_of_k@0.1": 0.25, "jaccard@0.1": 0.2, "overlap_over_smaller@0.1": 0.3,
        "expected_by_chance@0.1": 0.5, "enrichment@0.1": 6.0, "gini_heads@0.1": 0.5,
        "top5_heads_share@0.1": 1.0, "ablation_count@0.1": 3.0, "ablation_ood_drop@0.1": 0.5,
        "ablation_ind_drop@0.1": 0.25, "ablation_random_ood_drop@0.1": 0.125,
        "ablation_random_ood_drop_sd@0.1": 0.0625, "ablation_bio_only_ood_drop@0.1": 0.375,
        "ablation_bio_only_ind_drop@0.1": 0.75,
    }
    assert all(isinstance(value, float) for value in summary.values())


def test_flat_summary_without_ablation_or_control() -> None:
    assert not any(key.startswith("ablation") for key in flat_summary(hand_made_trace(None)))
    ablation = {"0.1": {"count": 1, "drop": {"ood": 0.5}, "random_drop_mean": {},
                        "random_drop_sd": {}}}
    summary = flat_summary(hand_made_trace(ablation))
    assert {k: v for k, v in summary.items() if k.startswith("ablation")} == {
        "ablation_count@0.1": 1.0, "ablation_ood_drop@0.1": 0.5}


# ---------------------------------------------------------------- heatmap


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(("layers", "heads", "size"),
                         [(2, 4, (400, 300)), (10, 20, (900, 450))])
def test_heatmap_grows_with_layers_and_heads(tmp_path: Path, layers: int, heads: int,
                                             size: tuple[int, int]) -> None:
    counts = [[float(i * heads + j) for j in range(heads)] for i in range(layers)]
    path = heatmap_png(counts, str(tmp_path / "h.png"))
    assert isinstance(path, Path) and png_size(path) == size


def test_heatmap_ignores_the_users_matplotlib_settings(tmp_path: Path) -> None:
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(self)
        original(self, *args, **kwargs)

    users_settings = matplotlib.rc_context(
        {"image.cmap": "gray", "savefig.format": "svg", "savefig.dpi": 50, "figure.dpi": 50})
    with pytest.MonkeyPatch.context() as patch, users_settings:
        patch.setattr(Figure, "savefig", keep)
        path = heatmap_png([[0.0, 1.0], [2.0, 3.0]], tmp_path / "h.png")
    assert png_size(path) == (400, 300)
    assert figures[0].axes[0].images[0].get_cmap().name == "viridis"


def test_heatmap_axes_labels_and_titles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    heatmap_png([[1.0, 2.0]], tmp_path / "a.png", "my title")
    heatmap_png([[1.0, 2.0]], tmp_path / "b.png")
    axes, colorbar = figures[0].axes
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_title()) == ("head", "layer",
                                                                          "my title")
    assert colorbar.get_ylabel() == "count"
    assert colorbar.get_ylim() == (1.0, 2.0)  # the scale of the counts drawn
    image = axes.images[0]
    assert image.get_cmap().name == "viridis" and image.get_interpolation() == "nearest"
    assert axes.get_aspect() == "auto"
    assert figures[1].axes[0].get_title() == "shared parameters per head"
