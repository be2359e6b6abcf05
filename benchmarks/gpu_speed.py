"""Training speed of one recipe through the library's Trainer: padded vs packed, eager vs compiled.

Each variant trains a fresh model over the same slice of the recipe's batch plan: `warmup` steps
(timed apart: they include torch.compile's compilation), then `steps` timed steps. Tokens are the
examples' own tokens (no padding), so MFU = 6 * parameters * tokens/s / peak is comparable across
variants. The Trainer reads its loss back at the last step of the slice, so the wall time includes
all the device's work. Used by gpu_check.py (`--speed`).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from factrecall_bench.batching import PhasePlan, plan_run
from factrecall_bench.config import RunConfig
from factrecall_bench.data.facts import FactData, load_fact_data
from factrecall_bench.events import EventLog
from factrecall_bench.models import build_model, count_parameters
from factrecall_bench.runner import accelerator_for
from factrecall_bench.train import Trainer


@dataclass(frozen=True)
class SpeedVariant:
    """One way to run the same steps."""

    name: str
    packing: bool
    compiled: bool


VARIANTS = (SpeedVariant("padded", packing=False, compiled=False),
            SpeedVariant("packed", packing=True, compiled=False),
            SpeedVariant("packed_compiled", packing=True, compiled=True))


@dataclass(frozen=True)
class SpeedSettings:
    steps: int
    """Timed optimizer steps per variant."""
    warmup: int
    """Untimed-apart steps first (compilation, allocator warmup)."""
    pack_width: int
    """Packed row width (0: the micro-batch's longest example)."""


GPU_SPEED = SpeedSettings(steps=40, warmup=8, pack_width=512)
TINY_SPEED = SpeedSettings(steps=3, warmup=1, pack_width=0)


class NoSaveTrainer(Trainer):
    """The Trainer without checkpoints: speed of the training step alone."""

    def _checkpoint(self, *args: Any, **kwargs: Any) -> None:
        return None


def measure_speed(config: RunConfig, data_root: Path, settings: SpeedSettings,
                  peak: float | None, variants: tuple[SpeedVariant, ...] = VARIANTS
                  ) -> dict[str, Any]:
    """Every variant on the first warmup + steps batches of the recipe's plan."""
    data = load_fact_data(config.data, config.model, config.eval, data_root)
    plans = plan_run(config.phases, data.source_sizes(), config.train.batch_size, config.seed)
    batches = [batch for plan in plans for batch in plan.batches][:settings.warmup + settings.steps]
    phase = plans[0].phase
    warmup = [PhasePlan(phase, batches[:settings.warmup])]
    timed = [PhasePlan(phase, batches[settings.warmup:])]
    results: dict[str, Any] = {"strategy": config.strategy, "batch_size": config.train.batch_size,
                               **dataclasses.asdict(settings)}
    for variant in variants:
        results[variant.name] = measure_variant(config, data, variant, settings, warmup, timed, peak)
        _free_memory()
    eager = results.get("padded", {}).get("tokens_per_s")
    for variant in variants:
        if eager:
            results[variant.name]["speedup_over_padded"] = round(
                results[variant.name]["tokens_per_s"] / eager, 3)
    return results


def measure_variant(config: RunConfig, data: FactData, variant: SpeedVariant,
                    settings: SpeedSettings, warmup: list[PhasePlan], timed: list[PhasePlan],
                    peak: float | None) -> dict[str, Any]:
    train = dataclasses.replace(config.train, packing=variant.packing,
                                pack_width=settings.pack_width, log_every=10**6)
    accelerator = accelerator_for(train.mixed_precision)
    model = build_model(config.model, data.tokenizer, config.seed)
    parameters = count_parameters(model)
    model = accelerator.prepare_model(model)
    if variant.compiled:
        # The decoder only: both the padded and the packed path call it (the packed one calls
        # it directly, past the model's forward); in place, so parameter names stay the same.
        accelerator.unwrap_model(model).get_decoder().compile()
    _reset_peak_memory()
    with tempfile.TemporaryDirectory() as workdir:
        def trainer(plans: list[PhasePlan]) -> NoSaveTrainer:
            return NoSaveTrainer(model=model, plans=plans, examples=data.examples, train=train,
                                 accelerator=accelerator,
                                 events=EventLog(Path(workdir) / "events.jsonl", "speed"),
                                 checkpoint_dir=Path(workdir) / "checkpoints", pad_id=data.pad_id)

        warmup_s = _wall(trainer(warmup).run)
        started = time.perf_counter()
        outcome = trainer(timed).run()
        timed_s = time.perf_counter() - started
    tokens_per_s = outcome["train_tokens"] / timed_s
    return {"parameters": parameters, "precision": accelerator.mixed_precision,
            "warmup_s": round(warmup_s, 2), "step_s": round(timed_s / settings.steps, 4),
            "tokens_per_s": round(tokens_per_s, 1),
            "mfu": round(6 * parameters * tokens_per_s / peak, 4) if peak else None,
            "peak_memory_gib": _peak_memory_gib()}


def _wall(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
