"""The corpus tokenizer: values tokenize the same inside a biography and after "Answer:"."""

from __future__ import annotations

import pytest

from factrecall_bench.data.examples import bio_items, encode_answer, qa_items
from factrecall_bench.data.pools import ATTRIBUTES
from factrecall_bench.data.tokenizer import train_tokenizer


@pytest.fixture(scope="module", params=["word", "bpe"])
def tokenizer(request, small_dataset):
    return train_tokenizer(small_dataset, kind=request.param, vocab_size=600)


def test_values_tokenize_identically_in_bio_and_answer(tokenizer, small_dataset):
    people = small_dataset["people"]
    items = bio_items(small_dataset["bio"], tokenizer)
    checked = 0
    for item in items:
        person = people[item.person_id]
        for attribute in ATTRIBUTES:
            start, end = item.value_token_spans[attribute]
            answer = encode_answer(tokenizer, person[attribute])[:-1]  # without the end token
            assert item.input_ids[start:end] == answer, (attribute, person[attribute])
            checked += 1
    assert checked == len(small_dataset["bio"]) * len(ATTRIBUTES)


def test_names_tokenize_alike_in_bio_and_question(tokenizer, small_dataset):
    people = small_dataset["people"]
    bio = bio_items(small_dataset["bio"].select([0]), tokenizer)[0]
    name = people[bio.person_id]["full_name"]
    name_ids = tokenizer(f" {name}", add_special_tokens=False)["input_ids"]
    assert bio.input_ids[1:1 + len(name_ids)] == name_ids  # after <bos>
    question = [q for q in qa_items(small_dataset["qa_train"], tokenizer)
                if q.question_id.startswith(f"p{bio.person_id}/")]
    for item in question:
        text = tokenizer.decode(item.prompt_ids)
        assert name in text


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_training_is_deterministic(small_dataset, kind):
    first = train_tokenizer(small_dataset, kind=kind, vocab_size=600)
    again = train_tokenizer(small_dataset, kind=kind, vocab_size=600)
    assert again.get_vocab() == first.get_vocab()
    assert again(" Princeton, NJ")["input_ids"] == first(" Princeton, NJ")["input_ids"]


def test_answers_end_with_eos_and_prompts_carry_no_answer(tokenizer, small_dataset):
    for item in qa_items(small_dataset["qa_test"], tokenizer)[:30]:
        assert item.answer_ids[-1] == tokenizer.eos_token_id
        assert item.prompt_ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(item.prompt_ids[1:]).endswith("Answer:")
