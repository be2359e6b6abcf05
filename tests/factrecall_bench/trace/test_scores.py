"""Tests written for the survivors of mutation testing of factrecall_bench/trace/scores.py
(docs/mutation.md, fifth round): which parameters are scored, which examples and batches the probe
takes, that a batch without loss tokens is not counted, that scores are fp32 means in eval mode
with no stale gradient, and the training recorder's call order, buffers, state and messages.

Small hand-made modules and a one-layer Llama of hidden size 16: milliseconds each.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from factrecall_bench.trace import TraceSettings, TrainingTraceRecorder, probe_scores
from factrecall_bench.trace.scores import (
    limit_examples,
    probe_scores_by_score,
    scored_parameters,
)

VOCAB = 40


class TwoTaskModel(nn.Module):
    """loss = scale * mean(used[id % 5] ** 2), plus sum(unused) when an id is >= 50: a BIO batch
    (ids < 50) never reaches `unused`. scale is 2 in training mode, 1 in eval mode."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.used = nn.Parameter(torch.arange(1.0, 6.0, dtype=dtype))
        self.unused = nn.Parameter(torch.ones(3, dtype=dtype))
        self.frozen = nn.Parameter(torch.ones(2, dtype=dtype), requires_grad=False)

    def forward(self, input_ids, attention_mask, labels):  # noqa: ANN001, ANN201
        scale = 2.0 if self.training else 1.0
        loss = scale * self.used[input_ids % 5].square().mean()
        if bool((input_ids >= 50).any()):
            loss = loss + self.unused.sum()
        return SimpleNamespace(loss=loss)


def toy_batch(ids: list[list[int]]) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor(ids)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "labels": input_ids.clone()}


def toy_gradient(model: TwoTaskModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference: the eval-mode gradient of one batch, by torch.autograd.grad."""
    was_training = model.training
    model.eval()
    loss = model(**batch).loss
    params = [model.used, model.unused]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    model.train(was_training)
    return {name: torch.zeros_like(p) if g is None else g
            for name, p, g in zip(("used", "unused"), params, grads, strict=True)}


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def llama_batch(seed: int, label_positions: list[int], size: int = 2,
                length: int = 8) -> dict[str, torch.Tensor]:
    """A batch whose labels are set at label_positions only (-100 elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (size, length), generator=generator)
    labels = torch.full_like(input_ids, -100)
    labels[:, label_positions] = input_ids[:, label_positions]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "labels": labels}


def abs_gradient(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(model(**batch).loss, list(params.values()))
    return {name: g.abs() for name, g in zip(params, grads, strict=True)}


GRAD = TraceSettings(score="grad")


# ---------------------------------------------------------------- parameters and examples


def test_frozen_parameters_are_not_scored_and_tied_weights_once() -> None:
    assert list(scored_parameters(TwoTaskModel())) == ["used", "unused"]
    torch.manual_seed(0)
    tied = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        tie_word_embeddings=True))
    names = list(scored_parameters(tied))
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names


@pytest.mark.parametrize(("n_examples", "sizes"),
                         [(1, [1]), (3, [3]), (4, [3, 1]), (6, [3, 3]), (8, [3, 3, 2]),
                          (9, [3, 3, 3]), (50, [3, 3, 3])])
def test_limit_examples_keeps_exactly_the_first_n(n_examples: int, sizes: list[int]) -> None:
    batches = [toy_batch([[10 * b + i, 1] for i in range(3)]) for b in range(3)]
    kept = limit_examples(batches, n_examples)
    assert [len(batch["input_ids"]) for batch in kept] == sizes
    assert [len(batch["labels"]) for batch in kept] == sizes
    firsts = [int(row[0]) for batch in kept for row in batch["input_ids"]]
    assert firsts == [10 * b + i for b in range(3) for i in range(3)][:n_examples]


# ---------------------------------------------------------------- probe scores


def test_one_batch_scores_its_absolute_gradient_undivided() -> None:
    model, batch = tiny_llama(), llama_batch(1, [4, 5, 6, 7])
    scores = probe_scores(model, {"bio": [batch]}, GRAD)["bio"]
    for name, reference in abs_gradient(model, batch).items():
        torch.testing.assert_close(scores[name], reference, rtol=1e-4, atol=1e-7)


def test_a_batch_without_loss_tokens_is_not_counted() -> None:
    """Labels shift by one: a label at position 0 carries no loss, one at position 1 does."""
    model, batch = tiny_llama(), llama_batch(1, [4, 5, 6, 7])
    alone = probe_scores(model, {"bio": [batch]}, GRAD)["bio"]
    with_empty = probe_scores(model, {"bio": [batch, llama_batch(2, [0])]}, GRAD)["bio"]
    for name, value in alone.items():
        torch.testing.assert_close(with_empty[name], value)
    second = llama_batch(2, [1])
    both = probe_scores(model, {"bio": [batch, second]}, GRAD)["bio"]
    for name, reference in abs_gradient(model, second).items():
        torch.testing.assert_close(both[name], (alone[name] + reference) / 2,
                                   rtol=1e-4, atol=1e-7)


def test_a_batch_without_loss_tokens_first_does_not_stop_the_probe() -> None:
    model, batch = tiny_llama(), llama_batch(1, [4, 5, 6, 7])
    alone = probe_scores(model, {"bio": [batch]}, GRAD)["bio"]
    after_empty = probe_scores(model, {"bio": [llama_batch(2, [0]), batch]}, GRAD)["bio"]
    for name, value in alone.items():
        torch.testing.assert_close(after_empty[name], value)


def test_a_task_without_loss_tokens_scores_zeros() -> None:
    model = tiny_llama()
    scores = probe_scores(model, {"qa": [llama_batch(3, [0])]}, GRAD)["qa"]
    assert all(torch.equal(value, torch.zeros_like(value)) for value in scores.values())


def test_scores_are_float32_for_a_float64_model() -> None:
    model = TwoTaskModel(torch.float64)
    batch = toy_batch([[0, 1, 1, 2]])
    scores = probe_scores(model, {"bio": [batch]}, GRAD)["bio"]
    assert {name: value.dtype for name, value in scores.items()} == {
        "used": torch.float32, "unused": torch.float32}
    torch.testing.assert_close(scores["used"], toy_gradient(model, batch)["used"].abs().float())


@pytest.mark.parametrize("training", [True, False])
def test_probe_runs_in_eval_mode_and_restores_the_mode(training: bool) -> None:
    model = TwoTaskModel()
    model.train(training)
    batch = toy_batch([[0, 1, 1, 2]])
    scores = probe_scores(model, {"bio": [batch]}, GRAD)["bio"]
    torch.testing.assert_close(scores["used"], toy_gradient(model, batch)["used"].abs())
    assert model.training is training


def test_stale_gradients_do_not_leak_into_the_probe() -> None:
    model = TwoTaskModel()
    for p in (model.used, model.unused):
        p.grad = torch.full_like(p, 100.0)
    batch = toy_batch([[0, 1, 2, 3]])
    scores = probe_scores(model, {"bio": [batch]}, GRAD)["bio"]
    torch.testing.assert_close(scores["used"], toy_gradient(model, batch)["used"].abs())
    assert torch.equal(scores["unused"], torch.zeros(3))
    assert model.used.grad is None and model.unused.grad is None


@pytest.mark.parametrize("rows", [[[0, 0, 0], [1, 2, 3], [4, 4, 1]], [[0, 1], [2, 2], [3, 1]]])
def test_per_example_units_are_single_rows(rows: list[list[int]]) -> None:
    """Every row of the batch is one unit, whether rows are longer or shorter than the batch."""
    model = TwoTaskModel()
    settings = TraceSettings(score="grad", aggregate="per_example")
    scores = probe_scores(model, {"bio": [toy_batch(rows)]}, settings)["bio"]
    expected = sum(toy_gradient(model, toy_batch([row]))["used"].abs() for row in rows) / len(rows)
    torch.testing.assert_close(scores["used"], expected)


# ---------------------------------------------------------------- training recorder


def record(recorder: TrainingTraceRecorder, model: nn.Module, task: str,
           batch: dict[str, torch.Tensor]) -> None:
    recorder.before_backward()
    model(**batch).loss.backward()
    recorder.after_backward(task)


BIO, QA = toy_batch([[0, 1, 2, 2]]), toy_batch([[3, 4, 51, 52]])


@pytest.mark.parametrize("start_with_none", [True, False])
def test_recorder_splits_one_step_between_tasks(start_with_none: bool) -> None:
    """No zero_grad between the micro-batches: each task keeps only the gradient it added."""
    model = TwoTaskModel()
    model.eval()
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training", score="grad"))
    if start_with_none:
        model.zero_grad(set_to_none=True)
    else:
        for p in (model.used, model.unused):
            p.grad = torch.full_like(p, 7.0)
    record(recorder, model, "bio", BIO)
    record(recorder, model, "qa", QA)
    record(recorder, model, "bio", BIO)
    recorder.on_optimizer_step()
    scores = recorder.scores()
    bio, qa = toy_gradient(model, BIO), toy_gradient(model, QA)
    torch.testing.assert_close(scores["bio"]["used"], 2 * bio["used"].abs())
    torch.testing.assert_close(scores["qa"]["used"], qa["used"].abs())
    torch.testing.assert_close(scores["qa"]["unused"], qa["unused"].abs())
    assert torch.equal(scores["bio"]["unused"], torch.zeros(3))  # never reached by BIO


def test_recorder_scores_are_float32_with_zeros_where_a_task_never_reached() -> None:
    model = TwoTaskModel(torch.float64)
    model.eval()
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training"))
    model.zero_grad(set_to_none=True)
    record(recorder, model, "bio", BIO)
    recorder.on_optimizer_step()
    scores = recorder.scores()["bio"]
    assert scores["unused"].dtype == torch.float32 and scores["used"].dtype == torch.float32
    assert torch.equal(scores["unused"], torch.zeros(3))
    expected = (toy_gradient(model, BIO)["used"] * model.used.detach()).abs().float()
    torch.testing.assert_close(scores["used"], expected)


def test_recorder_messages_on_wrong_call_order() -> None:
    model = TwoTaskModel()
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training"))
    with pytest.raises(RuntimeError) as error:
        recorder.after_backward("bio")
    assert str(error.value) == "after_backward() called without before_backward()"
    recorder.before_backward()
    with pytest.raises(RuntimeError) as error:
        recorder.on_optimizer_step()
    assert str(error.value) == (
        "on_optimizer_step() between before_backward() and after_backward()")
    with pytest.raises(RuntimeError) as error:
        recorder.state_dict()
    assert str(error.value) == "state_dict() in the middle of an optimizer step"
    model(**BIO).loss.backward()
    recorder.after_backward("bio")
    with pytest.raises(RuntimeError) as error:  # gradients recorded, the step not taken yet
        recorder.state_dict()
    assert str(error.value) == "state_dict() in the middle of an optimizer step"
    recorder.on_optimizer_step()
    assert recorder.steps == 1 and recorder.state_dict()["steps"].tolist() == [1]


def test_recorder_state_is_flat_on_cpu_and_loads_back() -> None:
    model = TwoTaskModel()
    model.eval()
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training", score="grad"))
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        record(recorder, model, "qa", QA)
        recorder.on_optimizer_step()
    state = recorder.state_dict()
    assert sorted(state) == ["grad/qa/unused", "grad/qa/used", "steps"]
    assert state["steps"].dtype == torch.int64 and state["steps"].tolist() == [3]
    torch.testing.assert_close(state["grad/qa/used"], 3 * toy_gradient(model, QA)["used"].abs())
    fresh = TrainingTraceRecorder(model, TraceSettings(mode="training", score="grad"))
    fresh.load_state_dict({key: value.double() if key != "steps" else value
                           for key, value in state.items()})
    assert fresh.steps == 3 and list(fresh.scores()) == ["qa"]
    assert fresh.scores()["qa"]["used"].dtype == torch.float32
    torch.testing.assert_close(fresh.scores()["qa"]["used"], state["grad/qa/used"])


def test_a_state_written_before_several_scores_loads_as_the_main_score() -> None:
    model = TwoTaskModel()
    old_state = {"qa/used": torch.full((5,), 2.0), "qa/unused": torch.zeros(3),
                 "steps": torch.tensor([4])}
    fresh = TrainingTraceRecorder(model, TraceSettings(mode="training", score="grad"))
    fresh.load_state_dict(old_state)
    assert fresh.steps == 4
    assert torch.equal(fresh.scores("grad")["qa"]["used"], torch.full((5,), 2.0))


def test_a_state_missing_a_needed_score_is_refused() -> None:
    model = TwoTaskModel()
    state = {"grad/qa/used": torch.ones(5), "steps": torch.tensor([1])}
    fresh = TrainingTraceRecorder(model, TraceSettings(mode="training", score="update",
                                                       definitions=("training/grad/global",)))
    with pytest.raises(ValueError) as error:
        fresh.load_state_dict(state)
    assert str(error.value) == ("recorder state holds no sums for score(s) ['update']: the "
                                "checkpoint was written with other trace definitions")


def test_loading_replaces_the_scores_and_a_state_without_steps_starts_at_zero() -> None:
    model = TwoTaskModel()
    recorder = TrainingTraceRecorder(model, TraceSettings(mode="training"))
    model.zero_grad(set_to_none=True)
    record(recorder, model, "qa", QA)
    recorder.on_optimizer_step()
    recorder.load_state_dict({"bio/used": torch.ones(5)})
    assert recorder.steps == 0 and list(recorder.scores()) == ["bio"]
    assert torch.equal(recorder.scores()["bio"]["used"], torch.ones(5))


def test_loading_does_not_depend_on_where_steps_stands() -> None:
    recorder = TrainingTraceRecorder(TwoTaskModel(), TraceSettings(mode="training"))
    recorder.load_state_dict({"steps": torch.tensor([4]), "qa/used": torch.full((5,), 2.0),
                              "qa/unused": torch.ones(3)})
    assert recorder.steps == 4
    assert torch.equal(recorder.scores()["qa"]["used"], torch.full((5,), 2.0))
    assert torch.equal(recorder.scores()["qa"]["unused"], torch.ones(3))


def test_loading_names_the_first_three_unknown_parameters() -> None:
    recorder = TrainingTraceRecorder(TwoTaskModel(), TraceSettings(mode="training"))
    state = {f"qa/x{i}": torch.zeros(1) for i in range(4)} | {"steps": torch.tensor([1])}
    with pytest.raises(ValueError) as error:
        recorder.load_state_dict(state)
    assert str(error.value) == (
        "recorder state for unknown parameters or scores: "
        "['grad_x_weight/qa/x0', 'grad_x_weight/qa/x1', 'grad_x_weight/qa/x2']")


# QA's gradient in eval mode, by hand: ids 3, 4, 51, 52 reach used[3], used[4], used[1], used[2]
# (id % 5), so d/d used[j] of mean(used[ids % 5] ** 2) is 2 * used[j] / 4 = j / 2 + 1 / 2 there
# (used = 1..5), and 0 at j = 0; every id >= 50 adds sum(unused), whose gradient is 1.
QA_USED_GRAD = torch.tensor([0.0, 1.0, 1.5, 2.0, 2.5])
QA_UNUSED_GRAD = torch.ones(3)


def one_qa_step(settings: TraceSettings, lr: float) -> TrainingTraceRecorder:
    model = TwoTaskModel()
    model.eval()
    recorder = TrainingTraceRecorder(model, settings)
    model.zero_grad(set_to_none=True)
    record(recorder, model, "qa", QA)
    recorder.on_optimizer_step(lr=lr)
    return recorder


def test_update_is_the_signed_lr_times_gradient_and_its_score_the_absolute_value() -> None:
    recorder = one_qa_step(TraceSettings(mode="training", score="update"), lr=-0.5)
    signed = recorder.signed_updates()
    assert list(signed) == ["qa"] and sorted(signed["qa"]) == ["unused", "used"]
    torch.testing.assert_close(signed["qa"]["used"], -0.5 * QA_USED_GRAD)
    torch.testing.assert_close(signed["qa"]["unused"], -0.5 * QA_UNUSED_GRAD)
    torch.testing.assert_close(recorder.scores()["qa"]["used"], 0.5 * QA_USED_GRAD)
    torch.testing.assert_close(recorder.scores("update")["qa"]["unused"], 0.5 * QA_UNUSED_GRAD)


@pytest.mark.parametrize("main, default", [
    # the settings' own score when the recorder keeps it ...
    ({"mode": "training", "score": "update"}, "update"),
    # ... else (a probe main definition) the first score it keeps, in the order grad, update
    ({"mode": "probe", "score": "grad_x_weight"}, "grad"),
])
def test_every_kept_score_is_summed_and_the_default_is_the_settings_own(main, default) -> None:
    settings = TraceSettings(**main, definitions=("training/update/per_matrix",
                                                  "training/grad/global"))
    recorder = one_qa_step(settings, lr=0.5)
    expected = {"grad": QA_USED_GRAD, "update": 0.5 * QA_USED_GRAD}
    by_score = recorder.scores_by_score()
    assert sorted(by_score) == ["grad", "update"]
    for score, used in expected.items():
        torch.testing.assert_close(by_score[score]["qa"]["used"], used)
        torch.testing.assert_close(recorder.scores(score)["qa"]["used"], used)
    torch.testing.assert_close(recorder.scores()["qa"]["used"], expected[default])


def test_a_score_that_is_not_kept_or_not_a_probe_score_is_refused_by_name() -> None:
    recorder = one_qa_step(TraceSettings(mode="training", score="grad"), lr=0.5)
    for ask in (lambda: recorder.scores("update"), recorder.signed_updates):
        with pytest.raises(ValueError) as error:
            ask()
        assert str(error.value) == "the recorder did not accumulate score 'update'"
    with pytest.raises(ValueError) as error:
        probe_scores_by_score(TwoTaskModel(), {"qa": [QA]}, GRAD, ("grad", "update", "norm"))
    assert str(error.value) == "probe scores are grad or grad_x_weight, not ['update', 'norm']"
