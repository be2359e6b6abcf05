"""Token-level training and evaluation examples: where the loss goes, where the answer starts.

QA: [bos] prompt " answer" [eos], loss on the answer tokens and the end token only.
BIO: [bos] " "+biography [eos], loss on every token (or only on the attribute values).
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
from transformers import PreTrainedTokenizerBase

from factrecall_bench.data.pools import ATTRIBUTES

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One tokenized sequence with its loss targets (`labels`, -100 where no loss)."""

    input_ids: list[int]
    labels: list[int]
    task: str


@dataclass(frozen=True)
class QAItem:
    """A tokenized question for evaluation."""

    question_id: str
    attribute: str
    prompt_ids: list[int]
    answer_ids: list[int]
    """The answer's tokens followed by the end token."""


@dataclass(frozen=True)
class BioItem:
    """A tokenized biography with the token span [start, end) of each attribute value."""

    person_id: int
    input_ids: list[int]
    value_token_spans: dict[str, tuple[int, int]]


def _prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def encode_answer(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """An answer's tokens as they follow "Answer:" (one leading space), then the end token."""
    return tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def qa_items(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase) -> list[QAItem]:
    rows = dataset[:]  # plain lists: a lazy column would format row by row
    prompts = tokenizer(rows["prompt"], add_special_tokens=False)["input_ids"]
    answers = tokenizer([f" {a}" for a in rows["answer"]], add_special_tokens=False)["input_ids"]
    prefix, eos = _prefix(tokenizer), tokenizer.eos_token_id
    return [QAItem(qid, attribute, prefix + prompt, answer + [eos])
            for qid, attribute, prompt, answer in zip(rows["question_id"], rows["attribute"],
                                                      prompts, answers)]


def qa_examples(items: list[QAItem]) -> list[Example]:
    return [Example(item.prompt_ids + item.answer_ids,
                    [IGNORE] * len(item.prompt_ids) + item.answer_ids, "qa") for item in items]


def bio_items(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase) -> list[BioItem]:
    """Biographies get a leading space, so the name opening them tokenizes as in a question."""
    rows = dataset[:]  # plain lists: a lazy column would format row by row
    texts = [f" {text}" for text in rows["text"]]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    prefix = _prefix(tokenizer)
    items = []
    for person, ids, offsets, starts, ends in zip(rows["person_id"], encoded["input_ids"],
                                                  encoded["offset_mapping"], rows["value_starts"],
                                                  rows["value_ends"]):
        spans = {attribute: (len(prefix) + _token_at(offsets, start),
                             len(prefix) + _token_at(offsets, end) + 1)
                 for attribute, start, end in zip(ATTRIBUTES, starts, ends)}
        items.append(BioItem(person, prefix + ids + [tokenizer.eos_token_id], spans))
    return items


def _token_at(offsets: list[tuple[int, int]], char_start: int) -> int:
    """Index of the first token that reaches past `char_start` (its leading space included)."""
    for index, (_, end) in enumerate(offsets):
        if end > char_start:
            return index
    raise ValueError(f"no token covers character {char_start}")


def bio_examples(items: list[BioItem], values_only: bool = False) -> list[Example]:
    """Loss on every token, or only on the attribute values' tokens."""
    if not values_only:
        return [Example(item.input_ids, list(item.input_ids), "bio") for item in items]
    examples = []
    for item in items:
        labels = [IGNORE] * len(item.input_ids)
        for start, end in item.value_token_spans.values():
            labels[start:end] = item.input_ids[start:end]
        examples.append(Example(item.input_ids, labels, "bio"))
    return examples
