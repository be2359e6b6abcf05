"""The training loop: accumulation equivalence, where the loss goes, schedules, determinism."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, LlamaConfig

from factrecall_bench import train as train_module
from factrecall_bench.batching import collate, plan_run
from factrecall_bench.config import Phase, TrainSpec
from factrecall_bench.data.examples import IGNORE, Example, QAItem, qa_examples
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
