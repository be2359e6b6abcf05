"""The trace's settings, as a suite gives them, and the shapes its functions pass around."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from factrecall_bench import distributed
from factrecall_bench.config import RunConfig
from factrecall_bench.errors import UserError

if TYPE_CHECKING:  # named in quotes below: the settings are checked without importing torch
    from torch import Tensor, nn

Batch = Mapping[str, "Tensor"]
Scores = dict[str, "Tensor"]
Masks = dict[str, "Tensor"]
Evaluate = Callable[["nn.Module"], Mapping[str, float]]

TASKS = ("bio", "qa")
ALL_DEFINITIONS = "all"
"""`definitions = ["all"]`: every definition the trace offers (DEFINITION_NAMES)."""

_CHOICES = {
    "mode": ("probe", "training"),
    "score": ("grad", "grad_x_weight", "update"),
    "aggregate": ("summed", "per_example"),
    "ranking": ("global", "per_matrix"),
    "bio_loss": ("values", "all"),
}


@dataclass(frozen=True)
class TraceDefinition:
    """One reading of "the parameters a task moves": where the scores come from, what is scored
    and how the top-k is ranked. Its name, e.g. "training/update/global", labels its results."""

    mode: str
    score: str
    ranking: str

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.score}/{self.ranking}"

    @classmethod
    def parse(cls, name: str) -> TraceDefinition:
        """From "mode/score/ranking"; a ValueError naming the choices otherwise."""
        parts = name.split("/") if isinstance(name, str) else []
        if len(parts) != 3:
            raise ValueError(f"trace.definitions: {name!r} is not mode/score/ranking "
                             f"(e.g. training/update/global), or {ALL_DEFINITIONS!r}")
        for key, value in zip(("mode", "score", "ranking"), parts, strict=True):
            if value not in _CHOICES[key]:
                raise ValueError(f"trace.definitions: {name!r}: {key} must be one of "
                                 f"{', '.join(_CHOICES[key])}")
        definition = cls(*parts)
        if definition.score == "update" and definition.mode != "training":
            raise ValueError(f"trace.definitions: {name!r}: score 'update' (the summed signed "
                             "lr x gradient of training) exists in mode 'training' only")
        return definition


DEFINITION_NAMES = tuple(
    f"{mode}/{score}/{ranking}"
    for mode, scores in (("training", ("update", "grad", "grad_x_weight")),
                         ("probe", ("grad", "grad_x_weight")))
    for score in scores
    for ranking in ("global", "per_matrix")
)
"""Every definition the trace offers: the paper's reading (training/update) first."""


@dataclass
class TraceSettings:
    mode: Literal["probe", "training"] = "probe"
    """"probe": score the trained model on probe batches after training; "training": use the scores
    a TrainingTraceRecorder accumulated over the optimizer steps of training."""
    score: Literal["grad", "grad_x_weight"] = "grad_x_weight"
    """"grad": |g| per scalar parameter; "grad_x_weight": |g * theta|, the first-order change of the
    loss if that parameter were zeroed; "update" (mode "training" only; the paper's formula as a
    third-party review gives it): |sum over optimizer steps of lr_t * g_task,t|, the signed sum of
    the learning-rate-weighted gradients of the task's examples, so gradients that oscillate
    cancel. Under two-stage training the BIO sum sees stage 1 only and the QA sum stage 2 only."""
    aggregate: Literal["summed", "per_example"] = "summed"
    """Probe mode only. "summed" (default): |gradient of each batch's mean loss|, averaged over the
    batches, one backward per batch. "per_example": |gradient of each example's mean loss|, averaged
    over the examples; one backward per example, so roughly batch-size times slower, and a parameter
    whose per-example gradients cancel still scores high."""
    ranking: Literal["global", "per_matrix"] = "global"
    """"global": one top-k over every scalar parameter of the model; "per_matrix": the same fraction
    inside every parameter tensor (at least one element each), so small tensors are not crowded
    out."""
    top_k: tuple[float, ...] = (0.001, 0.01, 0.05)
    """Fractions of the scored parameters forming each task's top-k set; one analysis per value."""
    probe_examples: int = 256
    """Examples per task used by the probe and the consistency check (the first ones given)."""
    bio_loss: Literal["values", "all"] = "values"
    """Which BIO tokens the caller puts the loss on: "values" (attribute-value tokens) or "all".
    Recorded with the result; this module scores whatever labels it is handed."""
    ablation_random_draws: int = 3
    """Seeded draws of as many random parameters as the shared set holds: the ablation's control."""
    heatmap: bool = False
    """Write a layer x head PNG of the shared set for every k (needs an output folder)."""
    seed: int = 0
    """Seed of the ablation's random draws (draw i uses seed + i)."""
    definitions: tuple[str, ...] = ()
    """Further definitions judged beside the one above (mode/score/ranking names, e.g.
    "probe/grad_x_weight/per_matrix", or ["all"] for DEFINITION_NAMES), computed from the same run:
    probe ones after training, training ones by the same recorder in the same backward passes.
    Each gets shared counts and centralization at every k in result["trace"]["definitions"];
    claims on trace metrics are judged under each. The ablation and heatmap use the main one."""

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"trace.{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        self.top_k = tuple(float(f) for f in self.top_k)
        if not self.top_k or any(not 0.0 < f <= 1.0 for f in self.top_k):
            raise ValueError(f"trace.top_k must be fractions in (0, 1]; got {self.top_k!r}")
        if len(set(self.top_k)) != len(self.top_k):
            raise ValueError(f"trace.top_k has a repeated fraction: {self.top_k!r}")
        if self.probe_examples < 1:
            raise ValueError(f"trace.probe_examples must be >= 1; got {self.probe_examples}")
        if self.score == "update" and self.mode != "training":
            raise ValueError("trace.score 'update' (the summed signed lr x gradient of training) "
                             "needs trace.mode = 'training'")
        self.definitions = _expanded_definitions(self.definitions)
        if self.ablation_random_draws < 0:
            raise ValueError(
                f"trace.ablation_random_draws must be >= 0; got {self.ablation_random_draws}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top_k": list(self.top_k), "definitions": list(self.definitions)}

    @property
    def main_definition(self) -> TraceDefinition:
        return TraceDefinition(self.mode, self.score, self.ranking)

    def all_definitions(self) -> tuple[TraceDefinition, ...]:
        """The main definition first, then the further ones (without repeating it)."""
        main = self.main_definition
        others = [TraceDefinition.parse(name) for name in self.definitions if name != main.name]
        return (main, *others)

    def training_scores_needed(self) -> tuple[str, ...]:
        """The scores a training-mode recorder must accumulate for these definitions."""
        needed = {d.score for d in self.all_definitions() if d.mode == "training"}
        return tuple(score for score in _CHOICES["score"] if score in needed)


def _expanded_definitions(names: Any) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ValueError(f"trace.definitions must be a list of names; got {names!r}")
    if ALL_DEFINITIONS in names:
        return DEFINITION_NAMES
    for name in names:
        TraceDefinition.parse(name)
    if len(set(names)) != len(names):
        raise ValueError(f"trace.definitions has a repeated name: {list(names)!r}")
    return tuple(names)


def trace_settings(config: RunConfig) -> TraceSettings:
    # [trace.analyses] belongs to analyses.at_end, which reads it from the same table
    values = {key: value for key, value in config.trace.items() if key not in ("enabled", "analyses")}
    values.setdefault("seed", config.seed)
    values.setdefault("bio_loss", config.train.bio_loss)
    try:
        return TraceSettings(**values)
    except (TypeError, ValueError) as error:
        raise UserError(f"suite {config.suite}: trace: {error}") from error


def records_during_training(config: RunConfig) -> bool:
    """Whether the run's trace needs scores summed over the optimizer steps (its main definition
    or one of its further definitions is in training mode)."""
    if not config.trace.get("enabled", False):
        return False
    return any(d.mode == "training" for d in trace_settings(config).all_definitions())


def refuse_training_mode_under_a_launcher(config: RunConfig) -> None:
    if records_during_training(config) and distributed.is_distributed():
        raise UserError(f"suite {config.suite}: trace mode 'training' runs in one process only "
                        "(it takes a backward pass per task, which DDP and FSDP do not allow): "
                        "use mode 'probe' (and only probe definitions) or launch without "
                        "accelerate/torchrun")
