"""The corpus tokenizer: values tokenize the same inside a biography and after "Answer:"."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
from tokenizers import pre_tokenizers

from factrecall_bench.config import DataSpec
from factrecall_bench.data import tokenizer as tk
from factrecall_bench.data.dataset import generate_dataset
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


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/data/tokenizer.py
# (docs/mutation.md, fourth round): the texts a tokenizer is trained on (every biography, question and
# answer, in batches), the word-level default (a vocabulary of only the corpus' words, every text round-
# trips, an unknown word is the unknown token), BPE (its vocabulary size, every byte covered), the special
# tokens, and the tokenizer saved beside a dataset: trained once, reused.


SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]


@pytest.fixture(scope="module")
def dataset() -> datasets.DatasetDict:
    return generate_dataset(DataSpec(n_people=8, seed=4, bio_variants=2))


@pytest.fixture(autouse=True)
def offline_in_an_empty_folder(tmp_path, monkeypatch) -> None:
    """A saved tokenizer must load from its folder alone: no hub, no folder of the current
    directory that happens to have the name asked for."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)


def _stderr_on_a_terminal(action: Callable[[], object]) -> bytes:
    """What `action` writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    pty = pytest.importorskip("pty")  # Unix only
    try:
        master, slave = pty.openpty()
    except OSError as error:  # a container without /dev/ptmx
        pytest.skip(f"no pseudo-terminal: {error}")
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal was closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    saved = os.dup(2)
    os.dup2(slave, 2)
    try:
        action()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return b"".join(chunks)


def _all_texts(dataset: datasets.DatasetDict) -> list[str]:
    texts = list(dataset["bio"]["text"])
    for split in ("qa_train", "qa_test"):
        texts += [f"{row['prompt']} {row['answer']}" for row in dataset[split]]
    return texts


def _words(texts: list[str]) -> set[str]:
    split = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str
    return {word for text in texts for word, _ in split(text)}


def _words_dataset(words: list[str]) -> datasets.DatasetDict:
    """A corpus of the given words: one biography each, no questions."""
    qa = datasets.Dataset.from_dict({"prompt": [], "answer": []})
    return datasets.DatasetDict({"bio": datasets.Dataset.from_dict({"text": words}),
                                 "qa_train": qa, "qa_test": qa})


# ------------------------------------------------------------------------ the texts trained on


@pytest.mark.parametrize("batch", [1, 5, 7, 1000])
def test_the_corpus_texts_are_every_biography_question_and_answer(dataset, batch) -> None:
    batches = list(tk.corpus_texts(dataset, batch=batch))
    assert list(itertools.chain.from_iterable(batches)) == _all_texts(dataset)
    sizes = {"bio": len(dataset["bio"]), "qa_train": len(dataset["qa_train"]),
             "qa_test": len(dataset["qa_test"])}
    expected = [min(batch, size - start) for size in sizes.values()
                for start in range(0, size, batch)]
    assert [len(texts) for texts in batches] == expected


def test_the_default_batches_are_one_per_split_for_a_small_corpus(dataset) -> None:
    batches = list(tk.corpus_texts(dataset))
    assert batches[0] == list(dataset["bio"]["text"])
    assert len(batches) == 3


# ----------------------------------------------------------------------- the word-level default


def test_the_default_tokenizer_has_one_token_per_corpus_word(dataset) -> None:
    tokenizer = tk.train_tokenizer(dataset)
    vocab = tokenizer.get_vocab()
    assert set(vocab) == set(SPECIALS) | _words(_all_texts(dataset))


def test_every_corpus_text_round_trips_without_unknown_tokens(dataset) -> None:
    for kind in ("word", "bpe"):
        tokenizer = tk.train_tokenizer(dataset, kind=kind, vocab_size=400)
        for text in _all_texts(dataset):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, (kind, text)
            assert tokenizer.decode(ids) == text, kind


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_the_special_tokens_come_first_and_are_named(dataset, kind) -> None:
    tokenizer = tk.train_tokenizer(dataset, kind=kind, vocab_size=400)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == SPECIALS
    assert [tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token,
            tokenizer.unk_token] == SPECIALS
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
            tokenizer.unk_token_id] == [0, 1, 2, 3]


def test_a_word_outside_the_corpus_is_the_unknown_token(dataset) -> None:
    tokenizer = tk.train_tokenizer(dataset)
    assert tokenizer(" Zorbulon", add_special_tokens=False)["input_ids"] == [3]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_training_draws_no_progress_bar_on_a_terminal(dataset, kind) -> None:
    """The CLI draws its own progress; a second bar from the tokenizers library would clutter it."""
    assert _stderr_on_a_terminal(lambda: tk.train_tokenizer(dataset, kind=kind)) == b""


# ------------------------------------------------------------------------------------------- BPE


def test_bpe_has_the_asked_vocabulary_and_every_byte(dataset) -> None:
    tokenizer = tk.train_tokenizer(dataset, kind="bpe", vocab_size=300)
    vocab = tokenizer.get_vocab()
    assert len(vocab) == 300
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)
    text = "Zürich ~ 42 {}"  # characters no biography holds
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_bpe_defaults_to_8192_tokens() -> None:
    words = [f"w{a}{b}{c}" for a in "abcdefghijklmnopqrst" for b in "abcdefghijklmnopqrst"
             for c in "abcdefghijklmnopqrstuvwxy"]  # 10,000 distinct words
    tokenizer = tk.train_tokenizer(_words_dataset(words), kind="bpe")
    assert len(tokenizer.get_vocab()) == 8192


# ------------------------------------------------------------------------ saved beside the data


def test_the_tokenizer_is_trained_once_and_saved_beside_the_data(tmp_path, dataset,
                                                                 monkeypatch) -> None:
    folder = tmp_path / "biosdata-x"
    folder.mkdir()
    tokenizer = tk.ensure_tokenizer(folder, dataset)
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer"]  # no temp folder left
    assert tokenizer.get_vocab() == tk.train_tokenizer(dataset).get_vocab()
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.pad_token_id == 0

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(tk, "train_tokenizer", no_training)
    again = tk.ensure_tokenizer(folder, dataset)
    assert again.get_vocab() == tokenizer.get_vocab()


def test_the_tokenizer_is_written_in_a_hidden_temp_folder_inside_the_dataset_folder(
        tmp_path, dataset, monkeypatch) -> None:
    folder = tmp_path / "biosdata-x"
    folder.mkdir()
    moved: list[Path] = []
    real = tk.replace_dir_atomic

    def replace(tmp: Path, final: Path, is_ours: Callable[[Path], bool]) -> None:
        moved.append(tmp)
        real(tmp, final, is_ours)

    monkeypatch.setattr(tk, "replace_dir_atomic", replace)
    tk.ensure_tokenizer(folder, dataset)
    (temp,) = moved
    assert temp.parent == folder  # the same file system: the rename into place is atomic
    assert temp.name.startswith(".tokenizer")


def test_a_failed_training_leaves_no_temp_folder(tmp_path, dataset, monkeypatch) -> None:
    folder = tmp_path / "biosdata-x"
    folder.mkdir()

    def failing(*_: object, **__: object) -> None:
        raise MemoryError("out of memory")

    monkeypatch.setattr(tk, "train_tokenizer", failing)
    with pytest.raises(MemoryError):
        tk.ensure_tokenizer(folder, dataset)
    assert list(folder.iterdir()) == []


def test_an_incomplete_tokenizer_folder_is_replaced(tmp_path, dataset) -> None:
    folder = tmp_path / "biosdata-x"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "vocab.json").write_text("{")  # a killed save: no tokenizer.json
    tokenizer = tk.ensure_tokenizer(folder, dataset)
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert not (folder / "tokenizer" / "vocab.json").exists()
    assert tokenizer.get_vocab() == tk.train_tokenizer(dataset).get_vocab()
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer"]


def test_the_saved_tokenizer_loads_with_plain_transformers(tmp_path, dataset) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path / "biosdata-x"
    folder.mkdir()
    tk.ensure_tokenizer(folder, dataset)
    loaded = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    text = _all_texts(dataset)[0]
    assert loaded.decode(loaded(text, add_special_tokens=False)["input_ids"]) == text
    assert Path(str(folder) + ".tokenizer.lock").exists()
