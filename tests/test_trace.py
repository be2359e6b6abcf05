"""Tests of the cross-task gradient trace on tiny models: scores against per-tensor autograd, a
planted shared set, top-k against a full sort, head/neuron attribution, exact ablation restore."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from factrecall_bench import trace
from factrecall_bench.trace import (
    TraceSettings,
    TrainingTraceRecorder,
    ablate,
    bio_only_masks,
    centralization,
    gini,
    gradient_consistency,
    heatmap_png,
    locate,
    normalized_entropy,
    probe_scores,
    shared_stats,
    top_k_masks,
    trace_summary,
)

VOCAB, HIDDEN, INTER, HEADS = 64, 16, 32, 4


def tiny_llama(seed: int = 0, kv_heads: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=2,
        num_attention_heads=HEADS, num_key_value_heads=kv_heads, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def tiny_neox(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=2,
        num_attention_heads=HEADS, max_position_embeddings=64,
    )  # fmt: skip
    return GPTNeoXForCausalLM(config).eval()


def random_batch(seed: int, size: int = 3, length: int = 10) -> dict[str, torch.Tensor]:
    """Right-padded batch; loss only on the last few real tokens, like answer-only QA."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0
    labels = input_ids.clone()
    labels[:, : length // 2] = -100
    labels[attention_mask == 0] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches_by_task() -> dict[str, list[dict[str, torch.Tensor]]]:
    return {"bio": [random_batch(1), random_batch(2)], "qa": [random_batch(3), random_batch(4)]}


def naive_scores(model: nn.Module, units: list[dict[str, torch.Tensor]], score: str) -> dict:
    """Reference: torch.autograd.grad for one parameter tensor at a time."""
    params = dict(model.named_parameters())
    reference = {name: torch.zeros_like(p) for name, p in params.items()}
    for unit in units:
        loss = model(**unit).loss
        for name, p in params.items():
            (grad,) = torch.autograd.grad(loss, p, allow_unused=True, retain_graph=True)
            if grad is not None:
                reference[name] += grad.abs()
    for name, p in params.items():
        reference[name] /= len(units)
        if score == "grad_x_weight":
            reference[name] *= p.detach().abs()
    return reference


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "bad",
    [{"mode": "online"}, {"score": "hessian"}, {"aggregate": "max"}, {"ranking": "layer"},
     {"bio_loss": "names"}, {"top_k": ()}, {"top_k": (0.0,)}, {"top_k": (1.5,)},
     {"top_k": (0.01, 0.01)}, {"probe_examples": 0}, {"ablation_random_draws": -1}],
)  # fmt: skip
def test_settings_reject_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="trace."):
        TraceSettings(**bad)


def test_settings_defaults_and_dict() -> None:
    settings = TraceSettings(top_k=[0.5, 0.1])  # type: ignore[arg-type]
    assert settings.top_k == (0.5, 0.1)
    assert settings.to_dict()["aggregate"] == "summed"
    assert json.loads(json.dumps(settings.to_dict()))["top_k"] == [0.5, 0.1]


# ---------------------------------------------------------------- scores


@pytest.mark.parametrize("score", ["grad", "grad_x_weight"])
@pytest.mark.parametrize("aggregate", ["summed", "per_example"])
def test_probe_scores_match_per_tensor_autograd(score: str, aggregate: str) -> None:
    model = tiny_llama()
    batches = batches_by_task()
    settings = TraceSettings(score=score, aggregate=aggregate)  # type: ignore[arg-type]
    scores = probe_scores(model, batches, settings)
    assert set(scores) == {"bio", "qa"}
    for task in ("qa",) if aggregate == "per_example" else ("bio", "qa"):  # keep the test fast
        task_batches = batches[task]
        units = [
            {k: v[i : i + 1] for k, v in b.items()} for b in task_batches for i in range(3)
        ] if aggregate == "per_example" else task_batches  # fmt: skip
        reference = naive_scores(model, units, score)
        assert set(scores[task]) == set(reference)
        for name, value in scores[task].items():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_probe_examples_limits_the_probe() -> None:
    model = tiny_llama()
    batches = batches_by_task()
    limited = probe_scores(model, batches, TraceSettings(probe_examples=4))
    first_four = [batches["qa"][0], {k: v[:1] for k, v in batches["qa"][1].items()}]
    reference = naive_scores(model, first_four, "grad_x_weight")
    for name, value in limited["qa"].items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-7)


def micro_loss(model: nn.Module, batch: dict, n_tokens: int) -> torch.Tensor:
    """Token-summed loss over the whole step's token count (what accumulation must use)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1), reduction="sum"
    ) / n_tokens


def n_loss_tokens(*batches: dict) -> int:
    return sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)


@pytest.mark.parametrize("score", ["grad", "grad_x_weight"])
def test_recorder_accumulated_micro_batches_equal_their_concatenation(score: str) -> None:
    model = tiny_llama()
    bio_a, bio_b, qa = random_batch(5), random_batch(6), random_batch(7)
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training", score=score))  # type: ignore[arg-type]
    model.zero_grad(set_to_none=True)
    bio_tokens = n_loss_tokens(bio_a, bio_b)
    # The QA micro-batch sits between the BIO ones: its gradient must not leak into BIO.
    for task, batch, n_tokens in [("bio", bio_a, bio_tokens), ("qa", qa, n_loss_tokens(qa)),
                                  ("bio", bio_b, bio_tokens)]:  # fmt: skip
        recorder.before_backward()
        micro_loss(model, batch, n_tokens).backward()
        recorder.after_backward(task)
    recorder.on_optimizer_step()
    joined = {k: torch.cat([bio_a[k], bio_b[k]]) for k in bio_a}
    expected = probe_scores(model, {"bio": [joined], "qa": [qa]}, TraceSettings(score=score))  # type: ignore[arg-type]
    got = recorder.scores()
    for task in ("bio", "qa"):
        for name, value in expected[task].items():
            torch.testing.assert_close(got[task][name], value, rtol=1e-4, atol=1e-7)


def test_recorder_sums_over_steps_and_checks_call_order() -> None:
    model = tiny_llama()
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training", score="grad"))
    batch = random_batch(8)
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        recorder.before_backward()
        model(**batch).loss.backward()
        recorder.after_backward("qa")
        recorder.on_optimizer_step()
    single = probe_scores(model, {"qa": [batch]}, TraceSettings(score="grad"))["qa"]
    for name, value in single.items():
        torch.testing.assert_close(recorder.scores()["qa"][name], 2 * value, rtol=1e-4, atol=1e-7)
    assert recorder.steps == 2 and set(recorder.scores()) == {"qa"}
    with pytest.raises(RuntimeError):
        recorder.after_backward("bio")


def test_recorder_state_resumes_the_sums_and_refuses_strangers() -> None:
    model = tiny_llama()
    settings = TraceSettings(mode="training", score="grad")
    recorder, batch = TrainingTraceRecorder(model, settings), random_batch(8)

    def record_step(on: TrainingTraceRecorder) -> None:
        model.zero_grad(set_to_none=True)
        on.before_backward()
        model(**batch).loss.backward()
        on.after_backward("qa")
        on.on_optimizer_step()

    record_step(recorder)
    resumed = TrainingTraceRecorder(model, settings)
    resumed.load_state_dict(recorder.state_dict())
    record_step(recorder)
    record_step(resumed)
    assert resumed.steps == recorder.steps == 2
    for name, value in recorder.scores()["qa"].items():
        torch.testing.assert_close(resumed.scores()["qa"][name], value)
    with pytest.raises(ValueError, match="unknown parameters"):
        resumed.load_state_dict({"qa/no.such.weight": torch.zeros(1)})


# ---------------------------------------------------------------- planted shared set


class PlantedModel(nn.Module):
    """loss = sum of w[id]^2 over the input ids + a small pull on every weight: the elements the
    ids name get large gradients, the rest small but non-zero ones."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(10, 10))
        self.other = nn.Parameter(torch.ones(100))

    def forward(self, input_ids, attention_mask, labels):  # noqa: ANN001, ANN201
        loss = self.w.flatten()[input_ids.flatten()].square().sum()
        loss = loss + 1e-3 * (self.w.square().sum() + self.other.square().sum())
        return SimpleNamespace(loss=loss)


def planted_batch(ids: list[int]) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([ids, ids[::-1]])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "labels": input_ids.clone()}  # fmt: skip


def test_planted_shared_parameters_are_found() -> None:
    shared, bio_only, qa_only = [3, 17, 42, 77], [5, 8, 90, 91], [60, 61, 62, 63]
    batches = {"bio": [planted_batch(shared + bio_only)], "qa": [planted_batch(shared + qa_only)]}
    scores = probe_scores(PlantedModel(), batches, TraceSettings(score="grad"))
    masks = {t: top_k_masks(scores[t], 8 / 200) for t in ("bio", "qa")}
    both = masks["bio"]["w"] & masks["qa"]["w"]
    assert sorted(both.flatten().nonzero().flatten().tolist()) == shared
    assert not masks["bio"]["other"].any()
    stats = shared_stats(scores["bio"], scores["qa"], 8 / 200)
    assert stats["count"] == 4 and stats["k"] == {"bio": 8, "qa": 8}
    assert stats["jaccard"] == pytest.approx(4 / 12)
    assert stats["expected_by_chance"] == pytest.approx(8 * 8 / 200)
    assert stats["enrichment"] == pytest.approx(4 / (64 / 200))
    control = bio_only_masks(scores["bio"], trace.intersect(masks["bio"], masks["qa"]))
    assert sorted(control["w"].flatten().nonzero().flatten().tolist()) == bio_only


def test_planted_embedding_rows_in_a_llama() -> None:
    """Only tokens a task feeds get embedding gradients; the shared rows are the common tokens."""
    common, bio_tokens, qa_tokens = [3, 4], [10, 11, 12], [20, 21]
    def batch(tokens: list[int]) -> dict[str, torch.Tensor]:  # noqa: E306
        ids = torch.tensor([(tokens * 6)[:12], (tokens[::-1] * 6)[:12]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    model = tiny_llama()
    batches = {"bio": [batch(common + bio_tokens)], "qa": [batch(common + qa_tokens)]}
    scores = probe_scores(model, batches, TraceSettings())
    embed = "model.embed_tokens.weight"
    masks = {t: top_k_masks({embed: scores[t][embed]}, 1.0) for t in ("bio", "qa")}
    rows = (masks["bio"][embed] & masks["qa"][embed]).all(1).nonzero().flatten().tolist()
    assert rows == common
    assert int((masks["bio"][embed] & masks["qa"][embed]).sum()) == len(common) * HIDDEN


# ---------------------------------------------------------------- top-k


def full_sort_masks(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Reference: stable descending sort of everything; first k positive elements."""
    flat = torch.cat([v.flatten() for v in scores.values()])
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[order] = True
    chosen &= flat > 0
    out, start = {}, 0
    for name, value in scores.items():
        out[name] = chosen[start : start + value.numel()].view_as(value)
        start += value.numel()
    return out


def random_scores(seed: int, ties: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"a": (40, 30), "b": (7,), "c": (300,), "d": (25, 4), "e": (3, 3)}
    if ties:  # many equal values and many zeros
        return {n: torch.randint(0, 6, s, generator=generator).float() for n, s in shapes.items()}
    return {n: torch.rand(s, generator=generator) ** 3 for n, s in shapes.items()}


@pytest.mark.parametrize("bisection", [False, True])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.05, 0.3, 0.9])
def test_global_top_k_equals_full_sort(
    monkeypatch: pytest.MonkeyPatch, bisection: bool, ties: bool, fraction: float
) -> None:
    if bisection:
        monkeypatch.setattr(trace.selection, "MAX_TOPK_CANDIDATES", 0)
    scores = random_scores(11, ties)
    n = sum(v.numel() for v in scores.values())
    masks = top_k_masks(scores, fraction, "global")
    reference = full_sort_masks(scores, max(1, round(fraction * n)))
    for name in scores:
        assert torch.equal(masks[name], reference[name]), name


def test_per_matrix_top_k_takes_the_fraction_of_every_tensor() -> None:
    scores = random_scores(12, ties=False)
    masks = top_k_masks(scores, 0.1, "per_matrix")
    for name, value in scores.items():
        k = max(1, round(0.1 * value.numel()))
        assert torch.equal(masks[name], full_sort_masks({name: value}, k)[name])


def test_shared_stats_per_matrix_expectation() -> None:
    bio, qa = random_scores(13, False), random_scores(14, False)
    stats = shared_stats(bio, qa, 0.1, "per_matrix")
    expected = sum(max(1, round(0.1 * v.numel())) ** 2 / v.numel() for v in bio.values())
    assert stats["expected_by_chance"] == pytest.approx(expected)
    assert 0 <= stats["count"] <= stats["k"]["bio"]


# ---------------------------------------------------------------- location


def empty_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}


def test_locate_llama_heads_neurons_and_grouped_kv() -> None:
    model = tiny_llama(kv_heads=2)
    head_dim = HIDDEN // HEADS
    masks = empty_masks(model)
    masks["model.layers.1.self_attn.q_proj.weight"][2 * head_dim : 3 * head_dim] = True
    masks["model.layers.0.self_attn.k_proj.weight"][head_dim : 2 * head_dim, :3] = True  # kv head 1
    masks["model.layers.0.self_attn.o_proj.weight"][:, 0:head_dim] = True  # head 0's columns
    masks["model.layers.1.mlp.gate_proj.weight"][7] = True
    masks["model.layers.1.mlp.down_proj.weight"][:, 7] = True
    masks["model.embed_tokens.weight"][0, 0] = True
    location = locate(masks, model)
    heads = torch.tensor(location["heads"])
    assert heads[1].tolist() == [0, 0, head_dim * HIDDEN, 0]
    # kv head 1 serves query heads 2 and 3 (repeat_kv), each gets half of its 3 * head_dim
    assert heads[0].tolist() == [HIDDEN * head_dim, 0, 1.5 * head_dim, 1.5 * head_dim]
    assert location["kv_heads"][0] == [0, 3 * head_dim]
    assert location["neurons"][1][7] == 2 * HIDDEN and sum(location["neurons"][1]) == 2 * HIDDEN
    assert location["by_kind"]["q"] == head_dim * HIDDEN and location["by_kind"]["embed"] == 1
    assert location["by_kind"]["mlp_gate"] == HIDDEN == location["by_kind"]["mlp_down"]
    layer_0, layer_1 = HIDDEN * head_dim + 3 * head_dim, head_dim * HIDDEN + 2 * HIDDEN
    assert location["by_layer"] == [layer_0, layer_1]
    assert location["outside_layers"] == 1


def test_locate_neox_fused_qkv_dense_and_mlp() -> None:
    model = tiny_neox()
    head_dim = HIDDEN // HEADS
    masks = empty_masks(model)
    qkv = masks["gpt_neox.layers.1.attention.query_key_value.weight"]
    qkv.view(HEADS, 3, head_dim, HIDDEN)[2] = True  # all of head 2: its q, k and v rows
    bias = masks["gpt_neox.layers.1.attention.query_key_value.bias"]
    bias.view(HEADS, 3, head_dim)[1, 2] = True  # v bias of head 1
    masks["gpt_neox.layers.0.attention.dense.weight"][:, 3 * head_dim :] = True  # head 3
    masks["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"][5, :2] = True
    masks["gpt_neox.layers.0.mlp.dense_h_to_4h.bias"][5] = True
    masks["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"][:, 9] = True
    location = locate(masks, model)
    assert location["heads"][1] == [0, head_dim, 3 * head_dim * HIDDEN, 0]
    assert location["kv_heads"][1] == [0, head_dim, 2 * head_dim * HIDDEN, 0]
    assert location["heads"][0] == [0, 0, 0, HIDDEN * head_dim]
    assert location["neurons"][0][5] == 3 and location["neurons"][0][9] == HIDDEN
    assert location["by_kind"]["qkv"] == 3 * head_dim * HIDDEN + head_dim
    assert location["by_kind"]["o"] == HIDDEN * head_dim
    assert trace.parameter_kind("embed_out.weight") == "lm_head"
    assert trace.parameter_kind("gpt_neox.embed_in.weight") == "embed"
    assert trace.parameter_kind("gpt_neox.final_layer_norm.bias") == "norm"


def test_centralization_measures() -> None:
    assert gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 8]) == pytest.approx(3 / 4)
    assert normalized_entropy([2, 2, 2, 2]) == pytest.approx(1.0)
    assert normalized_entropy([0, 5, 0, 0]) == pytest.approx(0.0)
    location = {"heads": [[0, 1], [2, 7]], "neurons": [[1, 1], [1, 1]]}
    stats = centralization(location, top_heads=1)
    assert stats["top1_heads_share"] == pytest.approx(0.7)
    assert stats["gini_neurons"] == pytest.approx(0.0)


def test_heatmap_png(tmp_path) -> None:  # noqa: ANN001
    path = heatmap_png([[0, 1, 2, 3], [4, 5, 6, 7]], tmp_path / "sub" / "heads.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- consistency


def test_gradient_consistency() -> None:
    model = tiny_llama()
    same = gradient_consistency(model, {"bio": [random_batch(1)], "qa": [random_batch(1)]})
    assert same["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert same["per_layer"] == pytest.approx([1.0, 1.0], abs=1e-6)
    batches = batches_by_task()
    result = gradient_consistency(model, batches)
    flat = {}
    for task, task_batches in batches.items():
        model.zero_grad()
        for batch in task_batches:
            model(**batch).loss.backward()
        flat[task] = torch.cat([p.grad.flatten() for p in model.parameters()])
    expected = nn.functional.cosine_similarity(flat["bio"], flat["qa"], dim=0)
    assert result["cosine"] == pytest.approx(float(expected), abs=1e-5)
    assert result["norm_bio"] == pytest.approx(float(flat["bio"].norm()), rel=1e-5)


# ---------------------------------------------------------------- ablation


def test_ablate_resets_evaluates_and_restores_exactly() -> None:
    model, reference = tiny_llama(0), tiny_llama(1).state_dict()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    # matrices only: norm weights start at 1 in both models, so resetting them changes nothing
    scores = {n: torch.rand(p.shape) for n, p in model.named_parameters() if p.dim() == 2}
    masks = top_k_masks(scores, 0.02)
    seen: list[int] = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        changed = 0
        for name, p in m.named_parameters():
            differs = p.detach() != original[name]
            assert torch.equal(p.detach()[differs], reference[name][differs])
            changed += int(differs.sum())
        seen.append(changed)
        return {"ood": 1.0 - changed / 1e4}

    result = ablate(model, masks, reference, evaluate, n_random_draws=3, seed=5,
                    bio_only_masks=bio_only_masks(scores, masks))  # fmt: skip
    count = trace.mask_count(masks)
    assert seen[0] == 0 and seen[1:] == [count] * 5  # baseline, shared, 3 random, bio-only
    assert result["drop"]["ood"] == pytest.approx(count / 1e4)
    assert result["random_drop_sd"]["ood"] == pytest.approx(0.0)
    assert len(result["random_drop_draws"]) == 3 and "ood" in result["bio_only_drop"]
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), original[name])


def test_ablate_restores_when_evaluate_fails() -> None:
    model, reference = tiny_llama(0), tiny_llama(1).state_dict()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = top_k_masks({n: torch.rand(p.shape) for n, p in model.named_parameters()}, 0.5)

    def evaluate(m: nn.Module) -> dict[str, float]:
        if any(not torch.equal(p, original[n]) for n, p in m.named_parameters()):
            raise RuntimeError("boom")
        return {"ood": 1.0}

    with pytest.raises(RuntimeError, match="boom"):
        ablate(model, masks, reference, evaluate)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), original[name])


def test_random_masks_are_seeded_and_exact() -> None:
    like = {"a": torch.zeros(30, 30, dtype=torch.bool), "b": torch.zeros(50, dtype=torch.bool)}
    first, again = trace.random_masks(like, 77, seed=3), trace.random_masks(like, 77, seed=3)
    assert trace.mask_count(first) == 77
    assert all(torch.equal(first[n], again[n]) for n in like)
    assert not torch.equal(first["a"], trace.random_masks(like, 77, seed=4)["a"])


# ---------------------------------------------------------------- the whole trace


def qa_score(batches: list[dict[str, torch.Tensor]]):  # noqa: ANN201
    def evaluate(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            loss = sum(float(model(**b).loss) for b in batches) / len(batches)
        return {"ood": 1.0 / (1.0 + loss)}

    return evaluate


@pytest.mark.parametrize("mode", ["probe", "training"])
def test_trace_summary_is_json_with_flat_float_summary(mode: str, tmp_path) -> None:  # noqa: ANN001
    model, reference = tiny_llama(0), tiny_llama(1).state_dict()
    batches = batches_by_task()
    settings = TraceSettings(mode=mode, top_k=(0.01, 0.05), heatmap=True,  # type: ignore[arg-type]
                             ablation_random_draws=2)  # fmt: skip
    training_scores = None
    if mode == "training":
        recorder = TrainingTraceRecorder(model, settings)
        for task, task_batches in batches.items():
            recorder.before_backward()
            model(**task_batches[0]).loss.backward()
            recorder.after_backward(task)
        recorder.on_optimizer_step()
        training_scores = recorder.scores()
    result = trace_summary(model, batches, settings, training_scores=training_scores,
                           reference_state=reference, evaluate=qa_score(batches["qa"]),
                           heatmap_dir=tmp_path)  # fmt: skip
    json.loads(json.dumps(result, allow_nan=False))
    summary = result["summary"]
    assert all(isinstance(v, float) for v in summary.values())
    for key in ("shared_count@0.01", "enrichment@0.05", "cosine_bio_qa",
                "ablation_ood_drop@0.05", "ablation_random_ood_drop@0.05"):  # fmt: skip
        assert key in summary, key
    for k in ("0.01", "0.05"):  # Gini over heads exactly when the shared set holds a head's weight
        holds_a_head = sum(map(sum, result["per_k"][k]["location"]["heads"])) > 0
        assert (f"gini_heads@{k}" in summary) == holds_a_head
    assert summary["k_bio@0.01"] == round(0.01 * result["n_parameters"])
    assert (tmp_path / "trace-heads@0.05.png").exists()
    assert len(result["per_k"]["0.01"]["location"]["heads"]) == 2


def test_training_mode_needs_recorder_scores() -> None:
    with pytest.raises(ValueError, match="training"):
        trace_summary(tiny_llama(), batches_by_task(), TraceSettings(mode="training"))


def test_a_suite_naming_no_trace_setting_records_the_readmes_defaults(tmp_path):
    """README ("every choice is a setting ... defaults in brackets"): mode [probe],
    probe_examples [256], score [grad_x_weight], aggregate [summed], ranking [global],
    top_k [0.1%, 1%, 5%], ablation_random_draws [3]. Written here from the README, not read from
    TraceSettings; a suite with only `enabled = true` under [trace] must record them."""
    from pathlib import Path

    from factrecall_bench.suite import load_suite
    from factrecall_bench.trace.hook import trace_settings

    micro = (Path(__file__).parent / "data" / "suites" / "micro.toml").read_text()
    assert "[trace]" not in micro
    suite_file = tmp_path / "untraced-settings.toml"
    suite_file.write_text(micro + "\n[trace]\nenabled = true\n")
    (config,) = load_suite(str(suite_file)).runs
    recorded = trace_settings(config).to_dict()
    assert recorded["mode"] == "probe"
    assert recorded["probe_examples"] == 256
    assert recorded["score"] == "grad_x_weight"
    assert recorded["aggregate"] == "summed"
    assert recorded["ranking"] == "global"
    assert recorded["top_k"] == [0.001, 0.01, 0.05]
    assert recorded["ablation_random_draws"] == 3
    assert recorded["heatmap"] is False  # README: `heatmap = true` asks for it
    assert recorded["definitions"] == []  # README: `definitions` [none besides the main one]
    assert json.loads(json.dumps(recorded)) == recorded  # as result.json records it
