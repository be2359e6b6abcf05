"""Per-sample answers (in the spirit of lm-eval's `--log_samples`): what the model answered to
every ID and OOD question, and what each wrong answer was.

A run with `log_samples` writes `samples.jsonl` (one line per question) and
`samples-summary.json` (counts of wrong answers by kind) into its folder, atomically, before
result.json. Answers come from greedy batched generation (`evaluate.generate_answers`), so a
line's `exact_match` is measured independently of result.json's teacher-forced one; the two
agree question by question (tested), and a run says so in a `warning` event if they do not.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from factrecall_bench.data.examples import QAItem
from factrecall_bench.data.facts import FactData
from factrecall_bench.data.pools import ATTRIBUTES
from factrecall_bench.evaluate import generate_answers
from factrecall_bench.io import write_json_atomic, write_text_atomic
from factrecall_bench.runfolder import SAMPLES_SUMMARY_SCHEMA_VERSION, WRONG_KINDS, RunFolder

SAMPLES_FILE = RunFolder.SAMPLES
SUMMARY_FILE = RunFolder.SAMPLES_SUMMARY
SUMMARY_SCHEMA_VERSION = SAMPLES_SUMMARY_SCHEMA_VERSION
EXTRA_TOKENS = 4
"""Greedy answers stop at the end token or this many tokens past the target's length."""

@dataclass(frozen=True)
class People:
    """Every person's attribute values and group, for telling wrong answers apart."""

    values: dict[int, dict[str, str]]
    """person_id -> attribute -> value."""
    in_train: dict[int, bool]
    """person_id -> whether the person is in P_train."""

    @classmethod
    def from_table(cls, people: datasets.Dataset, attributes: tuple[str, ...]) -> People:
        rows = people[:]
        values = {int(pid): {a: rows[a][i] for a in attributes}
                  for i, pid in enumerate(rows["person_id"])}
        in_train = {int(pid): group == "train" for pid, group in zip(rows["person_id"], rows["group"])}
        return cls(values, in_train)

    def holders(self, attribute: str, value: str) -> list[int]:
        return [pid for pid, person in self.values.items() if person.get(attribute) == value]


@dataclass(frozen=True)
class ValueFrequencies:
    """How many people hold each value of one attribute, and which values P_train people hold:
    enough to say how often a random other person's value is "a P_train person's value"."""

    held_by: Counter[str]
    """value -> how many people hold it."""
    held_in_train: frozenset[str]
    """The values some P_train person holds."""
    people_with_train_values: int
    """How many people hold a value in `held_in_train` (P_train people and others)."""
    people: int
    """How many people there are."""

    @classmethod
    def of(cls, people: People, attribute: str) -> ValueFrequencies:
        held_by = Counter(person[attribute] for person in people.values.values())
        in_train = frozenset(person[attribute] for pid, person in people.values.items()
                             if people.in_train[pid])
        return cls(held_by, in_train, sum(held_by[value] for value in in_train),
                   len(people.values))

    def p_train_chance(self, own_value: str) -> float | None:
        """The chance that a wrong answer drawn from the other people's values (each person
        once, only values that differ from `own_value`) is a value some P_train person holds;
        None when every person holds `own_value`."""
        own_count = self.held_by[own_value]
        others = self.people - own_count
        if others == 0:
            return None
        own_in_train = own_count if own_value in self.held_in_train else 0
        return (self.people_with_train_values - own_in_train) / others


def classify_wrong_answer(answer: str, person_id: int, attribute: str, people: People) -> str:
    """One of WRONG_KINDS for a wrong answer (compared as text, surrounding spaces ignored)."""
    answer = answer.strip()
    own = people.values[person_id]
    if any(value.strip() == answer for other, value in own.items() if other != attribute):
        return "wrong_attribute"
    others = [pid for pid in people.holders(attribute, answer) if pid != person_id]
    if any(people.in_train[pid] for pid in others):
        return "p_train_value"
    if others:
        return "p_test_value"
    return "other"


def _text(tokenizer: PreTrainedTokenizerBase, tokens: list[int]) -> str:
    return str(tokenizer.decode(tokens, skip_special_tokens=True)).strip()


def sample_lines(split: str, items: list[QAItem], answers: list[list[int]],
                 questions: dict[str, dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                 people: People) -> list[dict[str, Any]]:
    """One line per question: the question, the target, the greedy answer and what it was."""
    eos = tokenizer.eos_token_id
    frequencies = {attribute: ValueFrequencies.of(people, attribute)
                   for attribute in {item.attribute for item in items}}
    lines = []
    for item, answer in zip(items, answers):
        row = questions[item.question_id]
        own_value = people.values[int(row["person_id"])][item.attribute]
        exact = int(answer == item.answer_ids)
        text = _text(tokenizer, [t for t in answer if t != eos])
        lines.append({
            "split": split, "question_id": item.question_id, "person_id": int(row["person_id"]),
            "attribute": item.attribute, "prompt": row["prompt"], "target": row["answer"],
            "greedy_answer": text, "ended": bool(answer) and answer[-1] == eos,
            "first_token_prediction": tokenizer.decode(answer[:1]) if answer else "",
            "exact_match": exact, "first_token": int(answer[:1] == item.answer_ids[:1]),
            "wrong_kind": None if exact else classify_wrong_answer(
                text, int(row["person_id"]), item.attribute, people),
            "p_train_chance": frequencies[item.attribute].p_train_chance(own_value),
        })
    return lines


def greedy_answers(model: torch.nn.Module, items: list[QAItem], tokenizer: PreTrainedTokenizerBase,
                   batch_size: int) -> list[list[int]]:
    """Greedy answers, each cut at its target's length plus EXTRA_TOKENS (so an answer does not
    depend on the longest target of its batch)."""
    if not items:
        return []
    longest = max(len(item.answer_ids) for item in items)
    answers = generate_answers(model, items, int(tokenizer.pad_token_id), int(tokenizer.eos_token_id),
                               batch_size=batch_size, max_new_tokens=longest + EXTRA_TOKENS)
    return [answer[:len(item.answer_ids) + EXTRA_TOKENS] for answer, item in zip(answers, items)]


def question_table(dataset: datasets.DatasetDict) -> dict[str, dict[str, Any]]:
    """question_id -> the dataset's row (person_id, attribute, prompt, answer), both QA splits."""
    table = {}
    for split in ("qa_train", "qa_test"):
        rows = dataset[split][:]
        for index, question_id in enumerate(rows["question_id"]):
            table[question_id] = {column: rows[column][index] for column in rows}
    return table


def collect_samples(model: torch.nn.Module, data: FactData, dataset: datasets.DatasetDict,
                    batch_size: int) -> list[dict[str, Any]]:
    """Every ID question's line, then every OOD question's (in the order result.json scores them).
    Under FSDP2 every process must call it."""
    questions = question_table(dataset)
    people = People.from_table(dataset["people"], ATTRIBUTES)
    lines: list[dict[str, Any]] = []
    for split, items in (("id", data.id_questions), ("ood", data.ood_questions)):
        answers = greedy_answers(model, items, data.tokenizer, batch_size)
        lines += sample_lines(split, items, answers, questions, data.tokenizer, people)
    return lines


PEOPLE_VALUE_KINDS = ("p_train_value", "p_test_value")
"""Wrong answers that are another person's value of the asked attribute."""


def summarize(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per split: questions, wrong answers, wrong answers by kind (every kind listed), and how
    many of those that are another person's value would be a P_train person's by chance."""
    summary = {}
    for split in ("id", "ood"):
        members = [line for line in lines if line["split"] == split]
        kinds = Counter(line["wrong_kind"] for line in members if not line["exact_match"])
        summary[split] = {"questions": len(members), "wrong": sum(kinds.values()),
                          "wrong_kinds": {kind: kinds.get(kind, 0) for kind in WRONG_KINDS},
                          "p_train_value_by_chance": _p_train_value_by_chance(members)}
    return summary


def _p_train_value_by_chance(lines: list[dict[str, Any]]) -> float:
    """The expected count of `p_train_value` among the wrong answers that are some other
    person's value, were each a random other person's value (the sum of their chances)."""
    return sum((line.get("p_train_chance") or 0.0 for line in lines
                if line["wrong_kind"] in PEOPLE_VALUE_KINDS), 0.0)


def summary_document(result_keys: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """samples-summary.json: the run's identity (run_id, strategy, ...) and `summarize`."""
    return {"schema_version": SUMMARY_SCHEMA_VERSION, **result_keys, **summarize(lines)}


def disagreements(lines: list[dict[str, Any]], per_question: dict[str, dict[str, list[Any]]]
                  ) -> list[str]:
    """Questions whose sampled exact match differs from result.json's `per_question`."""
    scored = {qid: hit for split in per_question.values()
              for qid, hit in zip(split["question_ids"], split["exact_match"])}
    return [line["question_id"] for line in lines if scored.get(line["question_id"]) != line["exact_match"]]


def write_samples(folder: Path, lines: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    write_text_atomic(folder / SAMPLES_FILE,
                      "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    write_json_atomic(folder / SUMMARY_FILE, summary)


def read_samples(folder: Path) -> list[dict[str, Any]]:
    path = folder / SAMPLES_FILE
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def read_summary(folder: Path) -> dict[str, Any] | None:
    """A run's samples-summary.json, or None (not written, unreadable, another version)."""
    return RunFolder(folder).read_samples_summary()
