"""The paper's trace (score "update"): per task, the signed sum over optimizer steps of the learning
rate times the step's task gradient, checked against a naive reference written here: a float64 copy
of the model before each step, one autograd call per task, and the warmup-cosine learning rate
computed from its formula (not from the scheduler the product uses)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from factrecall_bench.config import Phase, TrainSpec
from factrecall_bench.trace import TraceSettings, TrainingTraceRecorder
from factrecall_bench.trace.settings import DEFINITION_NAMES, TraceDefinition
from factrecall_bench.train import make_optimizer, make_scheduler, optimizer_step

VOCAB, WIDTH, SEQ = 48, 16, 9
TRAIN = TrainSpec(warmup_fraction=0.34, min_lr_fraction=0.1, weight_decay=0.1)


def tiny(family: str) -> nn.Module:
    torch.manual_seed(3)
    if family == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=32,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                             max_position_embeddings=32)
        return LlamaForCausalLM(config)
    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                           attention_dropout=0.0, hidden_dropout=0.0)
    return GPTNeoXForCausalLM(config)


def micro_batch(seed: int, tasks: list[str]) -> dict[str, torch.Tensor]:
    """Rows of random tokens; QA rows carry loss on their last 3 tokens, BIO rows on all but the
    first 2; the last row is padded by 2 (no loss, no attention there)."""
    g = torch.Generator().manual_seed(seed)
    rows = len(tasks)
    input_ids = torch.randint(1, VOCAB, (rows, SEQ), generator=g)
    mask = torch.ones(rows, SEQ, dtype=torch.long)
    mask[-1, -2:] = 0
    labels = input_ids.clone()
    is_qa = torch.tensor([task == "qa" for task in tasks])
    for row, task in enumerate(tasks):
        labels[row, : SEQ - 3 if task == "qa" else 2] = -100
    labels[mask == 0] = -100
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "is_qa": is_qa}


def cosine_lr(peak: float, step: int, steps: int) -> float:
    """The warmup-then-cosine-to-a-floor rate of step `step` (0-based) of `steps`, by its formula."""
    warmup = math.ceil(TRAIN.warmup_fraction * steps)
    if step < warmup:
        return peak * step / max(1, warmup)
    progress = (step - warmup) / max(1, steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (TRAIN.min_lr_fraction + (1 - TRAIN.min_lr_fraction) * cosine)


def reference_task_grads(model: nn.Module, micros: list[dict[str, torch.Tensor]]
                         ) -> dict[str, dict[str, torch.Tensor]]:
    """Per task, the float64 gradient of (that task's summed token cross-entropy) / (all loss
    tokens of the step): the task's share of the loss the step minimizes."""
    double = copy.deepcopy(model).double()
    double.eval()
    total = sum(int((m["labels"][:, 1:] != -100).sum()) for m in micros)
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for task in ("bio", "qa"):
        loss = torch.zeros((), dtype=torch.float64)
        for m in micros:
            rows = m["is_qa"] if task == "qa" else ~m["is_qa"]
            if not rows.any():
                continue
            logits = double(input_ids=m["input_ids"][rows],
                            attention_mask=m["attention_mask"][rows]).logits[:, :-1]
            labels = m["labels"][rows][:, 1:]
            loss = loss + nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100, reduction="sum")
        if loss.requires_grad:
            named = dict(double.named_parameters())
            values = torch.autograd.grad(loss / total, list(named.values()), allow_unused=True)
            grads[task] = {name: (torch.zeros_like(p) if g is None else g)
                           for (name, p), g in zip(named.items(), values, strict=True)}
    return grads


def train_and_reference(model: nn.Module, phases: list[tuple[float, list[list[dict]]]]
                        ) -> tuple[TrainingTraceRecorder, dict[str, dict[str, torch.Tensor]]]:
    """Train phase by phase with the product's step, optimizer and scheduler while the reference
    sums lr x float64 task gradients; returns the recorder and the reference sums."""
    settings = TraceSettings(mode="training", score="update", definitions=("all",))
    recorder = TrainingTraceRecorder(model, settings)
    reference: dict[str, dict[str, torch.Tensor]] = {}
    accelerator = Accelerator(cpu=True)
    model.train()
    for peak, steps in phases:
        optimizer = make_optimizer(model, Phase(name="p", epochs={"bio": 1.0}, lr=peak),
                                   TRAIN)
        scheduler = make_scheduler(optimizer, len(steps), TRAIN)
        for index, micros in enumerate(steps):
            lr = cosine_lr(peak, index, len(steps))
            for task, grads in reference_task_grads(model, micros).items():
                sums = reference.setdefault(task, {})
                for name, grad in grads.items():
                    sums[name] = sums.get(name, 0) + lr * grad
            optimizer_step(model, optimizer, micros, accelerator, clip_norm=0.5,
                           recorder=recorder)
            scheduler.step()
    return recorder, reference


def assert_sums_match(recorder: TrainingTraceRecorder, reference: dict) -> None:
    signed = recorder.signed_updates()
    assert sorted(signed) == sorted(reference)
    for task, sums in reference.items():
        for name, expected in sums.items():
            got = signed[task][name].double()
            scale = float(expected.abs().max()) or 1.0
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale)
            torch.testing.assert_close(recorder.scores("update")[task][name].double(),
                                       expected.abs(), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("family", ["llama", "neox"])
def test_two_stage_update_sums_each_stage_for_its_own_task(family: str) -> None:
    # Stage 1 trains BIO only (2 accumulated micro-batches a step), stage 2 QA only at its own
    # rate: Delta_BIO must see stage 1 alone, Delta_QA stage 2 alone.
    stage1 = [[micro_batch(10 * s + i, ["bio"] * 3) for i in range(2)] for s in range(3)]
    stage2 = [[micro_batch(100 + 10 * s + i, ["qa"] * 3) for i in range(2)] for s in range(3)]
    recorder, reference = train_and_reference(tiny(family), [(3e-2, stage1), (1e-2, stage2)])
    assert recorder.steps == 6
    assert_sums_match(recorder, reference)


@pytest.mark.parametrize("family", ["llama", "neox"])
def test_mixed_update_splits_each_step_by_task(family: str) -> None:
    # Every step accumulates a micro-batch holding both tasks and a BIO-only one.
    steps = [[micro_batch(200 + 10 * s, ["bio", "qa", "qa"]), micro_batch(201 + 10 * s, ["bio"] * 2)]
             for s in range(4)]
    recorder, reference = train_and_reference(tiny(family), [(2e-2, steps)])
    assert recorder.steps == 4
    assert_sums_match(recorder, reference)


def test_opposite_gradients_cancel_in_update_but_not_in_grad() -> None:
    # The same example at +lr and then -lr (a hand-set rate): "update" sums to zero, "grad" to 2|g|.
    model = tiny("llama")
    settings = TraceSettings(mode="training", score="update",
                             definitions=("training/grad/global",))
    recorder = TrainingTraceRecorder(model, settings)
    micro = micro_batch(7, ["qa", "qa"])
    for lr in (0.5, -0.5):
        model.zero_grad(set_to_none=True)
        recorder.before_backward()
        nn.functional.cross_entropy(model(input_ids=micro["input_ids"]).logits[:, :-1]
                                    .reshape(-1, VOCAB), micro["labels"][:, 1:].reshape(-1),
                                    ignore_index=-100).backward()
        recorder.after_backward("qa")
        recorder.on_optimizer_step(lr=lr)
    name = "model.layers.0.mlp.up_proj.weight"
    assert float(recorder.scores("update")["qa"][name].abs().max()) == 0.0
    assert float(recorder.scores("grad")["qa"][name].abs().max()) > 0.0


def test_update_needs_the_steps_learning_rate() -> None:
    recorder = TrainingTraceRecorder(tiny("llama"), TraceSettings(mode="training", score="update"))
    with pytest.raises(ValueError, match="learning rate"):
        recorder.on_optimizer_step()


def test_every_definition_is_named_and_update_exists_in_training_mode_only() -> None:
    assert len(DEFINITION_NAMES) == 10 and DEFINITION_NAMES[0] == "training/update/global"
    assert {TraceDefinition.parse(n).name for n in DEFINITION_NAMES} == set(DEFINITION_NAMES)
    with pytest.raises(ValueError, match="mode 'training' only"):
        TraceDefinition.parse("probe/update/global")
    with pytest.raises(ValueError, match="needs trace.mode = 'training'"):
        TraceSettings(mode="probe", score="update")
    with pytest.raises(ValueError, match="mode/score/ranking"):
        TraceSettings(definitions=("training/update",))
    assert TraceSettings(definitions=("all",)).definitions == DEFINITION_NAMES
    needed = TraceSettings(mode="probe", definitions=("all",)).training_scores_needed()
    assert needed == ("grad", "grad_x_weight", "update")


def planted(model: nn.Module, columns: range) -> dict[str, torch.Tensor]:
    """Scores that are zero except on row 0 of lm_head at `columns`: only those can be top-k."""
    scores = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    scores["lm_head.weight"][0, list(columns)] = 1.0
    return scores


def test_every_definition_gets_its_own_shared_set_from_its_own_scores() -> None:
    from factrecall_bench.trace import trace_summary

    model = tiny("llama")
    by_score = {
        "update": {"bio": planted(model, range(0, 4)), "qa": planted(model, range(2, 6))},
        "grad": {"bio": planted(model, range(0, 4)), "qa": planted(model, range(0, 4))},
    }
    settings = TraceSettings(mode="training", score="update", top_k=(0.5,),
                             definitions=("training/grad/global", "probe/grad/per_matrix"))
    probe = {task: [{k: v for k, v in micro_batch(9, ["bio", "qa"]).items() if k != "is_qa"}]
             for task in ("bio", "qa")}
    trace = trace_summary(model, probe, settings, training_scores_by_score=by_score)
    assert trace["definition"] == "training/update/global"
    assert list(trace["definitions"]) == ["training/update/global", "training/grad/global",
                                          "probe/grad/per_matrix"]
    counts = {name: entry["summary"]["shared_count@0.5"]
              for name, entry in trace["definitions"].items()}
    assert counts["training/update/global"] == 2.0  # columns 2 and 3
    assert counts["training/grad/global"] == 4.0
    assert counts["probe/grad/per_matrix"] > 4.0  # real gradients: many parameters, not planted
    assert trace["summary"]["shared_count@0.5"] == 2.0  # the main definition's
    entry = trace["definitions"]["training/grad/global"]
    assert (entry["mode"], entry["score"], entry["ranking"]) == ("training", "grad", "global")
