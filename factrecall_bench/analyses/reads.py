"""What the model reads: the share of each predicted value's attribution that falls on the subject
(the person's name, and in the value's sentence the pronoun standing for it), on the relation (the
rest of the value's sentence before the value, or of the question) and on the rest of the context,
by occlusion of token groups or by gradient x input embedding. Storage (BIO) and query (QA) formats
are measured the same way. Special prefix tokens (BOS) are in no group and never occluded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from factrecall_bench.analyses.settings import ReadsSettings

GROUPS = ("subject", "relation", "rest")
PRONOUN = re.compile(r"\b(he|she|his|her|him)\b", re.IGNORECASE)


@dataclass(frozen=True)
class ReadItem:
    """One value to predict: the context up to the predicting position, the value's first token,
    and the context's token indices per group."""

    input_ids: list[int]
    target: int
    groups: dict[str, list[int]]


Span = tuple[int, int]


def _overlaps(token: Span, spans: Sequence[Span]) -> bool:
    return any(token[0] < end and token[1] > start for start, end in spans)


def token_groups(offsets: Sequence[Span], n_context: int, subject: Sequence[Span],
                 relation: Sequence[Span], shift: int = 0) -> dict[str, list[int]]:
    """Token indices per group for the first n_context tokens: a token overlapping a subject span
    is subject, else one overlapping a relation span is relation, else rest. Token i has character
    offsets offsets[i - shift] (shift = special prefix tokens, which are in no group)."""
    groups: dict[str, list[int]] = {group: [] for group in GROUPS}
    for index in range(shift, n_context):
        token = offsets[index - shift]
        group = ("subject" if _overlaps(token, subject)
                 else "relation" if _overlaps(token, relation) else "rest")
        groups[group].append(index)
    return groups


def occurrences(text: str, word: str, end: int) -> list[Span]:
    """Character spans of `word` in text[:end]."""
    return [(m.start(), m.end()) for m in re.finditer(re.escape(word), text[:end])]


def sentence_start(text: str, value_start: int, value_ends: Sequence[int]) -> int:
    """Start of the sentence holding a value: after the first ". " that follows the previous
    value's end (biographies are sentences joined by spaces, one value each)."""
    before = [end for end in value_ends if end <= value_start]
    if not before:
        return 0
    stop = text.find(". ", max(before))
    return stop + 2 if 0 <= stop < value_start else max(before)


def bio_character_groups(text: str, name: str, value: Span, value_ends: Sequence[int],
                         subject_pronouns: bool) -> tuple[list[Span], list[Span]]:
    """(subject spans, relation spans) of the context of one value of a biography."""
    start = sentence_start(text, value[0], value_ends)
    subject = occurrences(text, name, value[0])
    if subject_pronouns:
        subject += [(start + m.start(), start + m.end())
                    for m in PRONOUN.finditer(text[start:value[0]])]
    return subject, [(start, value[0])]


def qa_character_groups(prompt: str, name: str) -> tuple[list[Span], list[Span]]:
    """(subject, relation) spans of a question: the name; the question's other words up to "?"
    (the " Answer:" cue is rest)."""
    end = prompt.find("?") + 1 or len(prompt)
    return occurrences(prompt, name, len(prompt)), [(0, end)]


def sample(items: Sequence[ReadItem], max_items: int, seed: int, salt: int) -> list[ReadItem]:
    if not max_items or len(items) <= max_items:
        return list(items)
    rng = np.random.default_rng([seed, 5, salt])
    return [items[i] for i in sorted(rng.choice(len(items), max_items, replace=False).tolist())]


def _padded(sequences: Sequence[list[int]], masks: Sequence[list[int]], pad_id: int
            ) -> tuple[Tensor, Tensor]:
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (sequence, keep) in enumerate(zip(sequences, masks, strict=True)):
        ids[row, :len(sequence)] = torch.tensor(sequence)
        mask[row, :len(sequence)] = torch.tensor(keep)
    return ids, mask


@torch.no_grad()
def last_log_probs(model: nn.Module, sequences: Sequence[list[int]], masks: Sequence[list[int]],
                   targets: Sequence[int], pad_id: int, batch_size: int
                   ) -> tuple[list[float], list[bool]]:
    """log p(target) at each sequence's last position, and whether the target is the argmax.
    Sequences are batched by length (less padding) and the LM head runs at the last positions
    only: the vocabulary projection of every position would cost more than the model."""
    device = next(model.parameters()).device
    log_probs, argmax = [0.0] * len(sequences), [False] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, mask = _padded([sequences[i] for i in rows], [masks[i] for i in rows], pad_id)
        last = torch.tensor([len(sequences[i]) - 1 for i in rows], device=device)
        at = _logits_at(model, ids.to(device), mask.to(device), last).log_softmax(-1).cpu()
        for index, row in enumerate(rows):
            log_probs[row] = float(at[index, targets[row]])
            argmax[row] = bool(at[index].argmax() == targets[row])
    return log_probs, argmax


def _logits_at(model: nn.Module, ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """fp32 logits at one position per row: a transformers causal LM runs its decoder, then the LM
    head on those states only; any other model (a scripted one in tests) its whole forward."""
    causal_lm: Any = model  # transformers' methods, which torch's Module type does not know
    rows = torch.arange(len(positions))
    head = causal_lm.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return causal_lm(input_ids=ids, attention_mask=mask).logits[rows, positions].float()
    decoder = causal_lm.get_decoder() if hasattr(model, "get_decoder") else causal_lm.base_model
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return head(hidden[rows, positions]).float()


def occluded(item: ReadItem, group: str, mode: str, pad_id: int) -> tuple[list[int], list[int]]:
    """The item's ids and attention mask with one group occluded."""
    ids, mask = list(item.input_ids), [1] * len(item.input_ids)
    for index in item.groups[group]:
        if mode == "replace":
            ids[index] = pad_id
        else:
            mask[index] = 0
    return ids, mask


def occlusion_scores(model: nn.Module, items: Sequence[ReadItem], pad_id: int,
                     settings: ReadsSettings, full_lp: Sequence[float] | None = None
                     ) -> list[dict[str, float]]:
    """Per item and group, max(0, log p(target) - log p(target | group occluded)); `full_lp`,
    the items' log p(target) unoccluded, where the caller has it already."""
    variants = [occluded(item, group, settings.occlusion, pad_id)
                for item in items for group in GROUPS]
    occluded_lp, _ = last_log_probs(model, [v[0] for v in variants], [v[1] for v in variants],
                                    [item.target for item in items for _ in GROUPS], pad_id,
                                    settings.batch_size)
    if full_lp is None:
        full_lp, _ = last_log_probs(model, [item.input_ids for item in items],
                                    [[1] * len(item.input_ids) for item in items],
                                    [item.target for item in items], pad_id, settings.batch_size)
    per_item = np.array(occluded_lp).reshape(len(items), len(GROUPS))
    return [{group: max(0.0, full - float(row[g])) for g, group in enumerate(GROUPS)}
            for full, row in zip(full_lp, per_item, strict=True)]


def grad_x_input_scores(model: nn.Module, items: Sequence[ReadItem], pad_id: int,
                        settings: ReadsSettings) -> list[dict[str, float]]:
    """Per item and group, sum over its tokens of |d log p(target) / d e_t . e_t|."""
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()  # type: ignore[operator]
    scores = []
    for item in items:
        ids = torch.tensor([item.input_ids], device=device)
        vectors = embed(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=vectors).logits[0, -1].float()
        logits.log_softmax(-1)[item.target].backward()
        assert vectors.grad is not None
        per_token = (vectors.grad * vectors).sum(-1)[0].abs().detach().cpu()
        scores.append({group: float(per_token[item.groups[group]].sum()) for group in GROUPS})
    model.zero_grad(set_to_none=True)
    return scores


def shares_of(scores: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Mean over items of each group's share of the item's total (items with total 0 skipped)."""
    totals = [sum(score.values()) for score in scores]
    informative = [(s, t) for s, t in zip(scores, totals, strict=True) if t > 0]
    share = {group: float(np.mean([s[group] / t for s, t in informative])) if informative else None
             for group in GROUPS}
    raw = {group: float(np.mean([s[group] for s in scores])) if scores else None
           for group in GROUPS}
    return {"share": share, "mean_score": raw, "n_informative": len(informative)}


def reads_of(model: nn.Module, items: Sequence[ReadItem], pad_id: int, settings: ReadsSettings
             ) -> dict[str, Any]:
    """Attribution shares per group for one format's items."""
    model.eval()
    full_lp, correct = last_log_probs(model, [i.input_ids for i in items],
                                      [[1] * len(i.input_ids) for i in items],
                                      [i.target for i in items], pad_id, settings.batch_size)
    chosen = [index for index, ok in enumerate(correct) if ok or not settings.only_correct]
    kept = [items[index] for index in chosen]
    if not kept:
        scores: list[dict[str, float]] = []
    elif settings.method == "occlusion":  # the unoccluded pass above is reused
        scores = occlusion_scores(model, kept, pad_id, settings, [full_lp[i] for i in chosen])
    else:
        scores = grad_x_input_scores(model, kept, pad_id, settings)
    tokens = {group: float(np.mean([len(i.groups[group]) for i in kept])) if kept else None
              for group in GROUPS}
    return {"n_items": len(items), "n_scored": len(kept),
            "first_token_accuracy": float(np.mean(correct)) if items else None,
            "mean_tokens": tokens, **shares_of(scores)}


def reads_analysis(model: nn.Module, items_by_format: Mapping[str, Sequence[ReadItem]],
                   pad_id: int, settings: ReadsSettings) -> dict[str, Any]:
    """Per format (e.g. bio, qa_id, qa_ood): reads_of a seeded sample of its items."""
    return {"settings": settings.to_dict(), "groups": list(GROUPS),
            "formats": {name: reads_of(model, sample(items, settings.max_items, settings.seed, i),
                                       pad_id, settings)
                        for i, (name, items) in enumerate(items_by_format.items())}}
