"""A suite's run matrix and what each run's config holds, checked against the suite file itself
(read with tomllib) and the settings' documented defaults: a variant's tables override the suite's
tables key by key, for that variant only; every run gets the suite's eval and trace tables; the
runs are every variant x model x seed x strategy once, in that order."""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from typing import Any

import pytest

from factrecall_bench.config import DataSpec, EvalSpec, ModelSpec, TrainSpec
from factrecall_bench.identity import data_digest
from factrecall_bench.strategies import resolve_strategy
from factrecall_bench.suite import expand_suite, load_suite, parse_suite, shipped_suites

TABLES: dict[str, type[Any]] = {"data": DataSpec, "model": ModelSpec, "train": TrainSpec,
                                "eval": EvalSpec}

VARIANTS_SUITE = """
name = "variants"
seeds = [3, 1]
strategies = ["two-stage", "mixed"]
models = ["tiny-llama", "tiny-neox"]

[data]
n_people = 24
bio_variants = 3

[model]
n_layer = 2
d_model = 32
n_head = 2
d_ff = 64

[train]
lr = 2e-3
stage2_lr = 1e-3
batch_size = 8

[eval]
max_questions = 5

[trace]
enabled = true
top_k = [0.02]

[[variants]]
name = "plain"

[[variants]]
name = "changed"
data = {bio_variants = 1, seed = 7}
model = {n_layer = 1}
train = {stage2_lr = 1e-4, batch_size = 4}

[[variants]]
name = "after"
train = {lr = 5e-4}
"""
"""Three variants: one that changes nothing, one that changes a key of every table it may, and
one after it that changes another key (what the second changed must not reach it)."""


def documented_defaults(cls: type[Any]) -> dict[str, Any]:
    """Each field's default as the dataclass declares it (what a suite that names nothing gets)."""
    defaults = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def expected_table(raw: dict[str, Any], variant: dict[str, Any], table: str) -> dict[str, Any]:
    """A table of one run: the default, overridden by the suite's table, then the variant's."""
    return {**documented_defaults(TABLES[table]), **raw.get(table, {}), **variant.get(table, {})}


def expected_matrix(raw: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    """(variant, model, seed, strategy) of every run, in the order the suite file lists them."""
    variants = [entry["name"] for entry in raw.get("variants", [{"name": "base"}])]
    return list(itertools.product(variants, raw.get("models", ["tiny-llama"]),
                                  raw.get("seeds", [0]),
                                  raw.get("strategies", ["mixed", "two-stage"])))


def assert_table_holds(config: Any, table: str, expected: dict[str, Any]) -> None:
    held = getattr(config, table)
    for key, value in expected.items():
        if key == "name" and table == "model":
            continue  # the model's name is the run's model, from `models`
        got = getattr(held, key)
        wanted = tuple(value) if isinstance(got, tuple) and isinstance(value, list) else value
        assert got == wanted, f"{config.variant}: {table}.{key} is {got!r}, the file says {value!r}"


def assert_runs_follow_the_file(raw: dict[str, Any], configs: list[Any]) -> None:
    assert [(c.variant, c.model.name, c.seed, c.strategy) for c in configs] == expected_matrix(raw)
    variants = {entry["name"]: entry for entry in raw.get("variants", [{"name": "base"}])}
    for config in configs:
        variant = variants[config.variant]
        for table in TABLES:
            assert_table_holds(config, table, expected_table(raw, variant, table))
        assert config.trace == raw.get("trace", {})
        assert config.suite == raw["name"]
    assert len({config.run_id for config in configs}) == len(configs)


def test_each_run_holds_its_variants_settings_over_the_suites_over_the_defaults():
    raw = tomllib.loads(VARIANTS_SUITE)
    configs = expand_suite(parse_suite(raw, "variants.toml"))
    assert_runs_follow_the_file(raw, configs)
    changed = [c for c in configs if c.variant == "changed"]
    assert {(c.data.bio_variants, c.data.seed, c.model.n_layer, c.train.batch_size)
            for c in changed} == {(1, 7, 1, 4)}
    assert {(c.data.bio_variants, c.model.n_layer, c.train.batch_size, c.train.stage2_lr)
            for c in configs if c.variant == "after"} == {(3, 2, 8, 1e-3)}


def test_each_runs_phases_and_data_identity_come_from_its_own_variant():
    raw = tomllib.loads(VARIANTS_SUITE)
    variants = {entry["name"]: entry for entry in raw["variants"]}
    for config in expand_suite(parse_suite(raw, "variants.toml")):
        variant = variants[config.variant]
        train = TrainSpec(**expected_table(raw, variant, "train"))
        assert config.phases == resolve_strategy(config.strategy, train, {}), config.variant
        data = DataSpec(**expected_table(raw, variant, "data"))
        assert config.identity.data == data_digest(data), config.variant


def test_a_suite_that_names_no_variant_or_table_gets_the_defaults():
    raw = {"name": "bare"}
    configs = expand_suite(parse_suite(raw, "bare.toml"))
    assert [(c.variant, c.model.name, c.seed, c.strategy) for c in configs] == [
        ("base", "tiny-llama", 0, "mixed"), ("base", "tiny-llama", 0, "two-stage")]
    assert_runs_follow_the_file(raw, configs)


@pytest.mark.parametrize("name", sorted(name for name, path in shipped_suites().items()
                                        if "[grid]" not in path.read_text("utf-8")),
                         ids=lambda name: f"suite-{name}")  # a bare "gpu" id marks a GPU test
def test_every_shipped_suites_runs_follow_its_file(name):
    raw = tomllib.loads(shipped_suites()[name].read_text("utf-8"))
    assert_runs_follow_the_file(raw, expand_suite(load_suite(name)))
