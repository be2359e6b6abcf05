"""Everything a run needs from the data: tokenizer, training examples, evaluation items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from factrecall_bench.config import DataSpec, EvalSpec, ModelSpec
from factrecall_bench.data.dataset import ensure_dataset, load_saved_dataset
from factrecall_bench.data.examples import (
    BioItem,
    Example,
    QAItem,
    bio_examples,
    bio_items,
    qa_examples,
    qa_items,
)
from factrecall_bench.data.tokenizer import ensure_tokenizer
from factrecall_bench.models import load_pretrained_tokenizer


@dataclass(frozen=True)
class FactData:
    """Tokenized training sources and evaluation sets of one dataset and tokenizer."""

    tokenizer: PreTrainedTokenizerBase
    examples: dict[str, list[Example]]
    """Training examples by source: `bio` (all people) and `qa_train` (QA of P_train)."""
    id_questions: list[QAItem]
    """QA of P_train: the in-distribution eval set."""
    ood_questions: list[QAItem]
    """QA of P_test: the out-of-distribution eval set (never trained)."""
    bio_train_people: list[BioItem]
    """First biography of each P_train person (BIO value recall)."""
    bio_test_people: list[BioItem]
    """First biography of each P_test person."""
    bio_all: list[BioItem]
    """Every biography (for probes that put the loss on the values only)."""

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def source_sizes(self) -> dict[str, int]:
        return {source: len(examples) for source, examples in self.examples.items()}


def _capped(rows: datasets.Dataset, cap: int) -> datasets.Dataset:
    return rows.select(range(min(cap, len(rows)))) if cap else rows


def load_fact_data(data: DataSpec, model: ModelSpec, evaluation: EvalSpec, data_root: Path,
                   values_only_bio_loss: bool = False) -> FactData:
    folder = ensure_dataset(data, data_root)
    dataset = load_saved_dataset(folder)
    tokenizer = (ensure_tokenizer(folder, dataset) if model.from_scratch
                 else load_pretrained_tokenizer(model))
    bios = bio_items(dataset["bio"], tokenizer)
    train_qa = qa_items(dataset["qa_train"], tokenizer)
    people = dataset["people"].select_columns(["person_id", "group"])[:]
    in_train = dict(zip(people["person_id"], (group == "train" for group in people["group"])))
    variants = dataset["bio"].select_columns(["variant"])[:]["variant"]
    first_bios = [item for item, variant in zip(bios, variants) if variant == 0]
    return FactData(
        tokenizer=tokenizer,
        examples={"bio": bio_examples(bios, values_only_bio_loss), "qa_train": qa_examples(train_qa)},
        id_questions=train_qa[:evaluation.max_questions or None],  # the first max_questions (0: all)
        ood_questions=qa_items(_capped(dataset["qa_test"], evaluation.max_questions), tokenizer),
        bio_train_people=[item for item in first_bios if in_train[item.person_id]],
        bio_test_people=[item for item in first_bios if not in_train[item.person_id]],
        bio_all=bios,
    )
