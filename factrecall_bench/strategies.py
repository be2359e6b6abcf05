"""Strategies as data: each is an ordered list of phases, each phase a mixture of sources.

A suite adds its own without new code (see `custom_strategy_phases` for both spellings):

    [custom_strategies.my-order]
    phases = [
      {name = "qa", epochs = {qa_train = "0.5*qa_epochs"}, lr = "lr"},
      {name = "bio", epochs = {bio = "bio_epochs"}, lr = "0.1*stage2_lr"},
    ]

A value (an epoch count, `lr`, a share in `mix`) is one of VALUE_FORMS: a number (`3e-4`), the
name of a numeric `TrainSpec` field (`"stage2_lr"`), or a factor times one (`"0.1*stage2_lr"`).

Compute rule (documented in the README): every strategy spends the same number of training
examples, hence the same optimizer steps, as the reference two-stage budget:
bio_epochs passes over all biographies plus qa_epochs passes over QA of P_train.
"""

from __future__ import annotations

import dataclasses
import math
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

PHASE_KEYS = ("name", "epochs", "mix", "lr")
PHASE_EXAMPLE = '{name = "qa", epochs = {qa_train = "qa_epochs"}, lr = "0.1*stage2_lr"}'
VALUE_FORMS = ('a number (3e-4), a train setting ("stage2_lr") or FACTOR*SETTING '
               '("0.1*stage2_lr")')
NUMERIC_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainSpec)
                         if f.type in ("float", "int", float, int))
"""The `TrainSpec` fields a phase value may name (numbers only: not `packing`, `bio_loss`)."""
STRATEGY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,47}$")
"""A strategy's name is part of its runs' folder names: no separators, nothing hidden."""

_SCALED = re.compile(r"^\s*(?:(?P<factor>[0-9.eE+-]+)\s*\*\s*)?(?P<name>[a-z_0-9]+)\s*$")


def resolve_value(value: Any, train: TrainSpec, where: str) -> float:
    """One of VALUE_FORMS -> a finite float >= 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _non_negative(float(value), value, where)
    match = _SCALED.match(value) if isinstance(value, str) else None
    if match is None or match["name"] not in NUMERIC_SETTINGS:
        raise UserError(f"{where}: expected {VALUE_FORMS}, got {value!r} (settings: "
                        f"{', '.join(NUMERIC_SETTINGS)})")
    try:
        factor = float(match["factor"]) if match["factor"] else 1.0
    except ValueError as error:
        raise UserError(f"{where}: bad factor in {value!r}; expected {VALUE_FORMS}") from error
    return _non_negative(factor * float(getattr(train, match["name"])), value, where)


def _non_negative(number: float, value: Any, where: str) -> float:
    if not math.isfinite(number) or number < 0:
        raise UserError(f"{where}: {value!r} gives {number}; epochs, learning rates and shares "
                        "must be finite and >= 0")
    return number


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
    _check_phase_keys(spec, where)
    epochs = {source: resolve_value(v, train, where) for source, v in spec["epochs"].items()}
    mix = _resolve_mix(spec.get("mix"), epochs, train, where)
    for source in [*epochs, *mix]:
        if source not in SOURCES:
            raise UserError(f"{where}: unknown source {source!r} (known: {', '.join(SOURCES)})")
    if any(share < 0 for share in mix.values()) or (mix and sum(mix.values()) <= 0):
        raise UserError(f"{where}: mix shares must be >= 0 and not all zero")
    lr = resolve_value(spec.get("lr", "lr"), train, where)
    return Phase(name=str(spec.get("name", "phase")), epochs=epochs, mix=mix, lr=lr)


def _check_phase_keys(spec: Any, where: str) -> None:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: a phase is a table like {PHASE_EXAMPLE}, got {spec!r}")
    unknown = sorted(set(spec) - set(PHASE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (a phase has "
                        f"{', '.join(PHASE_KEYS)}, e.g. {PHASE_EXAMPLE})")
    if not isinstance(spec.get("epochs"), dict) or not spec["epochs"]:
        raise UserError(f"{where}: a phase needs epochs, a table of passes per source, e.g. "
                        f"epochs = {{bio = \"bio_epochs\", qa_train = 2}} (sources: "
                        f"{', '.join(SOURCES)})")


def custom_strategy_phases(table: dict[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    """A suite's `[custom_strategies]` -> each new strategy's phase tables. Either spelling:
    `[custom_strategies.NAME]` with `phases = [...]` (or `[[custom_strategies.NAME.phases]]`),
    or `NAME = [...]` inside `[custom_strategies]`. The phases are checked when a run resolves
    them (`resolve_strategy`, on load)."""
    return {name: _phase_tables(name, entry, f"{where}: custom strategy {name!r}")
            for name, entry in table.items()}


def _phase_tables(name: str, entry: Any, where: str) -> list[dict[str, Any]]:
    if not STRATEGY_NAME.match(name):
        raise UserError(f"{where}: a strategy name is letters, digits and _.+- (it names run "
                        "folders)")
    if name in STRATEGIES:
        raise UserError(f"{where}: {name} is a shipped strategy; give yours another name")
    if isinstance(entry, dict):
        if set(entry) != {"phases"}:
            raise UserError(f"{where}: expected only phases = [...], got key(s) "
                            f"{', '.join(sorted(entry)) or 'none'}")
        entry = entry["phases"]
    if not isinstance(entry, list) or not entry or not all(isinstance(p, dict) for p in entry):
        raise UserError(f"{where}: phases must be a non-empty list of tables like {PHASE_EXAMPLE}")
    return entry


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
