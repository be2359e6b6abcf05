"""The trace's settings, as a suite gives them, and the shapes its functions pass around."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import Tensor, nn

Batch = Mapping[str, Tensor]
Scores = dict[str, Tensor]
Masks = dict[str, Tensor]
Evaluate = Callable[[nn.Module], Mapping[str, float]]

TASKS = ("bio", "qa")

_CHOICES = {
    "mode": ("probe", "training"),
    "score": ("grad", "grad_x_weight"),
    "aggregate": ("summed", "per_example"),
    "ranking": ("global", "per_matrix"),
    "bio_loss": ("values", "all"),
}


@dataclass
class TraceSettings:
    mode: Literal["probe", "training"] = "probe"
    """"probe": score the trained model on probe batches after training; "training": use the scores
    a TrainingTraceRecorder accumulated over the optimizer steps of training."""
    score: Literal["grad", "grad_x_weight"] = "grad_x_weight"
    """"grad": |g| per scalar parameter; "grad_x_weight": |g * theta|, the first-order change of the
    loss if that parameter were zeroed."""
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
        if self.ablation_random_draws < 0:
            raise ValueError(
                f"trace.ablation_random_draws must be >= 0; got {self.ablation_random_draws}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top_k": list(self.top_k)}
