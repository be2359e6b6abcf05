"""Tests written for the survivors of mutation testing of factrecall_bench/data/examples.py
(docs/mutation.md, third round): where the loss goes and where an answer or a value starts, with
a tiny word-level stand-in tokenizer (a leading space belongs to the next word, as in the
corpus tokenizer) so that every id and offset can be written out."""

from __future__ import annotations

import re

import datasets
import pytest

from factrecall_bench.data import examples as ex
from factrecall_bench.data.examples import IGNORE, BioItem, Example, QAItem
from factrecall_bench.data.pools import ATTRIBUTES


class WordTokenizer:
    def __init__(self, bos: int | None = 1, eos: int = 2) -> None:
        self.bos_token_id, self.eos_token_id = bos, eos
        self.vocab: dict[str, int] = {}

    def _one(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        pieces = [(m.group(), m.start(), m.end()) for m in re.finditer(r" ?[^ ]+", text)]
        ids = [self.vocab.setdefault(piece, 10 + len(self.vocab)) for piece, _, _ in pieces]
        return ids, [(start, end) for _, start, end in pieces]

    def __call__(self, texts, add_special_tokens=True, return_offsets_mapping=False):
        assert add_special_tokens is False
        if isinstance(texts, str):
            ids, offsets = self._one(texts)
            out = {"input_ids": ids}
            if return_offsets_mapping:
                out["offset_mapping"] = offsets
            return out
        done = [self._one(text) for text in texts]
        out = {"input_ids": [ids for ids, _ in done]}
        if return_offsets_mapping:
            out["offset_mapping"] = [offsets for _, offsets in done]
        return out

    def ids(self, *pieces: str) -> list[int]:
        return [self.vocab[piece] for piece in pieces]


def _qa_rows() -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "question_id": ["p0/major", "p1/company"], "attribute": ["major", "company"],
        "prompt": ["Major of Ann? Answer:", "Firm of Bo? Answer:"],
        "answer": ["Art History", "Acme"]})


def test_qa_items_and_examples_put_the_loss_on_the_answer_and_the_end_token() -> None:
    tok = WordTokenizer(bos=1, eos=2)
    items = ex.qa_items(_qa_rows(), tok)
    prompt = tok.ids("Major", " of", " Ann?", " Answer:")
    answer = tok.ids(" Art", " History")
    assert items[0] == QAItem("p0/major", "major", [1, *prompt], [*answer, 2])
    assert items[1].question_id == "p1/company" and items[1].attribute == "company"
    assert items[1].answer_ids == [*tok.ids(" Acme"), 2]
    assert ex.encode_answer(tok, "Art History") == [*answer, 2]
    examples = ex.qa_examples(items)
    assert examples[0] == Example([1, *prompt, *answer, 2], [IGNORE] * 5 + [*answer, 2], "qa")
    assert len(examples) == 2 and examples[1].task == "qa"


def test_without_a_bos_token_nothing_is_prepended() -> None:
    tok = WordTokenizer(bos=None, eos=7)
    assert ex._prefix(tok) == []
    assert ex._prefix(WordTokenizer(bos=0)) == [0]
    item = ex.qa_items(_qa_rows(), tok)[0]
    assert item.prompt_ids == tok.ids("Major", " of", " Ann?", " Answer:")
    assert item.answer_ids[-1] == 7


def _bio_rows(text: str, values: list[str]) -> datasets.Dataset:
    starts = [text.index(value) for value in values]
    return datasets.Dataset.from_dict({
        "person_id": [4], "text": [text], "value_starts": [starts],
        "value_ends": [[s + len(v) for s, v in zip(starts, values)]]})


VALUES = ["May 1, 1990", "Oslo", "MIT", "Art", "Acme", "Rome"]
TEXT = ("Ann was born on May 1, 1990 in spring. She is from Oslo now. She went to MIT then. "
        "She read Art there. She worked at Acme Inc. She lived in Rome then.")


@pytest.mark.parametrize("bos", [1, None])
def test_bio_items_find_each_values_token_span(bos) -> None:
    tok = WordTokenizer(bos=bos, eos=2)
    item = ex.bio_items(_bio_rows(TEXT, VALUES), tok)[0]
    prefix = [] if bos is None else [1]
    assert item.person_id == 4
    assert item.input_ids == prefix + tok(" " + TEXT, add_special_tokens=False)["input_ids"] + [2]
    for attribute, value in zip(ATTRIBUTES, VALUES):
        start, end = item.value_token_spans[attribute]
        words = [" " + w for w in value.split(" ")]
        assert item.input_ids[start:end] == tok.ids(*words), attribute
    assert list(item.value_token_spans) == list(ATTRIBUTES)
    # " May", " 1,", " 1990": tokens 4 to 6 of the text
    assert item.value_token_spans["birth_date"] == (len(prefix) + 4, len(prefix) + 7)


def test_token_at_is_the_first_token_reaching_past_a_character() -> None:
    offsets = [(0, 4), (4, 8), (8, 9)]
    assert ex._token_at(offsets, 0) == 0
    assert ex._token_at(offsets, 3) == 0
    assert ex._token_at(offsets, 4) == 1
    assert ex._token_at(offsets, 8) == 2
    with pytest.raises(ValueError) as caught:
        ex._token_at(offsets, 9)
    assert str(caught.value) == "no token covers character 9"


def test_bio_examples_all_tokens_or_only_the_values() -> None:
    item = BioItem(0, [1, 20, 21, 22, 23, 24, 2], {"a": (2, 4), "b": (5, 6)})
    full = ex.bio_examples([item])
    assert full == [Example([1, 20, 21, 22, 23, 24, 2], [1, 20, 21, 22, 23, 24, 2], "bio")]
    assert full[0].labels is not item.input_ids
    values = ex.bio_examples([item, item], values_only=True)
    assert values[0] == Example(item.input_ids, [IGNORE, IGNORE, 21, 22, IGNORE, 24, IGNORE],
                                "bio")
    assert len(values) == 2 and values[1] == values[0]
    assert ex.bio_examples([item], values_only=False) == full
