"""Typed configs: the data spec, the model, the training settings and a run's resolved config.

Every field has a docstring; validation happens in `__post_init__`, so a bad suite file fails on
load with one clear message (a `UserError`), never deep inside training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from factrecall_bench.errors import UserError
from factrecall_bench.model_families import tiny_presets

T = TypeVar("T")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


@dataclass(frozen=True)
class DataSpec:
    """What fact data to generate (bioS-style); its hash names the cached dataset."""

    n_people: int = 200
    """How many people (each with six attributes)."""
    seed: int = 0
    """Seed of people, attributes, templates, augmentations and the P_train/P_test split."""
    train_fraction: float = 0.5
    """Share of people in P_train (their QA is trained); the rest are P_test (OOD)."""
    bio_variants: int = 1
    """multiM: how many different biographies each person gets (M)."""
    permute: bool = False
    """permute: shuffle the sentence order of each biography (the full name stays first)."""
    fullname: bool = False
    """fullname: the full name in every sentence instead of pronouns."""
    templates_per_attribute: int = 0
    """How many BIO paraphrase templates per attribute to draw from (0 = all shipped)."""

    def __post_init__(self) -> None:
        _require(self.n_people > 0, f"n_people must be positive, got {self.n_people}")
        _require(0.0 < self.train_fraction < 1.0,
                 f"train_fraction must lie in (0, 1), got {self.train_fraction}")
        _require(self.bio_variants >= 1, f"bio_variants must be >= 1, got {self.bio_variants}")
        _require(self.templates_per_attribute >= 0,
                 f"templates_per_attribute must be >= 0, got {self.templates_per_attribute}")

    def spec_hash(self) -> str:
        return config_hash(self)


@dataclass(frozen=True)
class ModelSpec:
    """Which causal LM to train: a preset built from config, a packaged GGUF, or `hf:<id-or-path>`."""

    name: str = "tiny-llama"
    """Preset name (`tiny-llama`, `tiny-neox`, `smollm2-135m`: `model_families.presets`) or
    `hf:<id-or-path>`."""
    n_layer: int = 2
    """Layers of a from-scratch preset (ignored for pretrained models)."""
    d_model: int = 128
    """Hidden size of a from-scratch preset."""
    n_head: int = 4
    """Attention heads of a from-scratch preset."""
    d_ff: int = 512
    """MLP width of a from-scratch preset."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (for large models on GPUs)."""
    revision: str = ""
    """Pin an `hf:<id>` model's weights to this commit, branch or tag ("" = what the local
    cache's `main` points to); the resolved commit is part of the run's key."""

    def __post_init__(self) -> None:
        _require(bool(self.name), "model name must not be empty")
        _require(not self.revision or self.name.startswith("hf:"),
                 f"model revision pins an hf:<id> model, not {self.name!r}")
        for size_name in ("n_layer", "d_model", "n_head", "d_ff"):
            _require(getattr(self, size_name) > 0, f"model {size_name} must be positive")
        _require(self.d_model % self.n_head == 0, "model d_model must be divisible by n_head")

    @property
    def from_scratch(self) -> bool:
        """A tiny preset (random init, the dataset's tokenizer): `model_families.tiny_presets`."""
        return self.name in tiny_presets()


@dataclass(frozen=True)
class TrainSpec:
    """Optimizer, schedule and compute budget shared by every strategy of a suite."""

    bio_epochs: float = 16.0
    """Passes over all biographies in the reference budget (two-stage's stage 1)."""
    qa_epochs: float = 16.0
    """Passes over QA of P_train in the reference budget (two-stage's stage 2)."""
    qa_share: float = 0.0
    """Mixed: share of QA examples in the stream (0 = the natural share of the reference budget)."""
    replay_share: float = 0.2
    """two-stage-replay: share of BIO examples kept in stage 2."""
    lr: float = 1e-3
    """Peak learning rate of the first phase (and of every phase that names no other)."""
    stage2_lr: float = 1e-3
    """Peak learning rate of a strategy's later phases (two-stage's stage 2 and alike)."""
    batch_size: int = 32
    """Examples per optimizer step (all micro-batches together)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the loss is normalized over the step's tokens."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.98
    """AdamW beta2."""
    warmup_fraction: float = 0.05
    """Linear warmup, as a share of each phase's steps."""
    min_lr_fraction: float = 0.1
    """Cosine decay ends at this fraction of the phase's peak learning rate."""
    clip_norm: float = 1.0
    """Gradient clipping (max global norm)."""
    bio_loss: str = "all"
    """BIO loss on `all` tokens or only on attribute `values`."""
    mixed_precision: str = "auto"
    """`auto` (bf16 where the device has it), `no`, `bf16` or `fp16`."""
    checkpoint_every: int = 200
    """Save a resumable checkpoint every N optimizer steps (and at each phase end)."""
    log_every: int = 10
    """Write a `step` event every N optimizer steps."""
    divergence_loss: float = 50.0
    """A loss above this (or NaN) marks the run failed."""
    packing: bool = False
    """Pack each micro-batch's examples (BIO and QA together) into rows of `pack_width` tokens,
    each example attending only to itself; the same update as padding, less compute."""
    pack_width: int = 0
    """Width of a packed row in tokens (0 = the micro-batch's longest example; never less)."""

    def __post_init__(self) -> None:
        _require(self.bio_epochs >= 0 and self.qa_epochs >= 0, "epochs must be >= 0")
        _require(0.0 <= self.qa_share < 1.0, f"qa_share must lie in [0, 1), got {self.qa_share}")
        _require(0.0 <= self.replay_share < 1.0, "replay_share must lie in [0, 1)")
        _require(self.lr >= 0 and self.stage2_lr >= 0, "learning rates must be >= 0")
        _require(self.batch_size > 0 and self.grad_accum > 0, "batch_size and grad_accum must be > 0")
        _require(self.batch_size % self.grad_accum == 0,
                 "batch_size must be a multiple of grad_accum")
        _require(self.bio_loss in ("all", "values"), "bio_loss must be 'all' or 'values'")
        _require(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
                 "mixed_precision must be auto, no, bf16 or fp16")
        _require(0 <= self.warmup_fraction < 1 and 0 <= self.min_lr_fraction <= 1,
                 "warmup_fraction and min_lr_fraction must lie in [0, 1)")
        _require(self.pack_width >= 0, "pack_width must be >= 0")
        _require(self.checkpoint_every > 0 and self.log_every > 0,
                 "checkpoint_every and log_every must be > 0")


@dataclass(frozen=True)
class EvalSpec:
    """How recall is measured."""

    max_questions: int = 0
    """Cap on questions per split (0 = all)."""
    batch_size: int = 128
    """Sequences per evaluation forward pass."""
    at_phase_end: bool = True
    """Evaluate at every phase end too (shows forgetting in two-stage's stage 2)."""

    def __post_init__(self) -> None:
        _require(self.max_questions >= 0 and self.batch_size > 0, "bad eval settings")


def config_hash(config: Any) -> str:
    """A stable hash of a dataclass (or JSON-able value): same settings, same hash."""
    payload = to_dict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build a dataclass from a dict, refusing unknown keys and wrong types with one clear line."""
    check_fields(cls, values, where)
    return cls(**values)


def check_fields(cls: type[Any], values: dict[str, Any], where: str) -> None:
    """Refuse keys `cls` does not have and values of the wrong type (one line each), without
    building it: a single value can be checked before the rest of its table is known."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a table, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}")
    defaults = cls()
    for key, value in values.items():
        _check_type(where, key, value, getattr(defaults, key))


def _check_type(where: str, key: str, value: Any, default: Any) -> None:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
        raise UserError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")


@dataclass(frozen=True)
class Phase:
    """One phase of a strategy: which sources it trains on, how much, and at what learning rate."""

    name: str
    """Phase name shown in logs (e.g. `bio`, `qa`, `mixed`)."""
    epochs: dict[str, float]
    """Passes over each source (`bio`, `qa_train`); fixes the phase's example count."""
    mix: dict[str, float] = field(default_factory=dict)
    """If set: draw the phase's examples from these sources in these shares instead."""
    lr: float = 1e-3
    """Peak learning rate of this phase."""


@dataclass(frozen=True)
class RunIdentity:
    """What decides a run's numbers besides its settings (factrecall_bench.identity computes it);
    part of its config hash, so a change makes a new run instead of reusing an old one."""

    data: str = ""
    """sha256 of the generator version, the shipped pools and templates, and the data settings."""
    model_revision: str = ""
    """The commit of an `hf:` model's weights (the pin, else the local cache's `main`), a packaged
    model's package version, or "" (a from-scratch preset, a local folder, not in the cache)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run; its hash names the run's folder."""

    suite: str
    variant: str
    strategy: str
    seed: int
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    eval: EvalSpec
    phases: tuple[Phase, ...]
    trace: dict[str, Any] = field(default_factory=dict)
    identity: RunIdentity = field(default_factory=RunIdentity)
    """The data digest and model revision (suite.py fills it in)."""

    @property
    def run_id(self) -> str:
        variant = "" if self.variant == "base" else f"{self.variant}-"
        model = self.model.name.replace("/", "_").replace(":", "_")
        return f"{variant}{self.strategy}-{model}-s{self.seed}-{config_hash(self)[:8]}"


@dataclass(frozen=True)
class RunOptions:
    """What a run does besides what its config decides: never part of its identity (config hash,
    run id), so a run trained without them is reused with them, and the other way round."""

    log_with: str | None = None
    """Experiment trackers, accelerate's names, comma-separated ("tensorboard", "wandb,mlflow"):
    each gets the run's config, step losses, learning rate, throughput and evaluations. None:
    events.jsonl only."""
    log_samples: bool = False
    """Write samples.jsonl (every ID and OOD question's greedy answer) and samples-summary.json."""
