"""A tokenizer trained on the corpus, for models trained from scratch.

Byte-level pre-tokenization splits before every space and around punctuation, so an attribute
value that follows a space tokenizes the same inside a biography and after "Answer:" (tests prove
it). The default model is word-level (one token per pre-token: a vocabulary of only the corpus'
words, which keeps the output layer of a tiny model small); `bpe` is there for larger corpora.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import datasets
from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from factrecall_bench.io import replace_dir_atomic

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"


def corpus_texts(dataset: datasets.DatasetDict, batch: int = 10_000) -> Iterator[list[str]]:
    """Batches of every text the models will see: biographies, questions, answers."""
    for start in range(0, len(dataset["bio"]), batch):
        yield dataset["bio"][start:start + batch]["text"]
    for split in ("qa_train", "qa_test"):
        rows = dataset[split]
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            yield [f"{p} {a}" for p, a in zip(chunk["prompt"], chunk["answer"])]


def _word_level() -> tuple[Tokenizer, trainers.Trainer]:
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, BOS, EOS, UNK], show_progress=False)
    return Tokenizer(models.WordLevel(unk_token=UNK)), trainer


def _bpe(vocab_size: int) -> tuple[Tokenizer, trainers.Trainer]:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, UNK],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    return Tokenizer(models.BPE(unk_token=UNK)), trainer


def train_tokenizer(dataset: datasets.DatasetDict, kind: str = "word", vocab_size: int = 8192
                    ) -> PreTrainedTokenizerFast:
    """Train a word-level or BPE tokenizer on the corpus (deterministic for the same corpus)."""
    tokenizer, trainer = _word_level() if kind == "word" else _bpe(vocab_size)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus_texts(dataset), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, unk_token=UNK)


def ensure_tokenizer(dataset_folder: Path, dataset: datasets.DatasetDict) -> PreTrainedTokenizerFast:
    """The dataset's own tokenizer, trained once and saved beside it."""
    folder = dataset_folder / "tokenizer"
    with FileLock(str(dataset_folder) + ".tokenizer.lock"):
        if not (folder / "tokenizer.json").exists():
            # A unique temp folder (a killed earlier attempt may have left one); an incomplete
            # tokenizer folder inside our own dataset cache is replaced.
            tmp = Path(tempfile.mkdtemp(dir=dataset_folder, prefix=".tokenizer.tmp-"))
            try:
                train_tokenizer(dataset).save_pretrained(str(tmp))
                replace_dir_atomic(tmp, folder, is_ours=lambda _: True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(str(folder))
