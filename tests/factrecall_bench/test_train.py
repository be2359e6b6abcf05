"""The training loop: accumulation equivalence, where the loss goes, schedules, determinism."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, LlamaConfig

from factrecall_bench import distributed
from factrecall_bench import train as tr
from factrecall_bench import train as train_module
from factrecall_bench.batching import collate, loss_tokens, make_micro_batch, plan_run
from factrecall_bench.checkpoints import RECORDER_FILE, verify
from factrecall_bench.config import Phase, TrainSpec
from factrecall_bench.data.examples import IGNORE, Example, QAItem, qa_examples
from factrecall_bench.errors import RunFailed
from factrecall_bench.events import EventLog, read_events
from factrecall_bench.train import Trainer, make_optimizer, make_scheduler, optimizer_step

VOCAB = 50


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, pad_token_id=0)
    return AutoModelForCausalLM.from_config(config)


def random_examples(count: int, seed: int) -> list[Example]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        length = int(torch.randint(6, 20, (1,), generator=generator))
        ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        if index % 2:  # a QA-like example: loss on the last 3 tokens only
            examples.append(Example(ids, [IGNORE] * (length - 3) + ids[-3:], "qa"))
        else:
            examples.append(Example(ids, list(ids), "bio"))
    return examples


def one_update(model, micro_batches) -> dict[str, torch.Tensor]:
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer_step(model, optimizer, [collate(mb, pad_id=0) for mb in micro_batches],
                   accelerator, clip_norm=0.0)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_micro_batches_equal_one_batch_of_their_concatenation(k):
    examples = random_examples(12, seed=k)
    whole = one_update(tiny_model(), [examples])
    size = len(examples) // k
    split = one_update(tiny_model(), [examples[i:i + size] for i in range(0, len(examples), size)])
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-6)


def test_qa_loss_covers_answer_and_eos_only():
    item = QAItem("p0/major", "major", prompt_ids=[1, 5, 6, 7], answer_ids=[8, 9, 2])
    example = qa_examples([item])[0]
    assert example.input_ids == [1, 5, 6, 7, 8, 9, 2]
    assert example.labels == [IGNORE] * 4 + [8, 9, 2]


def test_warmup_then_cosine_to_min_fraction():
    model = tiny_model()
    train = TrainSpec(warmup_fraction=0.1, min_lr_fraction=0.1)
    optimizer = make_optimizer(model, Phase("p", {"bio": 1.0}, lr=1e-3), train)
    scheduler = make_scheduler(optimizer, 100, train)
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and max(rates) == pytest.approx(1e-3)
    assert rates.index(max(rates)) == 10
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)


def test_no_weight_decay_on_norms_and_biases():
    optimizer = make_optimizer(tiny_model(), Phase("p", {"bio": 1.0}), TrainSpec())
    decayed, plain = optimizer.param_groups
    assert all(p.ndim >= 2 for p in decayed["params"]) and decayed["weight_decay"] == 0.1
    assert all(p.ndim < 2 for p in plain["params"]) and plain["weight_decay"] == 0.0


def test_same_seed_same_update():
    examples = random_examples(8, seed=1)
    a = one_update(tiny_model(seed=3), [examples])
    b = one_update(copy.deepcopy(tiny_model(seed=3)), [examples])
    assert all(torch.equal(a[n], b[n]) for n in a)


# --- the Trainer's step: packing, one micro-batch per mixed step, no reading back -------------


def mixed_trainer(tmp_path, packing: bool, log_every: int = 10, steps_epochs: float = 2.0
                  ) -> Trainer:
    examples = random_examples(16, seed=0)
    sources = {"bio": [e for e in examples if e.task == "bio"],
               "qa_train": [e for e in examples if e.task == "qa"]}
    phase = Phase("mixed", {"bio": steps_epochs, "qa_train": steps_epochs})
    plans = plan_run((phase,), {name: len(items) for name, items in sources.items()}, 8, seed=0)
    return Trainer(model=tiny_model(), plans=plans, examples=sources,
                   train=TrainSpec(batch_size=8, packing=packing, log_every=log_every),
                   accelerator=Accelerator(cpu=True),
                   events=EventLog(tmp_path / "events.jsonl", "test"),
                   checkpoint_dir=tmp_path / "checkpoints", pad_id=0)


def spy_on_steps(monkeypatch) -> list[tuple[list, float]]:
    """Every optimizer step's micro-batches and its mean loss (read back here, not in the loop)."""
    seen: list[tuple[list, float]] = []

    def spying(model, optimizer, micro_batches, *args, **kwargs):
        losses = optimizer_step(model, optimizer, micro_batches, *args, **kwargs)
        seen.append((list(micro_batches), losses.mean()))
        return losses

    monkeypatch.setattr(train_module, "optimizer_step", spying)
    return seen


@pytest.mark.parametrize(("packing", "micro_batches"), [(False, 2), (True, 1)])
def test_with_packing_a_mixed_step_is_one_micro_batch(tmp_path, monkeypatch, packing,
                                                      micro_batches):
    seen = spy_on_steps(monkeypatch)
    mixed_trainer(tmp_path, packing).run()
    both_tasks = [micros for micros, _ in seen if sum(len(m.task_tokens) for m in micros) == 2]
    assert both_tasks and all(len(micros) == micro_batches for micros in both_tasks)
    assert all(micro.packed == packing for micros, _ in seen for micro in micros)


def test_packed_training_follows_the_padded_run(tmp_path):
    padded, packed = mixed_trainer(tmp_path / "a", False), mixed_trainer(tmp_path / "b", True)
    padded.run(), packed.run()
    for (name, a), b in zip(padded.model.named_parameters(), packed.model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_logged_losses_are_those_of_their_steps_and_read_back_only_then(tmp_path, monkeypatch):
    seen = spy_on_steps(monkeypatch)
    trainer = mixed_trainer(tmp_path, packing=True, log_every=3)
    trainer.run()
    logged = {event["step"]: event["loss"] for event in read_events(trainer.events.path).events
              if event["event"] == "step"}
    last = len(seen)
    assert sorted(logged) == sorted({*range(3, last + 1, 3), last})
    assert all(logged[step] == round(seen[step - 1][1], 6) for step in logged)


def test_the_packed_step_reads_no_tensor_back(tmp_path, monkeypatch):
    """No .item(), bool(), int() or float() of a tensor while a step runs forward and backward
    (each would wait for the device; on CPU the test checks the structure)."""
    trainer = mixed_trainer(tmp_path, packing=True)
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)

    def read_back(*args, **kwargs):
        raise AssertionError("a tensor was read back during the step")

    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, read_back)
    losses, _ = trainer._step(optimizer, trainer.plans[0].batches[0])
    monkeypatch.undo()
    assert set(losses.loss_sum) == {"bio", "qa"} and losses.mean() > 0


def test_packing_is_refused_under_several_processes(tmp_path):
    """The packed forward calls the decoder past DDP's / FSDP2's wrapper: one process only."""
    from types import SimpleNamespace

    from factrecall_bench.errors import UserError

    with pytest.raises(UserError, match="one process"):
        Trainer(model=tiny_model(), plans=[], examples={}, train=TrainSpec(packing=True),
                accelerator=SimpleNamespace(num_processes=2),  # type: ignore[arg-type]
                events=EventLog(tmp_path / "events.jsonl", "test"),
                checkpoint_dir=tmp_path / "checkpoints", pad_id=0)


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/train.py (docs/mutation.md, fourth
# round): the loss of a step (which tokens, which rows, divided by what), the update it makes (its gradient,
# clipping, a fresh gradient for the next step), what the gradient trace's recorder sees, the optimizer and
# schedule of each phase, and the phase structure of a run: events, logged and checkpointed steps, the hook
# at each phase end, the learning rate restarting per phase, resuming mid-phase and at a phase boundary,
# divergence.
# Everything runs on a one-layer Llama of hidden size 16, a few steps each: well under a second.


def examples_of(task: str, count: int, seed: int) -> list[Example]:
    """BIO: loss on every token; QA: loss on the last three tokens only."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for _ in range(count):
        length = int(torch.randint(6, 14, (1,), generator=generator))
        ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        labels = list(ids) if task == "bio" else [IGNORE] * (length - 3) + ids[-3:]
        made.append(Example(ids, labels, task))
    return made


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def reference_losses(model: torch.nn.Module, examples: list[Example]) -> list[list[float]]:
    """Per example, the cross-entropy of every next token that carries a label, one by one."""
    out = []
    with torch.no_grad():
        for example in examples:
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1)
            out.append([float(-logp[t, label]) for t, label in enumerate(example.labels[1:])
                        if label != IGNORE])
    return out


# --- the loss of a step ------------------------------------------------------------------------


def test_token_losses_are_the_next_token_cross_entropy_and_zero_where_ignored():
    model = tiny_model()
    examples = examples_of("qa", 2, seed=1) + examples_of("bio", 1, seed=2)
    batch = collate(examples, pad_id=0)
    with torch.no_grad():
        losses = tr.token_losses(model, batch)
    assert losses.shape == (3, batch["input_ids"].shape[1] - 1)
    for row, (example, expected) in enumerate(zip(examples, reference_losses(model, examples))):
        carried = [t for t, label in enumerate(example.labels[1:]) if label != IGNORE]
        torch.testing.assert_close(losses[row, carried].double(), torch.tensor(expected,
                                   dtype=torch.float64), rtol=1e-4, atol=1e-5)
        assert float(losses[row].sum()) == pytest.approx(sum(expected), rel=1e-4)


@pytest.mark.parametrize("packing", [False, True])
def test_task_losses_sum_each_tasks_tokens_and_count_them(packing):
    model = tiny_model()
    bio, qa = examples_of("bio", 2, seed=3), examples_of("qa", 3, seed=4)
    reference = reference_losses(model, bio + qa)
    for examples in (bio + qa, bio, qa):
        micro = make_micro_batch(examples, pad_id=0, packing=packing, pack_width=64)
        with torch.no_grad():
            per_task = tr.task_losses(model, micro)
        for task in ("bio", "qa"):
            rows = [n for n, e in enumerate(bio + qa) if e.task == task and e in examples]
            if not rows:
                assert task not in per_task
                continue
            loss_sum, count = per_task[task]
            assert count == sum(loss_tokens(e) for e in examples if e.task == task)
            assert float(loss_sum) == pytest.approx(sum(sum(reference[n]) for n in rows),
                                                    rel=1e-4)


def test_a_batch_without_a_host_description_is_counted_from_its_tensors():
    examples = examples_of("bio", 2, seed=5) + examples_of("qa", 2, seed=6)
    described = tr._host_described(collate(examples, pad_id=0))
    built = make_micro_batch(examples, pad_id=0)
    assert described.task_tokens == built.task_tokens == {
        "qa": sum(loss_tokens(e) for e in examples[2:]),
        "bio": sum(loss_tokens(e) for e in examples[:2])}
    assert {t: r.tolist() for t, r in described.task_rows.items()} == {"qa": [2, 3],
                                                                       "bio": [0, 1]}
    alone = tr._host_described(collate(examples[2:], pad_id=0))
    assert alone.task_tokens == {"qa": sum(loss_tokens(e) for e in examples[2:])}
    assert alone.task_rows == {}


# --- the update of a step -----------------------------------------------------------------------


def sgd_step(model, micro_batches, clip_norm=0.0, recorder=None, normalizer=None,
             accelerator=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = parameters(model)
    losses = tr.optimizer_step(model, optimizer, micro_batches, accelerator or Accelerator(cpu=True),
                               clip_norm=clip_norm, recorder=recorder, normalizer=normalizer)
    after = parameters(model)
    return losses, {name: before[name] - after[name] for name in before}  # = the gradient


def reference_gradient(model, examples, divide_by):
    copy = tiny_model()
    copy.load_state_dict(model.state_dict())
    loss = tr.token_losses(copy, collate(examples, pad_id=0)).sum() / divide_by
    loss.backward()
    return {name: p.grad for name, p in copy.named_parameters()}


def grad_norm(gradient):
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in gradient.values()))


def test_the_update_is_the_gradient_of_the_steps_summed_loss_over_its_loss_tokens():
    model = tiny_model()
    bio, qa = examples_of("bio", 2, seed=7), examples_of("qa", 3, seed=8)
    tokens = sum(loss_tokens(e) for e in bio + qa)
    expected = reference_gradient(model, bio + qa, tokens)
    reference = reference_losses(model, bio + qa)
    losses, gradient = sgd_step(model, [make_micro_batch(bio, 0), make_micro_batch(qa, 0)])
    for name in expected:
        torch.testing.assert_close(gradient[name], expected[name], rtol=1e-4, atol=1e-6)
    assert losses.tokens == {"bio": sum(loss_tokens(e) for e in bio),
                             "qa": sum(loss_tokens(e) for e in qa)}
    assert float(losses.loss_sum["bio"]) == pytest.approx(sum(map(sum, reference[:2])), rel=1e-4)
    assert float(losses.loss_sum["qa"]) == pytest.approx(sum(map(sum, reference[2:])), rel=1e-4)
    assert all(p.grad is None for p in model.parameters())  # the next step starts from nothing


def test_micro_batches_of_the_same_task_add_up():
    model = tiny_model()
    bio = examples_of("bio", 4, seed=9)
    losses, gradient = sgd_step(model, [make_micro_batch(bio[:2], 0), make_micro_batch(bio[2:], 0)])
    expected = reference_gradient(tiny_model(), bio, sum(loss_tokens(e) for e in bio))
    for name in expected:
        torch.testing.assert_close(gradient[name], expected[name], rtol=1e-4, atol=1e-6)
    assert losses.tokens == {"bio": sum(loss_tokens(e) for e in bio)}


def test_a_step_of_one_loss_token_divides_by_one():
    model = tiny_model()
    example = Example([5, 6, 7, 8], [IGNORE, IGNORE, IGNORE, 8], "qa")
    expected = reference_gradient(model, [example], 1)
    _, gradient = sgd_step(model, [make_micro_batch([example], 0)])
    for name in expected:
        torch.testing.assert_close(gradient[name], expected[name], rtol=1e-4, atol=1e-6)


def test_a_given_normalizer_replaces_the_token_count():
    bio = examples_of("bio", 2, seed=10)
    tokens = sum(loss_tokens(e) for e in bio)
    _, own = sgd_step(tiny_model(), [make_micro_batch(bio, 0)])
    _, halved = sgd_step(tiny_model(), [make_micro_batch(bio, 0)], normalizer=2.0 * tokens)
    for name in own:
        torch.testing.assert_close(halved[name], own[name] / 2, rtol=1e-4, atol=1e-7)


def test_clipping_caps_the_global_gradient_norm_and_zero_turns_it_off():
    bio = examples_of("bio", 2, seed=11)
    _, free = sgd_step(tiny_model(), [make_micro_batch(bio, 0)], clip_norm=0.0)
    assert grad_norm(free) > 0.01
    _, clipped = sgd_step(tiny_model(), [make_micro_batch(bio, 0)], clip_norm=0.01)
    assert grad_norm(clipped) == pytest.approx(0.01, rel=1e-3)
    for name in free:
        torch.testing.assert_close(clipped[name], free[name] * (0.01 / grad_norm(free)),
                                   rtol=1e-3, atol=1e-6)


def test_gradients_are_reduced_across_processes_only_on_the_last_micro_batch(monkeypatch):
    """accelerate's `no_sync` around every micro-batch but the last (DDP reduces once a step)."""
    accelerator = Accelerator(cpu=True)
    order = []

    @contextlib.contextmanager
    def no_sync(wrapped):
        order.append("no_sync" if wrapped is model else "no_sync of another model")
        yield

    task_losses = tr.task_losses

    def forward(model, micro):
        order.append("forward")
        return task_losses(model, micro)

    accelerator.no_sync = no_sync  # type: ignore[method-assign]
    monkeypatch.setattr(tr, "task_losses", forward)
    bio, model = examples_of("bio", 6, seed=12), tiny_model()
    sgd_step(model, [make_micro_batch(bio[n:n + 2], 0) for n in range(0, 6, 2)],
             accelerator=accelerator)
    assert order == ["no_sync", "forward", "no_sync", "forward", "forward"]


class RecordingRecorder:
    """Keeps the order of the calls and each task's gradient (what the trace's recorder sums)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls: list[str] = []
        self.task_grads: dict[str, dict[str, torch.Tensor]] = {}
        self._before: dict[str, torch.Tensor] = {}

    def before_backward(self) -> None:
        self.calls.append("before")
        self._before = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                        for n, p in self.model.named_parameters()}

    def after_backward(self, task: str) -> None:
        self.calls.append(f"after {task}")
        grads = self.task_grads.setdefault(task, {})
        for name, p in self.model.named_parameters():
            delta = (p.grad if p.grad is not None else torch.zeros_like(p)) - self._before[name]
            grads[name] = grads.get(name, 0) + delta

    def on_optimizer_step(self, lr: float | None = None) -> None:
        self.calls.append("step")
        assert all(p.grad is not None for p in self.model.parameters())  # before the step


@pytest.mark.parametrize("packing", [False, True])
def test_the_recorder_sees_each_tasks_gradient_and_the_update_is_unchanged(packing):
    bio, qa = examples_of("bio", 2, seed=13), examples_of("qa", 2, seed=14)
    tokens = sum(loss_tokens(e) for e in bio + qa)
    mixed = make_micro_batch(bio + qa, 0, packing=packing, pack_width=64)  # both tasks, one pass
    _, plain = sgd_step(tiny_model(), [mixed])
    model = tiny_model()
    recorder = RecordingRecorder(model)
    _, recorded = sgd_step(model, [mixed], recorder=recorder)
    assert recorder.calls == ["before", "after qa", "before", "after bio", "step"]
    for name in plain:
        torch.testing.assert_close(recorded[name], plain[name], rtol=1e-5, atol=1e-7)
    for task, examples in (("bio", bio), ("qa", qa)):
        expected = reference_gradient(tiny_model(), examples, tokens)
        for name in expected:
            torch.testing.assert_close(recorder.task_grads[task][name], expected[name],
                                       rtol=1e-4, atol=1e-6)


# --- the losses a step reports --------------------------------------------------------------


def test_step_losses_mean_over_all_tokens_and_per_task():
    losses = tr.StepLosses({"bio": torch.tensor(6.0), "qa": torch.tensor(3.0)}, {"bio": 3, "qa": 6})
    assert losses.mean() == pytest.approx(1.0)
    assert losses.task_means() == {"loss_bio": pytest.approx(2.0), "loss_qa": pytest.approx(0.5)}
    masked = tr.StepLosses({"bio": torch.tensor(6.0), "qa": torch.tensor(0.0)}, {"bio": 3, "qa": 0})
    assert masked.task_means() == {"loss_bio": pytest.approx(2.0)}
    assert masked.mean() == pytest.approx(2.0)
    assert tr.StepLosses({"qa": torch.tensor(0.7)}, {"qa": 1}).mean() == pytest.approx(0.7)


class TwoProcesses:
    """An accelerator of two processes whose other process reports `other` (rows: bio, qa;
    columns: summed loss, tokens)."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, other: list[list[float]]) -> None:
        self.other = torch.tensor(other, dtype=torch.float64)
        self.reductions: list[str] = []

    def reduce(self, local: torch.Tensor, reduction: str) -> torch.Tensor:
        self.reductions.append(reduction)
        assert local.dtype == torch.float64 and local.shape == (2, 2)
        return local + self.other


def test_step_losses_are_summed_over_processes_before_they_are_judged():
    mine = tr.StepLosses({"bio": torch.tensor(6.0)}, {"bio": 3})
    accelerator = TwoProcesses([[2.0, 1.0], [4.0, 2.0]])  # the other had bio and qa
    summed = mine.summed_over_processes(accelerator)  # type: ignore[arg-type]
    assert accelerator.reductions == ["sum"]
    assert {t: float(v) for t, v in summed.loss_sum.items()} == {"bio": 8.0, "qa": 4.0}
    assert summed.tokens == {"bio": 4, "qa": 2}
    assert summed.mean() == pytest.approx(2.0)
    neither_has_qa = mine.summed_over_processes(TwoProcesses([[1.0, 1.0], [0.0, 0.0]]))  # type: ignore[arg-type]
    assert set(neither_has_qa.loss_sum) == set(neither_has_qa.tokens) == {"bio"}
    one_qa_token = mine.summed_over_processes(TwoProcesses([[0.0, 0.0], [0.5, 1.0]]))  # type: ignore[arg-type]
    assert one_qa_token.tokens == {"bio": 3, "qa": 1}
    assert float(one_qa_token.loss_sum["qa"]) == 0.5
    assert mine.summed_over_processes(SimpleNamespace(num_processes=1)) is mine  # type: ignore[arg-type]


# --- the optimizer and schedule of a phase --------------------------------------------------


def test_the_optimizer_is_adamw_with_the_phases_rate_and_the_specs_betas():
    model = tiny_model()
    model.model.embed_tokens.weight.requires_grad_(False)
    train = TrainSpec(weight_decay=0.3, beta1=0.8, beta2=0.95)
    optimizer = tr.make_optimizer(model, Phase("p", {"bio": 1.0}, lr=7e-4), train)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decayed["params"]) + len(plain["params"]) == len(trainable)
    assert all(p.requires_grad for p in decayed["params"] + plain["params"])
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.3, 0.0)
    for group in (decayed, plain):
        assert group["lr"] == 7e-4 and group["betas"] == (0.8, 0.95)
        assert group["foreach"] is True and not group["fused"]  # on CPU


def test_warmup_takes_the_rounded_up_share_of_the_phase():
    optimizer = tr.make_optimizer(tiny_model(), Phase("p", {"bio": 1.0}, lr=1.0), TrainSpec())
    scheduler = tr.make_scheduler(optimizer, 15, TrainSpec(warmup_fraction=0.1,
                                                          min_lr_fraction=0.2))
    rates = []
    for _ in range(15):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == [0.0, 0.5, 1.0]  # ceil(1.5) = 2 warmup steps
    assert scheduler.get_last_lr()[0] == pytest.approx(0.2)


def test_a_phase_of_no_steps_gets_a_schedule_all_the_same():
    optimizer = tr.make_optimizer(tiny_model(), Phase("p", {"bio": 1.0}, lr=1.0), TrainSpec())
    scheduler = tr.make_scheduler(optimizer, 0, TrainSpec(warmup_fraction=0.5))
    assert scheduler.get_last_lr()[0] == pytest.approx(1.0)


# --- a run of two phases ----------------------------------------------------------------------


BIO_LR, QA_LR = 1e-2, 5e-3


def two_phase_trainer(folder, model=None, resume_from=None, recorder=None, hook=None,
                      **train) -> tr.Trainer:
    """bio then qa, 4 steps each of 4 examples; logs and checkpoints every 3 steps."""
    sources = {"bio": examples_of("bio", 8, seed=20), "qa_train": examples_of("qa", 8, seed=21)}
    phases = (Phase("bio", {"bio": 2.0}, lr=BIO_LR), Phase("qa", {"qa_train": 2.0}, lr=QA_LR))
    plans = plan_run(phases, {name: len(items) for name, items in sources.items()}, 4, seed=0)
    spec = TrainSpec(**{"batch_size": 4, "log_every": 3, "checkpoint_every": 3,
                        "warmup_fraction": 0.25, "min_lr_fraction": 0.1, **train})
    return tr.Trainer(model=model or tiny_model(), plans=plans, examples=sources, train=spec,
                      accelerator=Accelerator(cpu=True),
                      events=EventLog(folder / "events.jsonl", "test"),
                      checkpoint_dir=folder / "checkpoints", pad_id=0, resume_from=resume_from,
                      recorder=recorder, on_phase_end=hook)


def events_of(trainer, kind):
    return [e for e in read_events(trainer.events.path).events if e["event"] == kind]


def step_tokens(trainer, steps):
    batches = [batch for plan in trainer.plans for batch in plan.batches]
    return sum(len(trainer.examples[source][index].input_ids)
               for step in steps for source, index in batches[step - 1])


def test_each_phase_starts_ends_and_calls_the_hook_with_its_last_step(tmp_path):
    ended = []
    trainer = two_phase_trainer(tmp_path, hook=lambda name, step: ended.append((name, step)))
    assert tr.total_steps(trainer.plans) == trainer.total_steps == 8
    timing = trainer.run()
    assert [(e["phase"], e["phase_index"], e["steps"]) for e in events_of(trainer, "phase_start")
            ] == [("bio", 0, 4), ("qa", 1, 4)]
    assert [(e["phase"], e["step"]) for e in events_of(trainer, "phase_end")] == ended == [
        ("bio", 4), ("qa", 8)]
    assert timing["train_tokens"] == step_tokens(trainer, range(1, 9))
    assert 0 < timing["train_s"] < 60
    assert timing["train_tokens_per_s"] == pytest.approx(timing["train_tokens"] / timing["train_s"])


def test_steps_are_logged_and_checkpointed_every_n_and_at_each_phase_end(tmp_path):
    trainer = two_phase_trainer(tmp_path)
    trainer.run()
    steps = events_of(trainer, "step")
    assert [(e["phase"], e["step"]) for e in steps] == [("bio", 3), ("bio", 4), ("qa", 6),
                                                        ("qa", 8)]
    assert [e["step"] for e in events_of(trainer, "checkpoint")] == [3, 4, 6, 8]
    assert [c.name for c in sorted((tmp_path / "checkpoints").iterdir())] == [
        "step-00000006", "step-00000008"]
    assert all(e["tokens_per_s"] > 0 and e["loss"] > 0 for e in steps)
    assert all(("loss_bio" in e) == (e["phase"] == "bio") for e in steps)
    assert all(("loss_qa" in e) == (e["phase"] == "qa") for e in steps)


def test_the_learning_rate_restarts_with_each_phase(tmp_path):
    """Warmup of one step (rate 0), then the peak, then cosine towards 10% of the phase's own
    peak: each step event logs the rate that step used."""
    trainer = two_phase_trainer(tmp_path, log_every=1)
    trainer.run()
    rates = [e["lr"] for e in events_of(trainer, "step")]

    def cosine(peak, progress):
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    expected = [rate for peak in (BIO_LR, QA_LR)
                for rate in (0.0, *(cosine(peak, k / 3) for k in range(3)))]
    assert rates == pytest.approx(expected)


def test_the_logged_rate_is_the_one_the_step_moved_the_weights_by(tmp_path):
    """AdamW's first step moves every weight with a clearly nonzero gradient by lr (its update is
    g / |g| after bias correction; no weight decay, no clipping): the size of the move is an
    independent measure of the rate the step used. A phase of one step without warmup uses the
    peak; the logged rate must say so (the rate after the step, the cosine's end, would not)."""
    peak = 1e-2
    sources = {"bio": examples_of("bio", 4, seed=30)}
    plans = plan_run((Phase("bio", {"bio": 1.0}, lr=peak),), {"bio": 4}, 4, seed=0)
    assert len(plans[0].batches) == 1
    model = tiny_model()
    before = parameters(model)
    trainer = tr.Trainer(model=model, plans=plans, examples=sources,
                         train=TrainSpec(batch_size=4, log_every=1, warmup_fraction=0.0,
                                         min_lr_fraction=0.1, weight_decay=0.0, clip_norm=0.0),
                         accelerator=Accelerator(cpu=True),
                         events=EventLog(tmp_path / "events.jsonl", "test"),
                         checkpoint_dir=tmp_path / "checkpoints", pad_id=0)
    trainer.run()
    moved = max(float((p.detach() - before[name]).abs().max())
                for name, p in model.named_parameters())
    logged = [e["lr"] for e in events_of(trainer, "step")]
    assert moved == pytest.approx(peak, rel=1e-3)
    assert logged == [pytest.approx(moved, rel=1e-3)]


def test_the_logged_loss_is_the_steps_mean_and_the_model_trains_in_training_mode(tmp_path,
                                                                                monkeypatch):
    seen, optimizer_step = [], tr.optimizer_step

    def spying(model, optimizer, micro_batches, *args, **kwargs):
        losses = optimizer_step(model, optimizer, micro_batches, *args, **kwargs)
        seen.append((model.training, kwargs["normalizer"], losses))
        return losses

    monkeypatch.setattr(tr, "optimizer_step", spying)
    trainer = two_phase_trainer(tmp_path, log_every=1)
    trainer.model.eval()
    trainer.run()
    batches = [batch for plan in trainer.plans for batch in plan.batches]
    for (training, normalizer, losses), batch, event in zip(seen, batches,
                                                          events_of(trainer, "step")):
        assert training
        assert normalizer == sum(loss_tokens(trainer.examples[s][i]) for s, i in batch)
        assert event["loss"] == round(losses.mean(), 6)
        task = "bio" if event["phase"] == "bio" else "qa"
        assert event[f"loss_{task}"] == round(losses.task_means()[f"loss_{task}"], 6)


def test_a_loss_above_the_divergence_limit_fails_the_run_at_that_step(tmp_path):
    with pytest.raises(RunFailed, match="loss diverged at step 3: "):
        two_phase_trainer(tmp_path, divergence_loss=0.5).run()


def test_a_loss_exactly_at_the_limit_is_not_divergence(tmp_path):
    trainer = two_phase_trainer(tmp_path, divergence_loss=50.0)
    at_limit = tr.StepLosses({"bio": torch.tensor(100.0)}, {"bio": 2})
    trainer._log_step(trainer.plans[0].phase, 1, at_limit, BIO_LR, 10.0)
    above = tr.StepLosses({"bio": torch.tensor(100.5)}, {"bio": 2})
    with pytest.raises(RunFailed, match="loss diverged at step 2: 50.25"):
        trainer._log_step(trainer.plans[0].phase, 2, above, BIO_LR, 10.0)


def test_a_nan_loss_fails_the_run(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(RunFailed, match="loss diverged at step 3: nan"):
        two_phase_trainer(tmp_path, model=model).run()


# --- resuming -------------------------------------------------------------------------------


class StepCounter:
    """A recorder that counts optimizer steps and is saved with every checkpoint."""

    def __init__(self) -> None:
        self.steps = 0
        self.loaded: list[int] = []

    def before_backward(self) -> None:
        pass

    def after_backward(self, task: str) -> None:
        pass

    def on_optimizer_step(self, lr: float | None = None) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"steps": torch.tensor(self.steps)}

    def load_state_dict(self, state) -> None:
        self.steps = int(state["steps"])
        self.loaded.append(self.steps)


def uninterrupted_with_saved(tmp_path, keep_step: int):
    """A whole run (with a StepCounter) whose checkpoint at `keep_step` is copied aside."""
    folder = tmp_path / "whole"
    kept = tmp_path / f"kept-{keep_step}"
    trainer = two_phase_trainer(folder, recorder=StepCounter())

    def copy_aside(record):
        if record["event"] == "checkpoint" and record["step"] == keep_step:
            shutil.copytree(record["path"], kept)

    trainer.events.listeners.append(copy_aside)
    trainer.run()
    return trainer, verify(kept)


@pytest.mark.parametrize("keep_step, phases_run", [(3, ["bio", "qa"]), (4, ["qa"]), (6, ["qa"])])
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path, keep_step, phases_run):
    whole, checkpoint = uninterrupted_with_saved(tmp_path, keep_step)
    assert checkpoint is not None and checkpoint.step == keep_step
    assert (checkpoint.path / RECORDER_FILE).exists()
    model = tiny_model(seed=1)  # other weights: the checkpoint's must replace them
    checkpoint.load_model(model)
    ended, recorder = [], StepCounter()
    resumed = two_phase_trainer(tmp_path / "resumed", model=model, resume_from=checkpoint,
                                recorder=recorder, hook=lambda n, s: ended.append(n))
    timing = resumed.run()
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters(),
                            strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert [(e["step"], e["path"]) for e in events_of(resumed, "resume")] == [
        (keep_step, str(checkpoint.path))]
    assert [e["phase"] for e in events_of(resumed, "phase_start")] == phases_run == ended
    assert [e["step"] for e in events_of(resumed, "step")] == [s for s in (3, 4, 6, 8)
                                                               if s > keep_step]
    assert recorder.loaded == [keep_step] and recorder.steps == 8
    assert timing["train_tokens"] == step_tokens(resumed, range(keep_step + 1, 9))


def test_a_run_resumed_at_its_last_step_trains_nothing(tmp_path):
    whole, _ = uninterrupted_with_saved(tmp_path, 8)
    checkpoint = tr.find_resume_checkpoint(tmp_path / "whole" / "checkpoints")
    assert checkpoint is not None and checkpoint.step == 8
    assert tr.find_resume_checkpoint(tmp_path / "nothing-here") is None
    resumed = two_phase_trainer(tmp_path / "resumed", model=whole.model, resume_from=checkpoint,
                                recorder=StepCounter())
    timing = resumed.run()
    assert events_of(resumed, "phase_start") == [] and timing["train_tokens"] == 0


def test_only_the_main_process_writes_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    trainer = two_phase_trainer(tmp_path)
    trainer.run()
    assert not (tmp_path / "checkpoints").exists() and events_of(trainer, "checkpoint") == []


def test_a_checkpoint_at_a_phase_end_says_so(tmp_path):
    trainer = two_phase_trainer(tmp_path)
    trainer.run()
    metas = {p.name: json.loads((p / "meta.json").read_text())
             for p in (tmp_path / "checkpoints").iterdir()}
    assert {name: meta["phase_done"] for name, meta in metas.items()} == {
        "step-00000006": False, "step-00000008": True}


def test_packing_under_several_processes_is_refused_in_words_a_user_can_act_on(tmp_path):
    from factrecall_bench.errors import UserError

    with pytest.raises(UserError) as refused:
        tr.Trainer(model=tiny_model(), plans=[], examples={}, train=TrainSpec(packing=True),
                   accelerator=SimpleNamespace(num_processes=2),  # type: ignore[arg-type]
                   events=EventLog(tmp_path / "events.jsonl", "test"),
                   checkpoint_dir=tmp_path / "checkpoints", pad_id=0)
    assert str(refused.value) == (
        "train.packing runs on one process for now (not under DDP or FSDP2)")


def test_packed_micro_batches_have_the_pack_width_of_the_spec(tmp_path):
    trainer = two_phase_trainer(tmp_path, packing=True, pack_width=40)
    packed = trainer._local_micro_batch(trainer.examples["bio"][:6])
    assert packed.packed and packed.tensors["input_ids"].shape[1] == 40


def test_a_process_with_no_share_of_a_micro_batch_runs_one_example_without_loss(tmp_path,
                                                                                monkeypatch):
    trainer = two_phase_trainer(tmp_path)
    micro = trainer.examples["bio"][:3]
    mine = trainer._local_micro_batch(micro)
    assert mine.tensors["input_ids"].shape[0] == 3
    assert mine.task_tokens == {"bio": sum(loss_tokens(e) for e in micro)}
    monkeypatch.setattr(distributed, "shard", lambda items: [])
    stand_in = trainer._local_micro_batch(micro)
    assert stand_in.tensors["input_ids"].shape[0] == 1
    assert stand_in.task_tokens == {"bio": 0}
    assert bool((stand_in.tensors["labels"] == IGNORE).all())


def test_each_process_divides_by_the_steps_loss_tokens_over_the_number_of_processes(tmp_path,
                                                                                   monkeypatch):
    """Under DDP the gradients are averaged over the processes: each divides its summed loss by
    the whole step's loss tokens / processes, so the average is the one-process update."""
    normalizers = []

    def recording(model, optimizer, micro_batches, *args, normalizer, **kwargs):
        normalizers.append(normalizer)
        return tr.StepLosses({"bio": torch.tensor(1.0)}, {"bio": 1})

    monkeypatch.setattr(tr, "optimizer_step", recording)
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    trainer = two_phase_trainer(tmp_path)
    batch = trainer.plans[0].batches[0]
    trainer._step(torch.optim.SGD(trainer.model.parameters(), lr=0.1), batch)
    assert normalizers == [sum(loss_tokens(trainer.examples[s][i]) for s, i in batch) / 2]
    trainer.examples["qa_train"][0] = Example([5, 6, 7, 8], [IGNORE, IGNORE, IGNORE, 8], "qa")
    trainer._step(torch.optim.SGD(trainer.model.parameters(), lr=0.1), [("qa_train", 0)])
    assert normalizers[-1] == 1 / 2


def test_under_fsdp2_every_process_gathers_the_state_the_main_one_writes(tmp_path, monkeypatch):
    gathered, saved = [], []
    sentinel = object()

    def gather(model, optimizer):
        gathered.append((model, optimizer))
        return sentinel

    def save(folder, step, model, optimizer, scheduler, **kwargs):
        saved.append((step, kwargs["gathered"], kwargs["recorder_state"]))
        return folder / f"step-{step:08d}"

    trainer = two_phase_trainer(tmp_path)
    monkeypatch.setattr(distributed, "is_sharded", lambda model: model is trainer.model)
    monkeypatch.setattr(tr, "gather_sharded_state", gather)
    monkeypatch.setattr(tr, "save_checkpoint", save)
    trainer.run()
    assert [step for step, _, _ in saved] == [3, 4, 6, 8]
    assert all(state is sentinel for _, state, _ in saved)
    assert all(model is trainer.model for model, _ in gathered) and len(gathered) == 4
    assert all(isinstance(optimizer, torch.optim.AdamW) for _, optimizer in gathered)  # unwrapped

    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    gathered.clear(), saved.clear()
    two_phase_trainer(tmp_path / "other").run()
    assert saved == [] and gathered == []  # that model is not sharded: nothing to gather
    trainer = two_phase_trainer(tmp_path / "rank1")
    monkeypatch.setattr(distributed, "is_sharded", lambda model: model is trainer.model)
    trainer.run()
    assert saved == [] and len(gathered) == 4  # a non-main process gathers too, writes nothing


def test_the_logged_throughput_is_the_windows_tokens_over_its_time(tmp_path, monkeypatch):
    """With a clock that moves 0.3 s per reading, a window of steps (1-3, 4, 5-6, 7-8: logged
    every 3 and at phase ends) is read once, at its end: its tokens over 0.3 s, to 0.1 token/s."""
    clock = iter(n * 0.3 for n in range(10_000))
    monkeypatch.setattr(tr.time, "perf_counter", lambda: next(clock))
    trainer = two_phase_trainer(tmp_path)
    trainer.run()
    logged = [e["tokens_per_s"] for e in events_of(trainer, "step")]
    windows = [(1, 3), (4, 4), (5, 6), (7, 8)]
    assert logged == pytest.approx([step_tokens(trainer, range(a, b + 1)) / 0.3
                                    for a, b in windows], abs=0.05)
    assert all(isinstance(rate, float) and rate == round(rate, 1) for rate in logged)
    assert any(rate != round(rate) for rate in logged)


def test_a_run_timed_at_zero_seconds_reports_no_throughput_rather_than_failing(tmp_path,
                                                                              monkeypatch):
    """A coarse clock that does not move: no division by zero, a throughput of 0."""
    monkeypatch.setattr(tr.time, "perf_counter", lambda: 100.0)
    timing = two_phase_trainer(tmp_path).run()
    assert timing["train_s"] == 0 and timing["train_tokens_per_s"] == 0.0
