"""Model presets: tiny models built from config, SmolLM2-135M from its packaged GGUF, any HF model.

`tiny-llama` / `tiny-neox` start from random weights (seeded) and use the dataset's own tokenizer;
`smollm2-135m` and `hf:<id-or-path>` bring their own pretrained weights and tokenizer. The presets
and how each is built are rows of `model_families.MODEL_FAMILIES`.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from factrecall_bench.config import ModelSpec
from factrecall_bench.errors import UserError
from factrecall_bench.identity import model_revision
from factrecall_bench.model_families import (  # noqa: F401  (check_model_name re-exported)
    PackagedWeights,
    check_model_name,
    packaged_presets,
    presets,
    tiny_presets,
)


def tiny_architecture(spec: ModelSpec, vocab_size: int, **token_ids: int | None
                      ) -> PretrainedConfig:
    """A tiny preset's architecture (also what `plan` counts, with an assumed vocabulary): its
    family's config class with `[model]`'s sizes and the family's `tiny_settings`."""
    family = tiny_presets()[spec.name]
    common: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=spec.d_model, intermediate_size=spec.d_ff,
        num_hidden_layers=spec.n_layer, num_attention_heads=spec.n_head,
        max_position_embeddings=512, tie_word_embeddings=False, **token_ids)
    return AutoConfig.for_model(family.model_type, **family.tiny_settings, **common)


def tiny_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    return tiny_architecture(spec, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)


def packaged_weights_path(name: str, weights: PackagedWeights) -> Path:
    """The weights file a package ships for the preset `name`."""
    found = importlib.util.find_spec(weights.module)
    if found is None or found.origin is None:
        raise UserError(f"{name} needs the {weights.distribution} package: {weights.install}")
    return Path(found.origin).parent / weights.file


def smollm2_gguf_path() -> Path:
    return packaged_weights_path("smollm2-135m", packaged_presets()["smollm2-135m"])


def _pretrained_source(spec: ModelSpec) -> tuple[str, dict[str, str]]:
    """Where a pretrained model loads from, and the keyword arguments that say which file or
    commit: the commit in the run's identity (the pin, else the local cache's main)."""
    packaged = packaged_presets().get(spec.name)
    if packaged is not None:
        weights = packaged_weights_path(spec.name, packaged)
        return str(weights.parent), {"gguf_file": weights.name}
    local = Path(spec.name[3:]).expanduser()
    if local.exists():
        return str(local), {}
    revision = model_revision(spec)
    return spec.name[3:], ({"revision": revision} if revision else {})


@contextlib.contextmanager
def no_transformers_progress_bars() -> Iterator[None]:
    """transformers draws a bar for loading or writing even one shard (and for a GGUF file's
    tensors); the CLI draws its own progress, and a bar would fill a log that is not a terminal."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_pretrained_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    source, extra = _pretrained_source(spec)
    try:
        with no_transformers_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except Exception as error:  # transformers raises many kinds; the user needs one line
        raise UserError(f"cannot load the tokenizer of {spec.name}: {_first_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A fresh model: seeded random init for tiny presets, pretrained weights otherwise."""
    torch.manual_seed(seed)
    if spec.from_scratch:
        model = AutoModelForCausalLM.from_config(tiny_config(spec, tokenizer))
    else:
        model = _load_pretrained(spec)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _load_pretrained(spec: ModelSpec) -> PreTrainedModel:
    source, extra = _pretrained_source(spec)
    try:
        with no_transformers_progress_bars():
            return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **extra)
    except Exception as error:
        raise UserError(f"cannot load model {spec.name}: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
