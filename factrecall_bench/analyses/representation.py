"""Representation consistency: how alike the hidden states of the storage form (the biography, at
the position that predicts an attribute's value) and the query form (the question, at the position
that predicts the answer) of the same fact are, per layer: mean cosine over facts and linear CKA
(Kornblith et al., ICML 2019) over people, with mismatched pairs (another person, same attribute)
as the chance control.

Layer 0 is the embedding output; layer L the last block's output as the model returns it
(transformers applies the final norm to it for Llama and NeoX).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from factrecall_bench.analyses.settings import RepresentationSettings
from factrecall_bench.data.examples import BioItem, QAItem
from factrecall_bench.evaluate import right_padded


@dataclass(frozen=True)
class FactPair:
    """One fact in its storage form and its query form, each with the predicting position."""

    person_id: int
    attribute: str
    storage_ids: list[int]
    storage_position: int
    query_ids: list[int]
    query_position: int


def person_of(question: QAItem) -> int:
    """The person a question asks about (question ids are "p<person>/<attribute>")."""
    return int(question.question_id.split("/", 1)[0].removeprefix("p"))


def fact_pairs(bios: Sequence[BioItem], questions: Sequence[QAItem],
               settings: RepresentationSettings) -> list[FactPair]:
    """Pairs of every sampled person with a biography and questions, attribute by attribute (people
    missing a question for some attribute are left out, so each attribute has the same people)."""
    asked = {(person_of(q), q.attribute): q for q in questions}
    complete = [bio for bio in bios
                if all((bio.person_id, a) in asked for a in settings.attributes)]
    rng = np.random.default_rng([settings.seed, 3])
    if settings.max_people and len(complete) > settings.max_people:
        chosen = sorted(rng.choice(len(complete), settings.max_people, replace=False).tolist())
        complete = [complete[i] for i in chosen]
    pairs = []
    for attribute in settings.attributes:
        for bio in complete:
            question = asked[(bio.person_id, attribute)]
            pairs.append(FactPair(bio.person_id, attribute, bio.input_ids,
                                  bio.value_token_spans[attribute][0] - 1,
                                  question.prompt_ids + question.answer_ids,
                                  len(question.prompt_ids) - 1))
    return pairs


@torch.no_grad()
def hidden_states_at(model: nn.Module, sequences: Sequence[list[int]], positions: Sequence[int],
                     pad_id: int, batch_size: int = 32, distinct_once: bool = False) -> Tensor:
    """[layers + 1, n, hidden] fp32 hidden states, each sequence at its position (right padding:
    positions of the real tokens are unchanged). With `distinct_once`, a sequence given several
    times (a biography, once per attribute) is run once and read at each of its positions."""
    model.eval()
    device = next(model.parameters()).device
    distinct: dict[tuple[int, ...], list[int]] = {}  # sequence -> the rows that read it
    for row, sequence in enumerate(sequences):
        distinct.setdefault(tuple(sequence) if distinct_once else (row, *sequence), []).append(row)
    runs = list(distinct.values())
    states: Tensor | None = None
    for start in range(0, len(runs), batch_size):
        batch = runs[start:start + batch_size]
        ids, mask = right_padded([list(sequences[rows[0]]) for rows in batch], pad_id)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    output_hidden_states=True)
        stacked = torch.stack(out.hidden_states)  # [layers + 1, batch, length, hidden]
        if states is None:
            states = torch.zeros(stacked.shape[0], len(sequences), stacked.shape[-1])
        for index, rows in enumerate(batch):
            for row in rows:
                states[:, row] = stacked[:, index, positions[row]].float().cpu()
    assert states is not None, "no sequences"
    return states


def cosine_per_layer(a: Tensor, b: Tensor) -> list[float]:
    """Mean over rows of cos(a[l, i], b[l, i]), per layer l ([layers, n, hidden] inputs)."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean(1).tolist()


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two [n, features] matrices: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
    with column-centred Xc, Yc (0.0 when either has no variance)."""
    xc = x.double() - x.double().mean(0, keepdim=True)
    yc = y.double() - y.double().mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    norms = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(cross / norms) if norms > 0 else 0.0


def cka_per_layer(storage: Tensor, query: Tensor, attributes: Sequence[str],
                  settings: RepresentationSettings) -> list[float]:
    """Per layer, CKA over people (mean over attributes) or over all facts."""
    if settings.cka_over == "facts":
        return [linear_cka(s, q) for s, q in zip(storage, query, strict=True)]
    labels = np.array(attributes)
    rows = [torch.from_numpy(labels == a) for a in dict.fromkeys(attributes)]
    per_attribute = [[linear_cka(s[r], q[r]) for r in rows]
                     for s, q in zip(storage, query, strict=True)]
    return [float(np.mean(values)) for values in per_attribute]


def mismatched(query: Tensor, attributes: Sequence[str]) -> Tensor:
    """The query states rolled by one person inside each attribute: another person's question."""
    rolled = query.clone()
    labels = np.array(attributes)
    for attribute in dict.fromkeys(attributes):
        rows = torch.from_numpy(np.flatnonzero(labels == attribute))
        rolled[:, rows] = query[:, rows.roll(1)]
    return rolled


def consistency_of(model: nn.Module, pairs: Sequence[FactPair], pad_id: int,
                   settings: RepresentationSettings) -> dict[str, Any]:
    """Cosine and CKA per layer for one group of facts, with the mismatched control."""
    if not pairs:
        return {"n_people": 0, "n_pairs": 0}
    storage = hidden_states_at(model, [p.storage_ids for p in pairs],
                               [p.storage_position for p in pairs], pad_id, settings.batch_size,
                               distinct_once=True)
    query = hidden_states_at(model, [p.query_ids for p in pairs],
                             [p.query_position for p in pairs], pad_id, settings.batch_size)
    attributes = [p.attribute for p in pairs]
    other = mismatched(query, attributes)
    return {"n_people": len({p.person_id for p in pairs}), "n_pairs": len(pairs),
            "cosine": cosine_per_layer(storage, query),
            "cosine_mismatched": cosine_per_layer(storage, other),
            "cka": cka_per_layer(storage, query, attributes, settings),
            "cka_mismatched": cka_per_layer(storage, other, attributes, settings)}


def representation_analysis(model: nn.Module,
                            groups: Mapping[str, tuple[Sequence[BioItem], Sequence[QAItem]]],
                            pad_id: int, settings: RepresentationSettings) -> dict[str, Any]:
    """Per group of people (e.g. p_train, p_test): consistency_of its storage/query pairs."""
    return {"settings": settings.to_dict(),
            "groups": {name: consistency_of(model, fact_pairs(bios, questions, settings), pad_id,
                                            settings)
                       for name, (bios, questions) in groups.items()}}
