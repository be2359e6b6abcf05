"""Strategies as data: each is an ordered list of phases, each phase a mixture of sources.

Values in a phase may be numbers or names of `TrainSpec` fields, optionally scaled
("0.5*qa_epochs"), so a suite can add an order without new code:

    [strategies.my-order]
    phases = [{name = "qa", epochs = {qa_train = "qa_epochs"}, lr = "lr"}, ...]

Compute rule (documented in the README): every strategy spends the same number of training
examples, hence the same optimizer steps, as the reference two-stage budget:
bio_epochs passes over all biographies plus qa_epochs passes over QA of P_train.
"""

from __future__ import annotations

import re
from typing import Any

from factrecall_bench.config import Phase, TrainSpec
from factrecall_bench.errors import UserError

SOURCES = ("bio", "qa_train")

STRATEGIES: dict[str, list[dict[str, Any]]] = {
    "two-stage": [
        {"name": "bio", "epochs": {"bio": "bio_epochs"}, "lr": "lr"},
        {"name": "qa", "epochs": {"qa_train": "qa_epochs"}, "lr": "stage2_lr"},
    ],
    "mixed": [
        {"name": "mixed", "epochs": {"bio": "bio_epochs", "qa_train": "qa_epochs"},
         "mix": "qa_share", "lr": "lr"},
    ],
    "pit": [
        {"name": "qa", "epochs": {"qa_train": "0.5*qa_epochs"}, "lr": "lr"},
        {"name": "mixed", "epochs": {"bio": "bio_epochs", "qa_train": "0.5*qa_epochs"},
         "lr": "stage2_lr"},
    ],
    "two-stage-replay": [
        {"name": "bio", "epochs": {"bio": "bio_epochs"}, "lr": "lr"},
        {"name": "qa+replay", "epochs": {"qa_train": "qa_epochs"}, "mix": "replay_share",
         "lr": "stage2_lr"},
    ],
    "bio-only": [
        {"name": "bio", "epochs": {"bio": "bio_epochs", "qa_train": "qa_epochs"},
         "mix": {"bio": 1.0}, "lr": "lr"},
    ],
}
"""The registry. `mix` may be a table of shares, or the name of a share setting: `qa_share`
gives QA that share of a mixed phase (0 = keep the natural share), `replay_share` gives BIO
that share of a QA phase."""

_SCALED = re.compile(r"^\s*(?:(?P<factor>[0-9.eE+-]+)\s*\*\s*)?(?P<name>[a-z_0-9]+)\s*$")


def resolve_value(value: Any, train: TrainSpec, where: str) -> float:
    """A number, a TrainSpec field name, or "factor*field" -> a float."""
    if isinstance(value, bool):
        raise UserError(f"{where}: expected a number or a setting name, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _SCALED.match(value) if isinstance(value, str) else None
    if match is None or not hasattr(train, match["name"]):
        raise UserError(f"{where}: expected a number or a train setting name, got {value!r}")
    try:
        factor = float(match["factor"]) if match["factor"] else 1.0
    except ValueError as error:
        raise UserError(f"{where}: bad factor in {value!r}") from error
    return factor * float(getattr(train, match["name"]))


def _resolve_mix(mix: Any, epochs: dict[str, float], train: TrainSpec, where: str
                 ) -> dict[str, float]:
    if not mix:
        return {}
    if isinstance(mix, dict):
        return {source: resolve_value(share, train, where) for source, share in mix.items()}
    if mix == "qa_share":
        return {} if train.qa_share == 0 else {"bio": 1 - train.qa_share, "qa_train": train.qa_share}
    if mix == "replay_share":
        keep = train.replay_share
        return {} if keep == 0 else {"qa_train": 1 - keep, "bio": keep}
    raise UserError(f"{where}: mix must be a table of shares, 'qa_share' or 'replay_share'")


def resolve_phase(spec: dict[str, Any], train: TrainSpec, where: str) -> Phase:
    unknown = set(spec) - {"name", "epochs", "mix", "lr"}
    if unknown or "epochs" not in spec or not isinstance(spec["epochs"], dict):
        raise UserError(f"{where}: a phase needs 'epochs' (a table) and may have name, mix, lr")
    epochs = {source: resolve_value(v, train, where) for source, v in spec["epochs"].items()}
    mix = _resolve_mix(spec.get("mix"), epochs, train, where)
    for source in [*epochs, *mix]:
        if source not in SOURCES:
            raise UserError(f"{where}: unknown source {source!r} (known: {', '.join(SOURCES)})")
    if any(share < 0 for share in mix.values()) or (mix and sum(mix.values()) <= 0):
        raise UserError(f"{where}: mix shares must be >= 0 and not all zero")
    lr = resolve_value(spec.get("lr", "lr"), train, where)
    return Phase(name=str(spec.get("name", "phase")), epochs=epochs, mix=mix, lr=lr)


def resolve_strategy(name: str, train: TrainSpec,
                     extra: dict[str, list[dict[str, Any]]] | None = None) -> tuple[Phase, ...]:
    """The phases of a registered (or suite-defined) strategy under these train settings."""
    registry = {**STRATEGIES, **(extra or {})}
    if name not in registry:
        raise UserError(f"unknown strategy {name!r} (known: {', '.join(sorted(registry))})")
    phases = tuple(resolve_phase(spec, train, f"strategy {name} phase {i}")
                   for i, spec in enumerate(registry[name]))
    if not phases:
        raise UserError(f"strategy {name!r} has no phases")
    return phases
