"""Suites: a TOML file naming the matrix of runs (variants x models x strategies x seeds).

Shipped suites live in `factrecall_bench/suites/`; `--suite NAME` finds them by name and
`--suite path/to/file.toml` reads any other.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factrecall_bench.config import (
    DataSpec,
    EvalSpec,
    ModelSpec,
    RunConfig,
    TrainSpec,
    check_fields,
    config_hash,
    from_dict,
)
from factrecall_bench.errors import UserError
from factrecall_bench.identity import run_identity, training_identity
from factrecall_bench.model_families import check_model_name
from factrecall_bench.strategies import custom_strategy_phases, resolve_strategy
from factrecall_bench.suite_file import (  # noqa: F401  (shipped_suites re-exported)
    SAFE_NAME,
    apply_overrides,
    check_variation_name,
    default_variation_name,
    find_suite,
    parent_suite_path,
    read_suite_toml,
    shipped_suites,
    suite_table,
)
from factrecall_bench.verdicts import BaselineSubject, Claim, RegressionSettings, check_claim_seeds

SUITE_KEYS = {"name", "description", "ci", "seeds", "strategies", "models", "jobs", "data",
              "model", "train", "eval", "trace", "variants", "custom_strategies", "claims",
              "regression", "needs_gpu", "grid", "log_with"}


@dataclass(frozen=True)
class Variant:
    """A named set of overrides (of data, model, train) applied to every run of a suite."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridAxis:
    """One key of a suite's `[grid]`: every value gets its own variants."""

    table: str
    """`data`, `model` or `train`."""
    key: str
    """A field of that table, e.g. `stage2_lr`."""
    values: tuple[Any, ...]
    """The values crossed, in the file's order."""
    label: str
    """How the key reads in variant names (`LABEL=VALUE`): `[grid.labels]`, else the key."""


@dataclass(frozen=True)
class Suite:
    """A parsed suite file."""

    name: str
    description: str
    ci: bool
    needs_gpu: bool
    seeds: tuple[int, ...]
    strategies: tuple[str, ...]
    models: tuple[str, ...]
    jobs: int
    base: dict[str, dict[str, Any]]
    variants: tuple[Variant, ...]
    trace: dict[str, Any]
    custom_strategies: dict[str, list[dict[str, Any]]]
    claims: tuple[Claim, ...]
    """Parsed once, on load, and checked against the number of seeds."""
    regression: RegressionSettings
    source: str
    grid: tuple[GridAxis, ...] = ()
    """The `[grid]` axes; already crossed into `variants` (kept to show where they came from)."""
    log_with: str | None = None
    """`log_with = ["tensorboard"]`: the trackers its runs report to, comma-joined as
    `RunOptions.log_with` takes them; None when the suite names none."""
    overrides: tuple[str, ...] = ()
    """The `--set TABLE.KEY=VALUE` items applied to the file: a variation of the suite when any."""
    variation: str = ""
    """A variation's name (`--name`, or one made from the overrides): its report.md and
    verdicts.json go to RUNS_DIR/<variation>/, never over the suite's; "" for the suite itself."""
    unvaried_identities: frozenset[str] | None = None
    """A variation's: the training identities of the suite's runs as its file says, which its
    baseline speaks for (None: not a variation, every run is the suite's own)."""
    extends: str = ""
    """The name of the suite this one `extends` ("" if none): with no baseline of its own, the
    suite is compared with that suite's baseline, for the runs trained as that suite's are."""
    extended_identities: frozenset[str] = frozenset()
    """The training identities of the extended suite's runs (what its baseline speaks for)."""
    given_as: str = ""
    """How the command line named the suite (`cpu`, `my/low2.toml`); "" when it was not loaded
    from a command line (then its name)."""

    @property
    def command_arguments(self) -> str:
        """What a hint tells the user to pass to name this suite again: `--suite my/low2.toml`,
        with the variation's `--set` items."""
        parts = ["--suite", self.given_as or self.name]
        for item in self.overrides:
            parts += ["--set", item]
        if self.overrides and self.variation != default_variation_name(self.name, self.overrides):
            parts += ["--name", self.variation]
        return shlex.join(parts)

    runs: tuple[RunConfig, ...] = field(init=False, repr=False, compare=False)
    """Every run's resolved config, in a stable order (variant, model, seed, strategy): built
    and validated once, when the Suite is made (`dataclasses.replace` builds them anew)."""
    suite_hash: str = field(init=False, repr=False, compare=False)
    """A hash of what decides the suite's results: its runs' resolved configs. Claims,
    description, regression settings and `jobs` do not change a number, so editing them
    leaves a stored baseline valid; changing a run does not."""

    def __post_init__(self) -> None:
        runs = tuple(expand_suite(self))  # a bad run config is refused here, not mid-suite
        object.__setattr__(self, "runs", runs)  # frozen: set once, here
        object.__setattr__(self, "suite_hash", runs_hash(runs))

    @property
    def report_name(self) -> str:
        """The folder under the runs folder that holds this suite's (or variation's) report."""
        return self.variation or self.name

    @property
    def baseline_subject(self) -> BaselineSubject:
        """What comparing its runs with its stored baseline reads of the suite."""
        return BaselineSubject(self.name, self.suite_hash, self.regression,
                               variation=bool(self.overrides),
                               own_identities=self.unvaried_identities, extends=self.extends,
                               extended_identities=self.extended_identities,
                               command_arguments=shlex.join(
                                   ["--suite", self.given_as or self.name]))

    def trackers(self, command_line: str | None) -> str | None:
        """The trackers a run of this suite reports to: `--log-with` when given (the command
        line wins; `--log-with ""` turns the suite's off), else the suite's `log_with`."""
        return command_line if command_line is not None else self.log_with


def load_suite(name_or_path: str, overrides: Sequence[str] = (),
               variation_name: str | None = None) -> Suite:
    """A suite by name or path, with `--set` overrides applied before it is validated; with
    overrides it is a variation, named `variation_name` (`--name`) or after the overrides.
    Its runs are built once, when the Suite is made."""
    path = find_suite(name_or_path)
    raw = suite_table(path)
    known = {"given_as": name_or_path, **_parent_fields(path)}
    if not overrides:
        if variation_name is not None:
            raise UserError(f"--name {variation_name!r} names a variation: give it with --set "
                            "TABLE.KEY=VALUE (the suite's own report keeps the suite's name)")
        return parse_suite(raw, str(path), known)
    varied = apply_overrides(raw, overrides)
    where = f"{path} with --set {' '.join(overrides)}"
    suite_name = varied.get("name")
    if not isinstance(suite_name, str):
        parse_suite(varied, where)  # says what is wrong with the name
        raise AssertionError("unreachable: a suite without a name is refused")
    name = variation_name if variation_name is not None else default_variation_name(
        suite_name, overrides)
    check_variation_name(name, suite_name)
    return parse_suite(varied, where, {**known, "overrides": tuple(overrides), "variation": name,
                                       "unvaried_identities": _unvaried_identities(raw, path)})


def _parent_fields(path: Path) -> dict[str, Any]:
    """The name and run identities of the suite the file at `path` `extends` ({} if none)."""
    parent_name = read_suite_toml(path).get("extends")
    if parent_name is None:
        return {}
    parent_path = parent_suite_path(parent_name, path)
    parent = parse_suite(suite_table(parent_path), str(parent_path))
    return {"extends": parent.name,
            "extended_identities": frozenset(training_identity(c) for c in parent.runs)}


def _unvaried_identities(raw: dict[str, Any], path: Path) -> frozenset[str]:
    """The training identities of the suite's runs as its file says (none if the file is valid
    only with the overrides)."""
    try:
        unvaried = parse_suite(raw, str(path))
    except UserError:
        return frozenset()
    return frozenset(training_identity(config) for config in unvaried.runs)


def _typed_list(raw: dict[str, Any], key: str, kind: type, default: list[Any], where: str
                ) -> tuple[Any, ...]:
    values = raw.get(key, default)
    if not isinstance(values, list) or not values or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise UserError(f"{where}: {key} must be a non-empty list of {kind.__name__}")
    return tuple(values)


def parse_suite(raw: dict[str, Any], where: str, known: Mapping[str, Any] | None = None
                ) -> Suite:
    """The Suite a table describes (`where` names it in errors); `known`: the fields loading
    knows besides the table (how it was named, a variation's overrides, what it extends)."""
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise UserError(f"{where}: the suite needs a name")
    _check_safe_name(raw["name"], "suite name", where)
    _refuse_strategy_table(raw, where)
    base = {key: _table(raw, key, where) for key in ("data", "model", "train", "eval")}
    grid = _grid(raw, where)
    return Suite(
        name=raw["name"], description=str(raw.get("description", "")),
        ci=bool(raw.get("ci", False)), needs_gpu=bool(raw.get("needs_gpu", False)),
        seeds=_typed_list(raw, "seeds", int, [0], where),
        strategies=_typed_list(raw, "strategies", str, ["mixed", "two-stage"], where),
        models=_typed_list(raw, "models", str, ["tiny-llama"], where),
        jobs=_jobs(raw, where), base=base, variants=_crossed(_variants(raw, where), grid, where),
        trace=_table(raw, "trace", where),
        custom_strategies=custom_strategy_phases(_table(raw, "custom_strategies", where), where),
        claims=_claims(raw, where), regression=_regression(raw, where),
        source=where, grid=grid, log_with=_log_with(raw, where), **(known or {}))


def _refuse_strategy_table(raw: dict[str, Any], where: str) -> None:
    """`[strategies.NAME]` is how one might guess a new strategy is written; say where it goes."""
    if isinstance(raw.get("strategies"), dict):
        raise UserError(f"{where}: strategies is the list of strategies to run, e.g. "
                        "[\"two-stage\", \"my-recipe\"]; write a new one's phases under "
                        "[custom_strategies.my-recipe]")


def _jobs(raw: dict[str, Any], where: str) -> int:
    jobs = raw.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= 64:
        raise UserError(f"{where}: jobs must be an integer from 1 to 64, got {jobs!r}")
    return jobs


def _log_with(raw: dict[str, Any], where: str) -> str | None:
    """`log_with`: a list of tracker names accelerate knows (whether each is installed is
    checked before a run starts, as for `--log-with`)."""
    if "log_with" not in raw:
        return None
    names = raw["log_with"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise UserError(f"{where}: log_with must be a list of tracker names, e.g. "
                        f"[\"tensorboard\"], got {names!r}")
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS  # only for suites that name trackers

    unknown = sorted({n.strip().lower() for n in names} - set(LOGGER_TYPE_TO_CLASS))
    if unknown:
        raise UserError(f"{where}: log_with: {', '.join(unknown)} is not a tracker accelerate "
                        f"knows (known: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
    return ",".join(n.strip().lower() for n in names)


def _claims(raw: dict[str, Any], where: str) -> tuple[Claim, ...]:
    claims = raw.get("claims", [])
    if not isinstance(claims, list):
        raise UserError(f"{where}: claims must be a list of tables ([[claims]])")
    seeds = raw.get("seeds", [0])
    parsed = []
    for claim in claims:
        try:
            parsed.append(Claim.from_dict(claim))
            check_claim_seeds(parsed[-1], len(seeds) if isinstance(seeds, list) else 1)
        except (ValueError, TypeError) as error:
            raise UserError(f"{where}: {error}") from error
    return tuple(parsed)


def _regression(raw: dict[str, Any], where: str) -> RegressionSettings:
    try:
        return RegressionSettings.from_table(_table(raw, "regression", where))
    except (ValueError, TypeError) as error:
        raise UserError(f"{where}: {error}") from error


def _check_safe_name(name: str, what: str, where: str) -> None:
    if not SAFE_NAME.match(name) or ".." in name:
        raise UserError(f"{where}: {what} {name!r} must be letters, digits and _.=+- "
                        "(it names a folder inside the runs folder)")


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: {key} must be a table")
    return value


def _variants(raw: dict[str, Any], where: str) -> tuple[Variant, ...]:
    entries = raw.get("variants", [{"name": "base"}])
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{where}: variants must be a non-empty list of tables")
    variants = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UserError(f"{where}: every variant needs a name")
        _check_safe_name(entry["name"], "variant name", where)
        extra = set(entry) - {"name", "data", "model", "train"}
        if extra:
            raise UserError(f"{where}: variant {entry['name']}: unknown key(s) {sorted(extra)}")
        variants.append(Variant(entry["name"], *(_table(entry, k, where)
                                                 for k in ("data", "model", "train"))))
    return tuple(variants)


GRID_TABLES: dict[str, type[Any]] = {"data": DataSpec, "model": ModelSpec, "train": TrainSpec}


def _grid(raw: dict[str, Any], where: str) -> tuple[GridAxis, ...]:
    """`[grid]`: `"TABLE.KEY" = [values]` per axis, and `[grid.labels]` naming axes in variant
    names; each key and value is checked like the suite's own tables."""
    table = _table(raw, "grid", where)
    labels = _table(table, "labels", f"{where}: grid")
    axes = [_grid_axis(key, values, labels, where) for key, values in table.items()
            if key != "labels"]
    if "grid" in raw and not axes:
        raise UserError(f"{where}: grid crosses no key; give e.g. \"train.stage2_lr\" = [1e-3, 3e-4]")
    stray = sorted(set(labels) - {f"{axis.table}.{axis.key}" for axis in axes})
    if stray:
        raise UserError(f"{where}: grid.labels names key(s) the grid does not cross: "
                        f"{', '.join(stray)}")
    return tuple(axes)


def _grid_axis(name: str, values: Any, labels: dict[str, Any], where: str) -> GridAxis:
    here = f"{where}: grid {name!r}"
    table, _, key = name.partition(".")
    if table not in GRID_TABLES or not key or "." in key:
        raise UserError(f"{here}: expected \"TABLE.KEY\" with TABLE one of "
                        f"{', '.join(GRID_TABLES)}, e.g. \"train.stage2_lr\"")
    if name == "model.name":
        raise UserError(f"{here}: models are crossed by models = [...], not the grid")
    if not isinstance(values, list) or not values:
        raise UserError(f"{here}: expected a non-empty list of values")
    if len({_value_text(value) for value in values}) != len(values):
        raise UserError(f"{here}: a value is listed twice")
    for value in values:
        check_fields(GRID_TABLES[table], {key: value}, f"{where}: grid {table}")
    label = labels.get(name, key)
    if not isinstance(label, str) or not SAFE_NAME.match(label):
        raise UserError(f"{where}: grid.labels {name!r} must be a short name of letters, "
                        f"digits and _.=+-, got {label!r}")
    return GridAxis(table, key, tuple(values), label)


def _value_text(value: Any) -> str:
    """A value as it reads in a variant name: `1e-3` rather than `0.001`, `true`, `16`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        mantissa, _, exponent = f"{value:e}".partition("e")
        scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return min(repr(value), scientific, key=len)  # the decimal form on a tie
    return str(value)


def _crossed(variants: tuple[Variant, ...], grid: tuple[GridAxis, ...], where: str
             ) -> tuple[Variant, ...]:
    """Each variant once per combination of the grid's values, named `VARIANT-LABEL=VALUE-...`
    (without the `base-` of a suite that declares no variants)."""
    if not grid:
        return _distinct(variants, where)
    prefix_names = [variant.name != "base" or len(variants) > 1 for variant in variants]
    crossed = []
    for variant, prefixed in zip(variants, prefix_names):
        _refuse_grid_in_variant(variant, grid, where)
        for point in itertools.product(*(axis.values for axis in grid)):
            crossed.append(_grid_variant(variant, prefixed, grid, point, where))
    return _distinct(tuple(crossed), where)


def _grid_variant(variant: Variant, prefixed: bool, grid: tuple[GridAxis, ...],
                  point: tuple[Any, ...], where: str) -> Variant:
    parts = [f"{axis.label}={_value_text(value)}" for axis, value in zip(grid, point)]
    name = "-".join([variant.name, *parts] if prefixed else parts)
    _check_safe_name(name, "grid variant name", where)
    tables: dict[str, dict[str, Any]] = {t: dict(getattr(variant, t)) for t in GRID_TABLES}
    for axis, value in zip(grid, point):
        tables[axis.table][axis.key] = value
    return Variant(name, tables["data"], tables["model"], tables["train"])


def _refuse_grid_in_variant(variant: Variant, grid: tuple[GridAxis, ...], where: str) -> None:
    for axis in grid:
        if axis.key in getattr(variant, axis.table):
            raise UserError(f"{where}: variant {variant.name!r} sets {axis.table}.{axis.key}, "
                            "which the grid crosses; set it in one place")


def _distinct(variants: tuple[Variant, ...], where: str) -> tuple[Variant, ...]:
    names = [variant.name for variant in variants]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"{where}: two variants are named {twice[0]!r}")
    return variants


def _run_config(suite: Suite, variant: Variant, model_name: str, strategy: str, seed: int
                ) -> RunConfig:
    where = f"suite {suite.name}, variant {variant.name}"
    data = from_dict(DataSpec, {**suite.base["data"], **variant.data}, f"{where}: data")
    model = from_dict(ModelSpec, {**suite.base["model"], **variant.model, "name": model_name},
                      f"{where}: model")
    train = from_dict(TrainSpec, {**suite.base["train"], **variant.train}, f"{where}: train")
    evaluation = from_dict(EvalSpec, suite.base["eval"], f"{where}: eval")
    phases = resolve_strategy(strategy, train, suite.custom_strategies)
    return RunConfig(suite=suite.name, variant=variant.name, strategy=strategy, seed=seed,
                     data=data, model=model, train=train, eval=evaluation, phases=phases,
                     trace=dict(suite.trace), identity=run_identity(data, model))


def expand_suite(suite: Suite) -> list[RunConfig]:
    """Every run of the suite, in a stable order (variant, model, seed, strategy), built from its
    settings: what `Suite` does once when it is made. Read `suite.runs` instead."""
    for model_name in suite.models:
        check_model_name(model_name)
    return [_run_config(suite, variant, model_name, strategy, seed)
            for variant in suite.variants for model_name in suite.models
            for seed in suite.seeds for strategy in suite.strategies]


def runs_hash(runs: Sequence[RunConfig]) -> str:
    """The suite hash of these runs: independent of their order."""
    return config_hash(sorted(config_hash(config) for config in runs))
