"""Memory and throughput planning for a suite, without downloading a single weight.

Parameter counts come from the published architectures built on the meta device. Memory per GPU
follows the usual mixed-precision AdamW accounting (Rajbhandari et al., ZeRO, 2020):

    16 bytes per parameter = 2 (bf16 weights) + 2 (bf16 gradients)
                             + 4 (fp32 master weights) + 4 + 4 (fp32 AdamW moments)

(accelerate's autocast path with fp32 weights and fp32 gradients also comes to 16). DDP keeps all of
it on every GPU; FSDP2 keeps 1/N of it plus the gathered working set: the root module (embeddings,
final norm, untied head) and two decoder layers (current and prefetched) in bf16, and their bf16
gradients before the reduce-scatter.

Activations, bytes per token of a micro-batch, bf16, with fused (flash / SDPA) attention, so no
[seq x seq] score matrix is kept:
    per layer   2 * (attention 4h + 2kv  +  MLP 2h + (4i gated | 2i plain))
                (norm input and output, q/k/v, attention output; MLP input, hidden, activation)
    logits      10 * V  (bf16 logits, the loss's fp32 upcast, and its fp32 gradient)
    no checkpointing:  L * per_layer + logits
    checkpointing:     L * 2h (each layer's input) + one layer recomputed + logits
h = hidden size, kv = key/value width, i = MLP width, L = layers, V = vocabulary. Under autocast
with fp32 weights the residual stream stays fp32, so read activations as a lower bound (~1.5x).

Time per run = 6 * parameters * tokens / (GPUs * peak bf16 FLOP/s * MFU) (8 instead of 6 with
gradient checkpointing, which recomputes the forward); evaluation and trace are not included. It is
GPU time: for a suite that needs no GPU the table says so rather than pass it off as CPU time.

Tiny presets (`tiny-llama`, `tiny-neox`) get the word-level tokenizer a run trains on the suite's
corpus, so their vocabulary, and parameter count, are the ones a run builds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast
from transformers.utils import CONFIG_NAME

from factrecall_bench.batching import example_counts
from factrecall_bench.config import DataSpec, RunConfig
from factrecall_bench.errors import UserError
from factrecall_bench.model_families import (
    family_of,
    hf_aliases,
    published_architecture,
    published_models,
    tiny_presets,
)
from factrecall_bench.models import count_parameters, tiny_config
from factrecall_bench.suite import Suite

GIB = 1024**3
STATE_BYTES_PER_PARAM = 16
LOGIT_BYTES_PER_VOCAB_ENTRY = 10
CHARS_PER_TOKEN = 3.8
"""Measured 3.9 for bioS biographies with SmolLM2's BPE (digits split); slightly low = cautious."""
SPECIAL_TOKENS_PER_EXAMPLE = 2
SAMPLE_PEOPLE = 64
MAX_GPUS_SUGGESTED = 64
"""How far `plan` looks for a GPU count that fits when none of the settings fits on the given one."""
SETTINGS = (("ddp", "no_checkpointing"), ("ddp", "checkpointing"),
            ("fsdp2", "no_checkpointing"), ("fsdp2", "checkpointing"))
"""The memory settings `plan` estimates, cheapest in time first."""
SETTING_LABELS = {("ddp", "no_checkpointing"): "DDP", ("ddp", "checkpointing"): "DDP+ckpt",
                  ("fsdp2", "no_checkpointing"): "FSDP2", ("fsdp2", "checkpointing"): "FSDP2+ckpt"}
H100_BF16_PEAK = 989e12
"""H100 SXM dense bf16 FLOP/s (the H200 has the same tensor cores)."""
DEFAULT_MFU = 0.35

def architecture_config(name: str) -> PretrainedConfig:
    """The config of a published architecture (`model_families`: e.g. `llama-3.2-1b`, or an
    `hf:<id>` it knows), a suite model name, or a local `hf:` folder."""
    key = hf_aliases().get(name, name)
    values = published_architecture(key)
    if values is not None:
        return AutoConfig.for_model(values.pop("model_type"), **values)
    if key in tiny_presets():
        raise UserError(f"{name} depends on a suite's model settings and data: plan the suite")
    local = Path(name[3:]).expanduser() if name.startswith("hf:") else None
    if local is not None and (local / CONFIG_NAME).is_file():  # transformers' config.json
        return AutoConfig.from_pretrained(str(local))
    known = ", ".join([*published_models(), *hf_aliases()])
    raise UserError(f"no architecture known for {name} (known: {known}; or hf:<local folder>)")


def _config_for_run(config: RunConfig) -> PretrainedConfig:
    """A suite run's architecture; tiny presets are built from the suite's model settings."""
    if not config.model.from_scratch:
        return architecture_config(config.model.name)
    return tiny_config(config.model, corpus_tokenizer(config.data))


@cache
def corpus_tokenizer(data: DataSpec) -> PreTrainedTokenizerFast:
    """The word-level tokenizer a run of a tiny preset trains on this corpus (its vocabulary
    sets the embedding and output sizes); seconds for a few thousand people."""
    from factrecall_bench.data.dataset import generate_dataset
    from factrecall_bench.data.tokenizer import train_tokenizer

    return train_tokenizer(generate_dataset(data))


def _meta_model(config: PretrainedConfig) -> torch.nn.Module:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@cache
def parameter_count(name: str) -> int:
    """Parameters of a known architecture (e.g. `llama-3.2-1b`) or a suite model name, built on
    the meta device: no memory, no weights, no download."""
    return count_parameters(_meta_model(architecture_config(name)))


@dataclass(frozen=True)
class ModelDims:
    """What the memory formulas need from an architecture."""

    parameters: int
    layer_parameters: int
    """Parameters of one decoder layer."""
    root_parameters: int
    """Parameters outside the decoder layers (embeddings, final norm, untied head)."""
    hidden: int
    layers: int
    intermediate: int
    kv_width: int
    vocab: int
    gated_mlp: bool


def model_dims(config: PretrainedConfig) -> ModelDims:
    model = _meta_model(config)
    layers = next(module for module in model.modules()
                  if isinstance(module, torch.nn.ModuleList) and len(module) == config.num_hidden_layers)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    total, per_layer = count_parameters(model), count_parameters(layers[0])
    return ModelDims(parameters=total, layer_parameters=per_layer,
                     root_parameters=total - per_layer * config.num_hidden_layers,
                     hidden=config.hidden_size, layers=config.num_hidden_layers,
                     intermediate=config.intermediate_size, kv_width=kv_heads * head_dim,
                     vocab=config.vocab_size, gated_mlp=_gated_mlp(config.model_type))


def _gated_mlp(model_type: str) -> bool:
    """The family's (`ModelFamily.gated_mlp`); a gate for an architecture no family declares."""
    family = family_of(model_type)
    return True if family is None else family.gated_mlp


def activation_bytes_per_token(dims: ModelDims, checkpointing: bool) -> float:
    """Saved activations per token of a micro-batch (module docstring: the formula)."""
    mlp_hidden = (4 if dims.gated_mlp else 2) * dims.intermediate
    per_layer = 2 * (4 * dims.hidden + 2 * dims.kv_width + 2 * dims.hidden + mlp_hidden)
    logits = LOGIT_BYTES_PER_VOCAB_ENTRY * dims.vocab
    if checkpointing:
        return dims.layers * 2 * dims.hidden + per_layer + logits
    return dims.layers * per_layer + logits


@dataclass(frozen=True)
class MemoryEstimate:
    """GiB per GPU."""

    states: float
    """Weights, gradients, master weights and AdamW moments held by this GPU."""
    working_set: float
    """FSDP2's gathered (unsharded) parameters and gradients; 0 under DDP."""
    activations: float
    total: float


def memory_per_gpu(dims: ModelDims, strategy: str, gpus: int, micro_batch_tokens: int,
                   checkpointing: bool) -> MemoryEstimate:
    """Estimated peak memory per GPU under `ddp` or `fsdp2`."""
    states = float(STATE_BYTES_PER_PARAM * dims.parameters)
    working = 0.0
    if strategy == "fsdp2":
        states /= gpus
        gathered = dims.root_parameters + 2 * dims.layer_parameters
        working = 2 * gathered + 2 * (dims.root_parameters + dims.layer_parameters)
    elif strategy != "ddp":
        raise ValueError(f"unknown parallel strategy {strategy!r} (ddp or fsdp2)")
    activations = micro_batch_tokens * activation_bytes_per_token(dims, checkpointing)
    return MemoryEstimate(states=states / GIB, working_set=working / GIB,
                          activations=activations / GIB,
                          total=(states + working + activations) / GIB)


@dataclass(frozen=True)
class SequenceLengths:
    """Tokens per example, estimated from a sample of the suite's own data (bos and eos included)."""

    bio_mean: float
    bio_max: int
    qa_mean: float
    qa_max: int


@cache
def sequence_lengths(data: DataSpec) -> SequenceLengths:
    from factrecall_bench.data.dataset import generate_dataset

    sample = DataSpec(**{**asdict(data), "n_people": min(data.n_people, SAMPLE_PEOPLE)})
    dataset = generate_dataset(sample)
    bio = [_tokens(text) for text in dataset["bio"]["text"]]
    qa = [_tokens(f"{p} {a}") for p, a in zip(dataset["qa_train"]["prompt"], dataset["qa_train"]["answer"])]
    return SequenceLengths(sum(bio) / len(bio), max(bio), sum(qa) / len(qa), max(qa))


def _tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + SPECIAL_TOKENS_PER_EXAMPLE


def source_sizes(data: DataSpec) -> dict[str, int]:
    """Examples per source: every biography, and six questions per P_train person."""
    return {"bio": data.n_people * data.bio_variants,
            "qa_train": 6 * round(data.n_people * data.train_fraction)}


def run_volume(config: RunConfig) -> dict[str, float]:
    """Optimizer steps and training tokens of one run (the strategy's phases, as batching plans them)."""
    lengths = sequence_lengths(config.data)
    mean = {"bio": lengths.bio_mean, "qa_train": lengths.qa_mean}
    steps, tokens = 0, 0.0
    for phase in config.phases:
        counts = example_counts(phase, source_sizes(config.data))
        steps += math.ceil(sum(counts.values()) / config.train.batch_size)
        tokens += sum(count * mean[source] for source, count in counts.items())
    return {"steps": steps, "tokens": tokens, "tokens_per_step": tokens / max(steps, 1)}


def _micro_batch_tokens(config: RunConfig, gpus: int) -> tuple[int, int]:
    """(examples, padded width) of the largest micro-batch one GPU computes at once."""
    lengths = sequence_lengths(config.data)
    examples = math.ceil(config.train.batch_size / (config.train.grad_accum * gpus))
    uses_bio = any(phase.epochs.get("bio", 0) > 0 for phase in config.phases)
    return examples, lengths.bio_max if uses_bio else lengths.qa_max


def memory_settings(dims: ModelDims, config: RunConfig, gpus: int, gpu_memory_gib: float
                    ) -> dict[str, dict[str, dict[str, Any]]]:
    """GiB per GPU under each strategy, with and without checkpointing, and whether it fits."""
    examples, width = _micro_batch_tokens(config, gpus)
    memory: dict[str, dict[str, dict[str, Any]]] = {}
    for strategy, key in SETTINGS:
        estimate = asdict(memory_per_gpu(dims, strategy, gpus, examples * width, key == "checkpointing"))
        memory.setdefault(strategy, {})[key] = {**estimate, "fits": estimate["total"] <= gpu_memory_gib}
    return memory


def fitting_settings(dims: ModelDims, config: RunConfig, gpus: int, gpu_memory_gib: float
                     ) -> dict[str, Any] | None:
    """The settings that fit on `gpus` GPUs or, if none does, on the fewest GPUs where one does
    (more GPUs: smaller FSDP2 shards and micro-batches); None if none fits on MAX_GPUS_SUGGESTED."""
    for count in range(gpus, max(gpus, MAX_GPUS_SUGGESTED) + 1):
        memory = memory_settings(dims, config, count, gpu_memory_gib)
        fitting = [{"strategy": strategy, "checkpointing": key == "checkpointing"}
                   for strategy, key in SETTINGS if memory[strategy][key]["fits"]]
        if fitting:
            return {"gpus": count, "settings": fitting}
    return None


def plan_run(config: RunConfig, gpus: int, gpu_memory_gib: float, mfu: float, peak_flops: float
             ) -> dict[str, Any]:
    dims = model_dims(_config_for_run(config))
    volume = run_volume(config)
    examples, width = _micro_batch_tokens(config, gpus)
    checkpointing = config.model.gradient_checkpointing
    memory = memory_settings(dims, config, gpus, gpu_memory_gib)
    chosen = "checkpointing" if checkpointing else "no_checkpointing"
    flops_per_token = (8 if checkpointing else 6) * dims.parameters
    seconds = volume["tokens"] * flops_per_token / (gpus * peak_flops * mfu)
    return {"variant": config.variant, "model": config.model.name, "strategy": config.strategy,
            "parameters": dims.parameters, "vocab_size": dims.vocab, "steps": volume["steps"],
            "tokens_per_step": round(volume["tokens_per_step"]), "run_tokens": round(volume["tokens"]),
            "micro_batch_per_gpu": examples, "sequence_width": width,
            "gradient_checkpointing": checkpointing, "memory_gib": memory,
            "fits": {strategy: memory[strategy][chosen]["fits"] for strategy in memory},
            "fits_with": fitting_settings(dims, config, gpus, gpu_memory_gib),
            "run_hours": seconds / 3600}


def plan_suite(suite: Suite, gpus: int, gpu_memory_gib: float, mfu: float = DEFAULT_MFU,
               peak_flops: float = H100_BF16_PEAK) -> dict[str, Any]:
    """Per (variant, model, strategy): parameters, memory per GPU under DDP and FSDP2 (with and
    without gradient checkpointing, each marked whether it fits), the settings that would fit,
    tokens per step and hours per run at the stated MFU."""
    if gpus < 1 or gpu_memory_gib <= 0 or not 0 < mfu <= 1:
        raise UserError("plan needs gpus >= 1, gpu memory > 0 GiB and 0 < mfu <= 1")
    seen: dict[tuple[str, str, str], RunConfig] = {}
    for config in suite.runs:
        seen.setdefault((config.variant, config.model.name, config.strategy), config)
    rows = [plan_run(config, gpus, gpu_memory_gib, mfu, peak_flops) for config in seen.values()]
    runs_per_row = len(suite.seeds)
    wall_hours = runs_per_row * sum(row["run_hours"] for row in rows)
    return {"suite": suite.name, "needs_gpu": suite.needs_gpu, "gpus": gpus,
            "gpu_memory_gib": gpu_memory_gib, "mfu": mfu,
            "peak_flops": peak_flops, "seeds": runs_per_row, "rows": rows,
            "suite_hours": wall_hours, "suite_gpu_hours": gpus * wall_hours,
            "assumptions": {"state_bytes_per_parameter": STATE_BYTES_PER_PARAM,
                            "logit_bytes_per_vocab_entry": LOGIT_BYTES_PER_VOCAB_ENTRY,
                            "chars_per_token": CHARS_PER_TOKEN,
                            "tiny_vocab": "the suite's corpus, word-level tokenizer (as a run builds it)",
                            "formula": "see factrecall_bench/plan.py"}}


OVER_MARK = "\u2717"
"""Marks a memory estimate over the GPU's size (also without colour, e.g. piped)."""


def _gib_cell(value: float, limit: float) -> str:
    text = f"{value:.1f}" if value >= 1 else f"{value:.2f}"
    return f"{text}  " if value <= limit else f"[red]{text} {OVER_MARK}[/red]"


def _duration(hours: float) -> str:
    seconds = hours * 3600
    if seconds < 1:
        return "<1 s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def _gpu_hours(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 0.1 else "<0.1"


def _label(row: dict[str, Any]) -> str:
    return row["model"] if row["variant"] == "base" else f"{row['model']} ({row['variant']})"


def _table(title: str, caption: str | None, first: str) -> Table:
    # The model column never wraps or shrinks: a cut name ("hf:m…") is no name at all.
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left",
                  caption_justify="left", show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column(first, no_wrap=True)
    return table


def _time_table(plan: dict[str, Any], shown: dict[str, str]) -> Table:
    title = (f"{plan['suite']}: time per run on {_gpus(plan['gpus'])} at MFU {plan['mfu']:.0%}, "
             "training only")
    caption = (f"{_count(plan['seeds'], 'seed')}: suite {_duration(plan['suite_hours'])} "
               f"({_gpu_hours(plan['suite_gpu_hours'])} GPU-hours)")
    table = _table(title, caption, "model")
    table.add_column("strategy", no_wrap=True)
    for column in ("steps", "tokens/step", "time/run"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in plan["rows"]:
        table.add_row(shown[_label(row)], row["strategy"], f"{row['steps']:,}",
                      f"{row['tokens_per_step']:,}", _duration(row["run_hours"]))
    return table


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _gpus(count: int) -> str:
    return _count(count, "GPU")


def _parameters(count: int) -> str:
    return f"{count / 1e6:,.0f}M" if count >= 10e6 else f"{count / 1e6:.2f}M"


def _memory_rows(plan: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, strategy, row): one row per model (and variant), with strategy "" unless the
    strategies' estimates differ (different micro-batch widths), then one row per strategy."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in plan["rows"]:
        groups.setdefault(_label(row), []).append(row)
    rows = []
    for label, members in groups.items():
        totals = {tuple(row["memory_gib"][s][k]["total"] for s, k in SETTINGS) for row in members}
        if len(totals) == 1:
            rows.append((label, "", members[0]))
        else:
            rows.extend((label, row["strategy"], row) for row in members)
    return rows


def _with_strategy(name: str, strategy: str) -> str:
    return f"{name}, {strategy}" if strategy else name


def _memory_table(plan: dict[str, Any], shown: dict[str, str]) -> Table:
    limit = plan["gpu_memory_gib"]
    title = f"memory per GPU, GiB (estimates; {OVER_MARK} = over {limit:g} GiB)"
    table = _table(title, None, "model")
    for column in ("params", *(SETTING_LABELS[setting] for setting in SETTINGS)):
        table.add_column(column, justify="right", no_wrap=True)
    for label, strategy, row in _memory_rows(plan):
        cells = [_gib_cell(row["memory_gib"][s][k]["total"], limit) for s, k in SETTINGS]
        table.add_row(_with_strategy(shown[label], strategy), _parameters(row["parameters"]), *cells)
    return table


def _fit_line(name: str, row: dict[str, Any], plan: dict[str, Any]) -> str | None:
    """What would fit, for a model with a setting over the limit (None when all four fit)."""
    memory, limit = row["memory_gib"], f"{plan['gpu_memory_gib']:g} GiB"
    if all(memory[s][k]["fits"] for s, k in SETTINGS):
        return None
    found = row["fits_with"]
    if found is None:
        return f"{name}: no setting fits {limit} per GPU on up to {MAX_GPUS_SUGGESTED} GPUs"
    settings = " or ".join(SETTING_LABELS[(s["strategy"], "checkpointing" if s["checkpointing"]
                                           else "no_checkpointing")] for s in found["settings"])
    if found["gpus"] == plan["gpus"]:
        return f"{name}: fits {limit} only with {settings}"
    return (f"{name}: no setting fits {limit} on {_gpus(plan['gpus'])}; "
            f"{settings} fits on {_gpus(found['gpus'])} (--gpus {found['gpus']})")


def _footer(plan: dict[str, Any]) -> list[Text]:
    fits = [Text(line, style="yellow") for label, strategy, row in _memory_rows(plan)
            if (line := _fit_line(_with_strategy(label, strategy), row, plan))]
    ckpt = "on" if any(row["gradient_checkpointing"] for row in plan["rows"]) else "off"
    notes = [f"ckpt: activation checkpointing ([model] gradient_checkpointing, {ckpt} here)",
             "DDP / FSDP2: accelerate launch --config_file configs/accelerate/{ddp,fsdp2}.yaml"]
    if not plan["needs_gpu"]:
        notes.append("Times are GPU estimates; this suite needs no GPU, and on CPU a run takes "
                     "minutes (the cpu suite: ~2.5-3 min per run on 2 cores, see README).")
    return fits + [Text(note) for note in notes]


def render_plan(plan: dict[str, Any]) -> PlanView:
    """The plan: time per run, memory per GPU (over the GPU's size marked), and what would fit."""
    return PlanView(plan)


@dataclass(frozen=True)
class PlanView:
    """Renders at the console's width; model names are never cut: where they are too long for the
    tables, the tables show #1, #2, ... and a key above them gives the names."""

    plan: dict[str, Any]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        labels = list(dict.fromkeys(_label(row) for row in self.plan["rows"]))
        shown = {label: label for label in labels}
        unbounded = options.update_width(10_000)  # the tables' natural widths
        if any(console.measure(table, options=unbounded).maximum > options.max_width
               for table in self._tables(shown)):
            shown = {label: f"#{number}" for number, label in enumerate(labels, 1)}
            yield from (Text(f"{shown[label]} {label}") for label in labels)
        yield from self._tables(shown)
        yield from _footer(self.plan)

    def _tables(self, shown: dict[str, str]) -> tuple[Table, Table]:
        return _time_table(self.plan, shown), _memory_table(self.plan, shown)
