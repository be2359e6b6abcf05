"""Fact recall: exact match and first-token accuracy on QA, first-token recall of BIO values.

Greedy exact match is decided in one teacher-forced forward pass: greedy decoding reproduces the
answer and then stops iff every answer token and the end token is the argmax given the true
prefix. `generate_answers` (batched `generate` with a KV cache and left padding) is kept for
showing answers, and tests check that both agree question by question. `qa_scores` and `bio_hits`
split the items across processes when several train a run together (one process: no split).
Under FSDP2 every forward gathers each layer from all processes, so every process runs as many
forwards as the one with the most items (the others end with one-token forwards), and scoring runs
under `no_grad` rather than `inference_mode` (FSDP2 must not allocate its gathered parameters as
inference tensors that training later writes).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from factrecall_bench import distributed
from factrecall_bench.data.examples import BioItem, QAItem
from factrecall_bench.metrics import Metric
from factrecall_bench.verdicts.stats import wilson_interval

if TYPE_CHECKING:
    from factrecall_bench.data.facts import FactData


@dataclass(frozen=True)
class QAScores:
    """Per-question correctness, in the order of the questions scored."""

    question_ids: list[str]
    attributes: list[str]
    exact_match: list[int]
    first_token: list[int]


def right_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right with pad_id, and the mask of the real tokens."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        mask[row, :len(sequence)] = 1
    return ids, mask


def _argmax_predictions(model: torch.nn.Module, sequences: list[list[int]], pad_id: int
                        ) -> torch.Tensor:
    """[batch, width] argmax of the next-token logits at every position."""
    device = next(model.parameters()).device
    ids, mask = right_padded(sequences, pad_id)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return logits.argmax(dim=-1).cpu()


def _length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@contextlib.contextmanager
def _scoring(model: torch.nn.Module) -> Iterator[None]:
    """No autograd while scoring. Under FSDP2: `no_grad`, and afterwards the model back to its
    shards (FSDP2 leaves the root's parameters gathered after a forward without backward, and an
    optimizer, checkpoint or trace made from there would miss the shards)."""
    if not distributed.is_sharded(model):
        with torch.inference_mode():
            yield
        return
    with torch.no_grad():
        yield
    distributed.reshard(model)


def _forwards_per_process(model: torch.nn.Module, n_items: int, batch_size: int) -> int:
    """Under FSDP2, the batches of the process with the most items; else 0 (no padding)."""
    if not distributed.is_sharded(model):
        return 0
    return math.ceil(math.ceil(n_items / distributed.world_size()) / batch_size)


def _pad_forwards(model: torch.nn.Module, done: int, needed: int, pad_id: int) -> None:
    """One-token forwards until `needed` forwards were run in all."""
    for _ in range(needed - done):
        _argmax_predictions(model, [[pad_id]], pad_id)


def score_qa(model: torch.nn.Module, items: list[QAItem], pad_id: int, batch_size: int = 128,
             forwards: int = 0) -> QAScores:
    """Exact match and first-token accuracy per question (at least `forwards` forward passes)."""
    model.eval()
    exact = [0] * len(items)
    first = [0] * len(items)
    lengths = [len(item.prompt_ids) + len(item.answer_ids) for item in items]
    batches = _length_sorted_batches(lengths, batch_size)
    with _scoring(model):
        for indices in batches:
            batch = [items[i] for i in indices]
            predictions = _argmax_predictions(model, [i.prompt_ids + i.answer_ids for i in batch],
                                              pad_id)
            for row, (index, item) in enumerate(zip(indices, batch)):
                start = len(item.prompt_ids) - 1
                predicted = predictions[row, start:start + len(item.answer_ids)].tolist()
                exact[index] = int(predicted == item.answer_ids)
                first[index] = int(predicted[0] == item.answer_ids[0])
        _pad_forwards(model, len(batches), forwards, pad_id)
    return QAScores([i.question_id for i in items], [i.attribute for i in items], exact, first)


def score_bio_values(model: torch.nn.Module, items: list[BioItem], pad_id: int,
                     batch_size: int = 64, forwards: int = 0) -> list[dict[str, int]]:
    """Per biography and attribute, 1 where the value's first token is the argmax after its true
    prefix (at least `forwards` forward passes)."""
    model.eval()
    hits: list[dict[str, int]] = []
    starts = range(0, len(items), batch_size)
    with _scoring(model):
        for start in starts:
            batch = items[start:start + batch_size]
            predictions = _argmax_predictions(model, [item.input_ids for item in batch], pad_id)
            for row, item in enumerate(batch):
                hits.append({attribute: int(predictions[row, token_start - 1].item()
                                            == item.input_ids[token_start])
                             for attribute, (token_start, _) in item.value_token_spans.items()})
        _pad_forwards(model, len(starts), forwards, pad_id)
    return hits


def hits_by_attribute(per_item: list[dict[str, int]]) -> dict[str, list[int]]:
    correct: dict[str, list[int]] = defaultdict(list)
    for item_hits in per_item:
        for attribute, hit in item_hits.items():
            correct[attribute].append(hit)
    return dict(correct)


def qa_scores(model: torch.nn.Module, questions: list[QAItem], pad_id: int, batch_size: int
              ) -> QAScores:
    """`score_qa` with the questions split across processes (all of them must call it)."""
    local = score_qa(model, distributed.shard(questions), pad_id, batch_size,
                     forwards=_forwards_per_process(model, len(questions), batch_size))
    hits = distributed.gather_shards(list(zip(local.exact_match, local.first_token)))
    return QAScores([q.question_id for q in questions], [q.attribute for q in questions],
                    [exact for exact, _ in hits], [first for _, first in hits])


def bio_hits(model: torch.nn.Module, people: list[BioItem], pad_id: int, batch_size: int
             ) -> dict[str, list[int]]:
    """BIO value recall per attribute, biographies split across processes (all must call it)."""
    local = score_bio_values(model, distributed.shard(people), pad_id, batch_size,
                             forwards=_forwards_per_process(model, len(people), batch_size))
    return hits_by_attribute(distributed.gather_shards(local))


def generate_answers(model: torch.nn.Module, items: list[QAItem], pad_id: int, eos_id: int,
                     batch_size: int = 64, max_new_tokens: int = 16) -> list[list[int]]:
    """Greedy answers (up to and including the end token) by batched, left-padded `generate`.

    Under FSDP2 every process must call it (with the same items): each forward gathers the
    layers from all of them."""
    model.eval()
    device = next(model.parameters()).device
    answers: list[list[int]] = []
    with _scoring(model):
        for start in range(0, len(items), batch_size):
            prompts = [item.prompt_ids for item in items[start:start + batch_size]]
            width = max(len(prompt) for prompt in prompts)
            ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                                device=device)
            output = model.generate(  # type: ignore[operator]
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                pad_token_id=pad_id, eos_token_id=eos_id, use_cache=True,
                synced_gpus=distributed.is_sharded(model))  # FSDP2: on until all processes end
            answers.extend(_until_eos(row[width:].tolist(), eos_id) for row in output)
    return answers


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[:tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def proportion(successes: list[int]) -> dict[str, float]:
    """A proportion with its 95% Wilson interval and sample size."""
    n = len(successes)
    low, high = wilson_interval(sum(successes), n)
    return {"value": sum(successes) / n if n else 0.0, "low": low, "high": high, "n": n}


def per_attribute(scores: QAScores, field: str) -> dict[str, dict[str, float]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for attribute, hit in zip(scores.attributes, getattr(scores, field)):
        grouped[attribute].append(hit)
    return {attribute: proportion(hits) for attribute, hits in grouped.items()}


# ---------------------------------------------------------------------------------------------
# Sources: the item sets a metric (metrics.Metric.source) is computed from


@dataclass(frozen=True)
class ItemScores:
    """One source's per-item 0/1 scores, each item with its attribute; QA keeps its QAScores
    (result.json's `per_question`)."""

    attributes: list[str]
    scores: dict[str, list[int]]
    """Score name (a Metric's `score`) -> one 0/1 per item."""
    qa: QAScores | None = None


def _qa_item_scores(scores: QAScores) -> ItemScores:
    return ItemScores(scores.attributes, {"exact_match": scores.exact_match,
                                          "first_token": scores.first_token}, scores)


def _bio_item_scores(by_attribute: dict[str, list[int]]) -> ItemScores:
    """Items attribute by attribute, in the order the attributes were first met."""
    attributes = [attribute for attribute, hits in by_attribute.items() for _ in hits]
    return ItemScores(attributes, {"first_token": [h for hits in by_attribute.values()
                                                   for h in hits]})


Scorer = Callable[[torch.nn.Module, "FactData", int], ItemScores]
"""(model, data, batch size) -> the source's ItemScores; every process must call it."""


def _id_questions(model: torch.nn.Module, data: FactData, batch_size: int) -> ItemScores:
    return _qa_item_scores(qa_scores(model, data.id_questions, data.pad_id, batch_size))


def _ood_questions(model: torch.nn.Module, data: FactData, batch_size: int) -> ItemScores:
    return _qa_item_scores(qa_scores(model, data.ood_questions, data.pad_id, batch_size))


def _bio_train(model: torch.nn.Module, data: FactData, batch_size: int) -> ItemScores:
    return _bio_item_scores(bio_hits(model, data.bio_train_people, data.pad_id, batch_size))


def _bio_test(model: torch.nn.Module, data: FactData, batch_size: int) -> ItemScores:
    return _bio_item_scores(bio_hits(model, data.bio_test_people, data.pad_id, batch_size))


SCORERS: dict[str, Scorer] = {"id": _id_questions, "ood": _ood_questions,
                              "bio_train": _bio_train, "bio_test": _bio_test}
"""Source name -> how its items are scored (a new kind of score is added here)."""


def scored_sources(model: torch.nn.Module, data: FactData, batch_size: int,
                   sources: Iterable[str]) -> dict[str, ItemScores]:
    """Each source scored once, in the order given (the same in every process)."""
    unknown = [source for source in sources if source not in SCORERS]
    if unknown:
        raise ValueError(f"unknown metric source(s) {unknown} (known: {', '.join(SCORERS)})")
    return {source: SCORERS[source](model, data, batch_size) for source in sources}


def metric_hits(metric: Metric, scored: dict[str, ItemScores]) -> list[int]:
    """The metric's per-item 0/1 scores."""
    try:
        return scored[metric.source].scores[metric.score]
    except KeyError:
        raise ValueError(f"metric {metric.name}: source {metric.source!r} has no score "
                         f"{metric.score!r}") from None


def per_attribute_of(metric: Metric, scored: dict[str, ItemScores]) -> dict[str, dict[str, float]]:
    """The metric's proportion per attribute, attributes in the order first met."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for attribute, hit in zip(scored[metric.source].attributes, metric_hits(metric, scored)):
        grouped[attribute].append(hit)
    return {attribute: proportion(hits) for attribute, hits in grouped.items()}
