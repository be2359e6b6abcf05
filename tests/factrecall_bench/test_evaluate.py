"""Evaluation: teacher-forced exact match equals greedy decoding, batched equals one by one."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, LlamaConfig

from factrecall_bench import distributed
from factrecall_bench import evaluate as ev
from factrecall_bench.batching import collate
from factrecall_bench.config import DataSpec, ModelSpec
from factrecall_bench.data.dataset import generate_dataset
from factrecall_bench.data.examples import BioItem, QAItem, qa_examples, qa_items
from factrecall_bench.data.tokenizer import train_tokenizer
from factrecall_bench.evaluate import generate_answers, per_attribute, proportion, score_qa
from factrecall_bench.models import build_model
from factrecall_bench.train import optimizer_step


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama that memorized part of 120 QA pairs (so some answers are right, some not)."""
    dataset = generate_dataset(DataSpec(n_people=40, seed=5))
    tokenizer = train_tokenizer(dataset)
    items = qa_items(dataset["qa_train"], tokenizer)
    model = build_model(ModelSpec(n_layer=1, d_model=64, n_head=2, d_ff=128), tokenizer, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    examples = qa_examples(items)
    generator = torch.Generator().manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model.train()
    for _ in range(60):
        picked = torch.randperm(len(examples), generator=generator)[:32].tolist()
        batch = collate([examples[i] for i in picked], tokenizer.pad_token_id)
        optimizer_step(model, optimizer, [batch], accelerator, clip_norm=1.0)
    return model, tokenizer, items


def test_some_answers_right_and_some_wrong(trained):
    model, tokenizer, items = trained
    scores = score_qa(model, items, tokenizer.pad_token_id)
    assert 0 < sum(scores.exact_match) < len(items)


def test_teacher_forced_exact_match_equals_greedy_generation(trained):
    model, tokenizer, items = trained
    scores = score_qa(model, items, tokenizer.pad_token_id, batch_size=17)
    generated = generate_answers(model, items, tokenizer.pad_token_id, tokenizer.eos_token_id,
                                 batch_size=16, max_new_tokens=12)
    by_generation = [int(answer == item.answer_ids) for answer, item in zip(generated, items)]
    assert scores.exact_match == by_generation


def test_batched_generation_equals_one_by_one(trained):
    model, tokenizer, items = trained
    subset = items[:24]
    batched = generate_answers(model, subset, tokenizer.pad_token_id, tokenizer.eos_token_id,
                               batch_size=24, max_new_tokens=12)
    single = [generate_answers(model, [item], tokenizer.pad_token_id, tokenizer.eos_token_id,
                               batch_size=1, max_new_tokens=12)[0] for item in subset]
    assert batched == single


def test_batch_size_does_not_change_scores(trained):
    model, tokenizer, items = trained
    assert score_qa(model, items, tokenizer.pad_token_id, batch_size=7) == \
        score_qa(model, items, tokenizer.pad_token_id, batch_size=128)


def test_proportion_carries_wilson_interval():
    result = proportion([1] * 81 + [0] * 182)
    assert result["n"] == 263 and result["value"] == pytest.approx(81 / 263)
    assert result["low"] == pytest.approx(0.2553, abs=1e-4)
    assert result["high"] == pytest.approx(0.3662, abs=1e-4)


def test_per_attribute_groups_by_attribute(trained):
    model, tokenizer, items = trained
    scores = score_qa(model, items, tokenizer.pad_token_id)
    grouped = per_attribute(scores, "exact_match")
    assert sum(entry["n"] for entry in grouped.values()) == len(items)
    assert len(grouped) == 6


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/evaluate.py (docs/mutation.md,
# fourth round): what the model is shown (right-padded ids, a mask of the real tokens, batches of similar
# length), which position's prediction decides exact match, first-token accuracy and BIO value recall, the
# order of the scores, the extra forwards every FSDP2 process runs, scoring without autograd (and resharding
# afterwards), and greedy generation that obeys the caller's end and pad tokens rather than the model's
# generation config.
# Most tests use `ScriptedModel`, a model whose next-token prediction at every position is a function the
# test writes, so each test knows the right answer without training anything.


VOCAB = 40
PAD = 0
EOS = 2

Predict = Callable[[list[int], int], int]
"""(the row's real tokens, a position in them) -> the token predicted after that position."""


class ScriptedModel(torch.nn.Module):
    """Predicts `predict(tokens, position)` at every real position; records every forward."""

    def __init__(self, predict: Predict) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.predict = predict
        self.calls: list[dict] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        self.calls.append({"ids": input_ids.tolist(), "mask": attention_mask.tolist(),
                           "grad": torch.is_grad_enabled(),
                           "inference": torch.is_inference_mode_enabled()})
        logits = torch.zeros(*input_ids.shape, VOCAB)
        for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
            real = ids[:sum(mask)]
            for position in range(len(real)):
                logits[row, position, self.predict(real, position)] = 1.0
        return SimpleNamespace(logits=logits)


def oracle_for(sequences: list[list[int]], wrong: set[tuple[int, int]] = frozenset()
               ) -> Predict:
    """Predicts each known sequence's next token, except at the (sequence, position) in `wrong`,
    where it predicts a token that is never right (VOCAB - 1)."""
    by_prefix = {}
    for number, sequence in enumerate(sequences):
        for position in range(len(sequence) - 1):
            wanted = VOCAB - 1 if (number, position) in wrong else sequence[position + 1]
            by_prefix[tuple(sequence[:position + 1])] = wanted
    return lambda tokens, position: by_prefix.get(tuple(tokens[:position + 1]), VOCAB - 1)


def questions() -> list[QAItem]:
    """Questions of different lengths (the scorer sorts them by length; the scores must not be)."""
    return [QAItem("q0", "birth_city", [1, 5, 6, 7], [11, 12, EOS]),
            QAItem("q1", "major", [1, 5], [13, EOS]),
            QAItem("q2", "company", [1, 8, 9, 10, 5, 6], [14, 15, 16, EOS]),
            QAItem("q3", "major", [1, 9], [17, 18, EOS]),
            QAItem("q4", "birth_city", [1, 7, 7], [19, EOS])]


def full(item: QAItem) -> list[int]:
    return item.prompt_ids + item.answer_ids


def answer_position(item: QAItem, index: int) -> tuple[int, int]:
    """The position whose prediction is the answer's `index`-th token."""
    return len(item.prompt_ids) - 1 + index


# --- what the model is shown ------------------------------------------------------------------


def test_the_model_sees_right_padded_ids_and_a_mask_of_the_real_tokens():
    items = questions()
    model = ScriptedModel(oracle_for([full(i) for i in items]))
    ev.score_qa(model, items, pad_id=PAD, batch_size=2)
    shown = [(ids, mask) for call in model.calls for ids, mask in zip(call["ids"], call["mask"])]
    assert sorted(ids[:sum(mask)] for ids, mask in shown) == sorted(full(i) for i in items)
    for ids, mask in shown:
        length = sum(mask)
        assert mask == [1] * length + [0] * (len(mask) - length)
        assert ids[length:] == [PAD] * (len(ids) - length)


def test_questions_of_similar_length_are_scored_together():
    items = questions()
    model = ScriptedModel(oracle_for([full(i) for i in items]))
    ev.score_qa(model, items, pad_id=PAD, batch_size=2)
    lengths = [[sum(mask) for mask in call["mask"]] for call in model.calls]
    assert lengths == [[4, 5], [5, 7], [10]]  # sorted by prompt + answer length, 2 per forward


def test_a_batch_size_of_one_scores_each_question_alone():
    items = questions()
    model = ScriptedModel(oracle_for([full(i) for i in items]))
    ev.score_qa(model, items, pad_id=PAD, batch_size=1)
    assert [len(call["ids"]) for call in model.calls] == [1] * len(items)


def test_nothing_to_score_runs_no_forward():
    model = ScriptedModel(lambda tokens, position: 0)
    assert ev.score_qa(model, [], PAD) == ev.QAScores([], [], [], [])
    assert ev.score_bio_values(model, [], PAD) == []
    assert model.calls == []


def test_the_default_batch_scores_128_questions_per_forward():
    items = [QAItem(f"q{n}", "major", [1, 5 + n % 7], [13, EOS]) for n in range(129)]
    model = ScriptedModel(lambda tokens, position: 0)
    ev.score_qa(model, items, PAD)
    assert [len(call["ids"]) for call in model.calls] == [128, 1]


def test_the_length_sorted_batches_cover_every_item_once_in_length_order():
    assert ev._length_sorted_batches([5, 1, 4, 2, 3], 2) == [[1, 3], [4, 2], [0]]
    assert ev._length_sorted_batches([2, 1], 5) == [[1, 0]]


# --- which prediction decides ------------------------------------------------------------------


def test_exact_match_needs_every_answer_token_and_the_end_token():
    items = questions()
    wrong = {(0, answer_position(items[0], 1)),   # q0: second answer token wrong
             (2, answer_position(items[2], 3)),   # q2: the end token wrong
             (3, answer_position(items[3], 0))}   # q3: first token wrong
    model = ScriptedModel(oracle_for([full(i) for i in items], wrong))
    scores = ev.score_qa(model, items, pad_id=PAD, batch_size=2)
    assert scores.question_ids == ["q0", "q1", "q2", "q3", "q4"]
    assert scores.attributes == ["birth_city", "major", "company", "major", "birth_city"]
    assert scores.exact_match == [0, 1, 0, 0, 1]
    assert scores.first_token == [1, 1, 1, 0, 1]


def test_a_wrong_prompt_token_prediction_does_not_count():
    """Only the answer's positions are read: predictions inside the prompt are not scored."""
    items = questions()
    wrong = {(number, 0) for number in range(len(items))}  # the token after the first
    model = ScriptedModel(oracle_for([full(i) for i in items], wrong))
    scores = ev.score_qa(model, items, pad_id=PAD)
    assert scores.exact_match == [1] * len(items) and scores.first_token == [1] * len(items)


def test_nothing_right_scores_zero_everywhere():
    items = questions()
    model = ScriptedModel(lambda tokens, position: VOCAB - 1)
    scores = ev.score_qa(model, items, pad_id=PAD)
    assert scores.exact_match == [0] * len(items) and scores.first_token == [0] * len(items)


def biographies() -> list[BioItem]:
    return [BioItem(0, [1, 20, 21, 22, 23, 24, 25, 26], {"birth_city": (2, 4), "major": (5, 6)}),
            BioItem(1, [1, 30, 31, 32, 33], {"birth_city": (1, 2), "major": (3, 5)}),
            BioItem(2, [1, 34, 35, 36], {"birth_city": (3, 4), "major": (2, 3)})]


def test_bio_value_recall_reads_the_prediction_before_each_values_first_token():
    people = biographies()
    wrong = {(0, 4),   # person 0: major's first token (position 5) predicted from position 4
             (1, 0),   # person 1: birth_city's first token (position 1)
             (2, 0),   # person 2: a token that starts no value, not scored
             (0, 2)}   # person 0: birth_city's second token, not scored
    model = ScriptedModel(oracle_for([p.input_ids for p in people], wrong))
    hits = ev.score_bio_values(model, people, pad_id=PAD, batch_size=2)
    assert hits == [{"birth_city": 1, "major": 0}, {"birth_city": 0, "major": 1},
                    {"birth_city": 1, "major": 1}]
    assert ev.bio_hits(model, people, PAD, batch_size=2) == {"birth_city": [1, 0, 1],
                                                              "major": [0, 1, 1]}


def test_bio_biographies_go_to_the_model_in_batches_of_the_batch_size():
    people = biographies()
    model = ScriptedModel(oracle_for([p.input_ids for p in people]))
    ev.score_bio_values(model, people, pad_id=PAD, batch_size=2)
    assert [len(call["ids"]) for call in model.calls] == [2, 1]
    many = [BioItem(n, [1, 20, 21 + n % 9], {"major": (2, 3)}) for n in range(65)]
    model.calls.clear()
    ev.score_bio_values(model, many, pad_id=PAD)  # the default batch: 64 biographies
    assert [len(call["ids"]) for call in model.calls] == [64, 1]


def test_hits_by_attribute_keeps_the_order_of_the_biographies():
    per_item = [{"a": 1, "b": 0}, {"a": 0, "b": 1}, {"a": 1, "b": 1}]
    assert ev.hits_by_attribute(per_item) == {"a": [1, 0, 1], "b": [0, 1, 1]}
    assert ev.hits_by_attribute([]) == {}


def test_qa_scores_on_one_process_are_score_qa():
    items = questions()
    wrong = {(0, answer_position(items[0], 1)), (3, answer_position(items[3], 0))}
    model = ScriptedModel(oracle_for([full(i) for i in items], wrong))
    expected = ev.score_qa(model, items, PAD, batch_size=2)
    model.calls.clear()
    assert ev.qa_scores(model, items, PAD, batch_size=2) == expected
    assert len(model.calls) == 3  # no padding forwards on one process


# --- no autograd; FSDP2's forwards and resharding -----------------------------------------------


def test_scoring_runs_in_inference_mode_and_training_mode_is_off():
    items = questions()
    model = ScriptedModel(oracle_for([full(i) for i in items]))
    model.train()
    ev.score_qa(model, items, PAD)
    ev.score_bio_values(model, biographies(), PAD)
    assert not model.training
    assert all(not c["grad"] and c["inference"] for c in model.calls)


@pytest.fixture
def two_sharded_processes(monkeypatch):
    """`model` looks FSDP2-sharded across two processes; this process is the second (rank 1),
    holding items 1, 3, 5, ... (the fewer, when their number is odd)."""
    sharded: list[torch.nn.Module] = []
    resharded: list[torch.nn.Module] = []
    monkeypatch.setattr(distributed, "is_sharded", lambda model: model in sharded)
    monkeypatch.setattr(distributed, "reshard", resharded.append)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "shard", lambda items: items[1::2])
    monkeypatch.setattr(distributed, "gather_shards", lambda local: local)
    return sharded, resharded


def test_a_sharded_model_is_scored_under_no_grad_and_resharded(two_sharded_processes):
    sharded, resharded = two_sharded_processes
    items = questions()
    model = ScriptedModel(oracle_for([full(i) for i in items]))
    sharded.append(model)
    ev.score_qa(model, items, PAD)
    assert resharded == [model]
    ev.score_bio_values(model, biographies(), PAD)
    assert resharded == [model, model]
    assert all(not c["grad"] and not c["inference"] for c in model.calls)


def test_every_sharded_process_runs_as_many_forwards_as_the_busiest(two_sharded_processes):
    """10 questions over 2 processes, 3 per forward: the busiest runs ceil(5 / 3) = 2 forwards;
    a process holding fewer items ends with one-token forwards of the pad token."""
    sharded, _ = two_sharded_processes
    items = [QAItem(f"q{n}", "major", [1, 5 + n % 3], [13, EOS]) for n in range(10)]
    model = ScriptedModel(oracle_for([full(i) for i in items]))
    sharded.append(model)
    assert ev._forwards_per_process(model, 10, 3) == 2
    assert ev._forwards_per_process(model, 13, 3) == 3
    assert ev._forwards_per_process(ScriptedModel(lambda t, p: 0), 10, 3) == 0  # not sharded
    scores = ev.score_qa(model, items[:2], PAD, batch_size=3, forwards=3)
    assert scores.exact_match == [1, 1]
    assert [call["ids"] for call in model.calls[1:]] == [[[PAD]], [[PAD]]]
    assert all(call["mask"] == [[1]] for call in model.calls[1:])


def test_qa_scores_and_bio_hits_pass_the_busiest_processs_forwards(two_sharded_processes):
    """5 questions over 2 processes, 1 per forward: rank 0 runs 3 forwards, so this process (2
    questions) adds one; 5 biographies, 2 per forward: rank 0 runs 2, this one 1 and a pad."""
    sharded, _ = two_sharded_processes
    items = [QAItem(f"q{n}", "major", [1, 5 + n], [13, EOS]) for n in range(5)]
    model = ScriptedModel(oracle_for([full(i) for i in items], {(3, 1)}))
    sharded.append(model)
    scores = ev.qa_scores(model, items, PAD, batch_size=1)  # this process: q1, q3
    assert (scores.exact_match, scores.first_token) == ([1, 0], [1, 0])
    assert [call["ids"] for call in model.calls] == [[full(items[1])], [full(items[3])], [[PAD]]]
    people = [BioItem(n, [1, 20 + n, 30 + n], {"major": (2, 3)}) for n in range(5)]
    model = ScriptedModel(oracle_for([p.input_ids for p in people]))
    sharded.append(model)
    assert ev.bio_hits(model, people, PAD, batch_size=2) == {"major": [1, 1]}
    assert [call["ids"] for call in model.calls] == [[[1, 21, 31], [1, 23, 33]], [[PAD]]]
    seven = [BioItem(n, [1, 20 + n, 30 + n], {"major": (2, 3)}) for n in range(7)]
    model = ScriptedModel(oracle_for([p.input_ids for p in seven]))
    sharded.append(model)
    assert ev.bio_hits(model, seven, PAD, batch_size=2) == {"major": [1, 1, 1]}
    assert [len(call["ids"]) for call in model.calls] == [2, 1]  # its 3 in batches of 2


# --- proportions ---------------------------------------------------------------------------------


def test_an_empty_proportion_is_zero_of_zero():
    assert ev.proportion([]) == {"value": 0.0, "low": 0.0, "high": 1.0, "n": 0}


def test_per_attribute_proportions_of_each_field():
    scores = ev.QAScores(["a", "b", "c"], ["x", "y", "x"], [1, 0, 0], [1, 1, 0])
    exact, first = ev.per_attribute(scores, "exact_match"), ev.per_attribute(scores, "first_token")
    assert (exact["x"]["value"], exact["x"]["n"], exact["y"]["value"]) == (0.5, 2, 0.0)
    assert (first["x"]["value"], first["y"]["value"]) == (0.5, 1.0)


# --- greedy generation --------------------------------------------------------------------------


def tiny_llama(eos: int, pad: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, pad_token_id=pad, eos_token_id=eos)
    return AutoModelForCausalLM.from_config(config)


def test_generation_runs_the_asked_number_of_new_tokens_without_an_end_token():
    """An untrained model that never emits the end token: every answer has max_new_tokens."""
    model = tiny_llama(eos=VOCAB + 5, pad=PAD)
    items = questions()
    never_eos = VOCAB + 5  # outside the vocabulary: never generated
    assert [len(a) for a in ev.generate_answers(model, items, PAD, never_eos,
                                                max_new_tokens=3)] == [3] * 5
    assert [len(a) for a in ev.generate_answers(model, items, PAD, never_eos)] == [16] * 5


def test_generation_is_greedy_and_uses_the_callers_end_token():
    """The model's own generation config says: sample, and end at another token (one its greedy
    answers produce). The answers must still be the greedy ones, cut at the caller's end token."""
    model = tiny_llama(eos=3, pad=4)
    items = questions()
    greedy = []
    with torch.no_grad():
        for item in items:
            ids = list(item.prompt_ids)
            for _ in range(6):
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            greedy.append(ids[len(item.prompt_ids):])
    end = greedy[0][0]  # q0's first greedy token ends answers: q0's answer is that one token
    models_end = next(token for tokens in greedy[1:] for token in tokens[:3] if token != end)
    model.generation_config.eos_token_id = models_end
    model.generation_config.do_sample = True
    model.generation_config.top_k = 0
    answers = ev.generate_answers(model, items, PAD, end, batch_size=2, max_new_tokens=6)
    for answer, tokens in zip(answers, greedy):
        assert answer == (tokens[:tokens.index(end) + 1] if end in tokens else tokens)
    assert answers[0] == [end]


def test_a_left_padded_prompt_gets_the_answer_it_gets_alone():
    """Left padding with the caller's pad token (not the model's) and a mask over it."""
    model = tiny_llama(eos=3, pad=4)
    items = questions()
    alone = [ev.generate_answers(model, [item], PAD, VOCAB + 5, max_new_tokens=4)[0]
             for item in items]
    assert ev.generate_answers(model, items, PAD, VOCAB + 5, max_new_tokens=4) == alone


def test_left_padding_is_masked_when_the_pad_token_is_the_end_token():
    """Many pretrained tokenizers pad with their end token; generate cannot tell padding from
    the prompt by the token then, so the mask must say it."""
    model = tiny_llama(eos=3, pad=4)
    items = questions()
    end = 2
    alone = [ev.generate_answers(model, [item], end, end, max_new_tokens=4)[0] for item in items]
    assert ev.generate_answers(model, items, end, end, max_new_tokens=4) == alone


def test_generation_cuts_each_answer_after_its_first_end_token():
    assert ev._until_eos([5, 2, 7, 2], 2) == [5, 2]
    assert ev._until_eos([5, 7], 2) == [5, 7]
