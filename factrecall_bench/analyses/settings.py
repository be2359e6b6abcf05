"""The mechanism analyses' settings (`[trace.analyses]` and `analyze --set`): plain typed
configs, checked before any training and recorded with the result. The analyses themselves
(grafting.py, reads.py, representation.py) import torch; this module does not, so a suite is
checked in a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from factrecall_bench.config import RunConfig
from factrecall_bench.data.pools import ATTRIBUTES
from factrecall_bench.errors import UserError

GRAFTING_METHODS = ("top_delta", "learned")


@dataclass
class GraftingSettings:
    share: float = 0.9
    """The share of the fine-tuned model's ID and OOD exact match a grafted set must recover."""
    methods: tuple[str, ...] = ("top_delta", "learned")
    """"top_delta": the k scalars with the largest |theta_ft - theta_pre| (the simple baseline);
    "learned": a sparse mask learned through a sigmoid relaxation with a budget of k scalars."""
    recovery: Literal["ratio", "gain"] = "ratio"
    """"ratio": grafted / fine-tuned (Panigrahi et al.); "gain": (grafted - pre) / (fine-tuned -
    pre), which discounts what the weights before fact training already answer."""
    min_finetuned: float = 0.0
    """A metric whose fine-tuned exact match is at most this has nothing to recover and is left out
    of the target (e.g. OOD exact match of a two-stage run that answers no OOD question)."""
    initial_fraction: float = 1e-4
    """The first set size tried, as a fraction of the parameters (at least 1 scalar); the size is
    doubled until the target is met, then bisected."""
    tolerance: float = 0.05
    """Bisection stops when the passing and failing sizes are within this fraction of each other."""
    max_evaluations: int = 40
    """At most this many sizes are tried per method (doubling and bisection together)."""
    max_questions: int = 256
    """Questions per evaluation set (the first ones of the run's ID and OOD sets; 0: all): every
    size tried costs one evaluation, so this bounds the search's cost."""
    random_draws: int = 3
    """Seeded random sets of the found size, each grafted and evaluated: the chance control."""
    mask_steps: int = 20
    """Learned mask: optimizer steps per size tried."""
    mask_lr: float = 0.2
    """Learned mask: Adam learning rate on the mask logits."""
    mask_init_logit: float = 1.0
    """Learned mask: logits start at +this for the top-|delta| set of the budget, -this elsewhere
    (Adam moves a logit by about mask_lr per step, so steps * lr > 2 * this lets the set change)."""
    mask_sparsity_weight: float = 1.0
    """Learned mask: weight of the penalty relu(sum(sigmoid(S)) / k - 1) on exceeding the budget."""
    mask_examples: int = 64
    """Learned mask: training examples (BIO and QA, half each when both exist) it is trained on,
    drawn from those whose questions are not among the evaluated ones where possible."""
    mask_batch_size: int = 16
    """Learned mask: examples per step."""
    seed: int = 0
    """Seeds the mask's examples and the random sets (draw i uses seed + 1 + i)."""

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        bad = [method for method in self.methods if method not in GRAFTING_METHODS]
        if bad or not self.methods:
            raise ValueError(f"grafting.methods must be among {', '.join(GRAFTING_METHODS)}; got "
                             f"{list(self.methods)!r}")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"grafting.share must be in (0, 1]; got {self.share}")
        if self.recovery not in ("ratio", "gain"):
            raise ValueError(f"grafting.recovery must be ratio or gain; got {self.recovery!r}")
        if not 0.0 < self.initial_fraction <= 1.0 or not 0.0 <= self.tolerance < 1.0:
            raise ValueError("grafting.initial_fraction must be in (0, 1] and tolerance in [0, 1)")
        if min(self.max_evaluations, self.mask_examples, self.mask_batch_size) < 1 or \
                min(self.random_draws, self.mask_steps, self.max_questions) < 0:
            raise ValueError("grafting: max_evaluations, mask_examples and mask_batch_size must "
                             "be >= 1; random_draws, mask_steps and max_questions >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "methods": list(self.methods)}


@dataclass
class ReadsSettings:
    method: Literal["occlusion", "grad_x_input"] = "occlusion"
    """"occlusion": the drop in log p(value's first token) when a group is occluded, negative drops
    counted as 0; "grad_x_input": sum over the group's tokens of |grad . embedding| of that log p."""
    occlusion: Literal["replace", "attention"] = "replace"
    """How a group is occluded: "replace" its tokens by the pad token, or "attention": remove them
    from the attention mask (positions kept; an occluded predicting position still sees itself)."""
    subject_pronouns: bool = True
    """Count the pronoun of the value's sentence (he, she, his, her, him) as subject."""
    only_correct: bool = True
    """Only values whose first token the model predicts (argmax at the predicting position)."""
    max_items: int = 96
    """Values per format (BIO, QA of P_train, QA of P_test), a seeded sample; 0: all."""
    batch_size: int = 32
    """Sequences per forward pass."""
    seed: int = 0
    """Seeds the sample of values."""

    def __post_init__(self) -> None:
        if self.method not in ("occlusion", "grad_x_input"):
            raise ValueError(f"reads.method must be occlusion or grad_x_input; got {self.method!r}")
        if self.occlusion not in ("replace", "attention"):
            raise ValueError(f"reads.occlusion must be replace or attention; got "
                             f"{self.occlusion!r}")
        if self.max_items < 0 or self.batch_size < 1:
            raise ValueError("reads.max_items must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RepresentationSettings:
    max_people: int = 64
    """People per group (P_train, P_test), a seeded sample; 0: all."""
    attributes: tuple[str, ...] = ATTRIBUTES
    """The attributes compared (one storage/query pair per person and attribute)."""
    cka_over: Literal["people", "facts"] = "people"
    """"people": CKA of the people x hidden matrices of each attribute, averaged over attributes;
    "facts": one CKA over all person-attribute rows."""
    batch_size: int = 32
    """Sequences per forward pass."""
    seed: int = 0
    """Seeds the sample of people."""

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown or not self.attributes:
            raise ValueError(f"representation.attributes must be among {', '.join(ATTRIBUTES)}; "
                             f"got {list(self.attributes)!r}")
        if self.cka_over not in ("people", "facts"):
            raise ValueError(f"representation.cka_over must be people or facts; got "
                             f"{self.cka_over!r}")
        if self.max_people < 0 or self.batch_size < 1:
            raise ValueError("representation.max_people must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "attributes": list(self.attributes)}


ANALYSES = ("grafting", "representation", "reads")
SETTINGS_CLASSES = {"grafting": GraftingSettings, "representation": RepresentationSettings,
                    "reads": ReadsSettings}


def settings_for(analysis: str, values: Mapping[str, Any], seed: int) -> Any:
    """The analysis's settings dataclass (seed defaults to the run's); bad values: UserError."""
    cls = SETTINGS_CLASSES[analysis]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{analysis} has no setting {', '.join(unknown)} "
                        f"(settings: {', '.join(sorted(known))})")
    try:
        return cls(**{"seed": seed, **values})
    except (TypeError, ValueError) as error:
        raise UserError(f"{analysis}: {error}") from error


ANALYSES_KEY = "analyses"
"""The key of the suite's [trace] table that holds these settings ([trace.analyses])."""


@dataclass
class AnalysesSettings:
    """`[trace.analyses]`: which mechanism analyses run at the end of each run, with what settings.
    Recorded with the result (result.json `analyses.settings`, every analysis's full settings)."""

    what: tuple[str, ...] = ()
    """The analyses to run after the trace: any of "representation", "reads" (each under about
    one evaluation pass) and "grafting" (about 20 evaluations per method: opt-in). Empty: none."""
    grafting: dict[str, Any] = field(default_factory=dict)
    """Grafting's settings that differ from their defaults (docs/analyses.md), e.g.
    {max_questions = 64, methods = ["top_delta"]}; every seed defaults to the run's."""
    representation: dict[str, Any] = field(default_factory=dict)
    """Representation consistency's settings that differ from their defaults."""
    reads: dict[str, Any] = field(default_factory=dict)
    """What-the-model-reads' settings that differ from their defaults."""

    def __post_init__(self) -> None:
        if isinstance(self.what, str) or not isinstance(self.what, list | tuple):
            raise ValueError(f"what must be a list of analyses; got {self.what!r}")
        self.what = tuple(self.what)
        unknown = [name for name in self.what if name not in ANALYSES]
        if unknown or len(set(self.what)) != len(self.what):
            raise ValueError(f"what must name distinct analyses among {', '.join(ANALYSES)}; "
                             f"got {list(self.what)!r}")
        for name in ANALYSES:
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a table of settings; got {getattr(self, name)!r}")
            settings_for(name, getattr(self, name), 0)  # a bad setting fails before training

    def resolved(self, seed: int) -> dict[str, Any]:
        """Each analysis to run, with its settings object (seeds default to `seed`)."""
        return {name: settings_for(name, getattr(self, name), seed) for name in self.what}


def analyses_settings(config: RunConfig) -> AnalysesSettings:
    """The run's [trace.analyses] settings; a bad table is one UserError line."""
    values = config.trace.get(ANALYSES_KEY, {})
    where = f"suite {config.suite}: trace.{ANALYSES_KEY}"
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a table, got {values!r}")
    known = {"what", *ANALYSES}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (keys: "
                        f"{', '.join(sorted(known))})")
    try:
        return AnalysesSettings(**values)
    except (UserError, TypeError, ValueError) as error:
        raise UserError(f"{where}: {error}") from error
