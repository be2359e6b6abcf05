"""A suite is parsed once into its runs: `Suite.runs` and `Suite.suite_hash` are built when the
Suite is made, equal what a plain rebuild from its settings gives, and no use case builds them
again."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from factrecall_bench import app
from factrecall_bench import suite as suite_module
from factrecall_bench.config import (
    DataSpec,
    EvalSpec,
    ModelSpec,
    RunConfig,
    TrainSpec,
    config_hash,
)
from factrecall_bench.dry_run import dry_run_plan
from factrecall_bench.errors import UserError
from factrecall_bench.identity import run_identity
from factrecall_bench.strategies import resolve_strategy
from factrecall_bench.suite import Suite, load_suite, shipped_suites
from factrecall_bench.verdicts.baselines import read_baseline
from tests.conftest import TINY_SUITE

REPO = Path(__file__).resolve().parents[1]


def _rebuilt_by_hand(suite: Suite) -> list[RunConfig]:
    """Every run from the suite's settings, merged table by table in the order the suite file
    documents (variant, model, seed, strategy): no expand_suite, no cache."""
    runs = []
    for variant, model, seed, strategy in itertools.product(
            suite.variants, suite.models, suite.seeds, suite.strategies):
        data = DataSpec(**{**suite.base["data"], **variant.data})
        model_spec = ModelSpec(**{**suite.base["model"], **variant.model, "name": model})
        train = TrainSpec(**{**suite.base["train"], **variant.train})
        runs.append(RunConfig(
            suite=suite.name, variant=variant.name, strategy=strategy, seed=seed, data=data,
            model=model_spec, train=train, eval=EvalSpec(**suite.base["eval"]),
            phases=resolve_strategy(strategy, train, suite.custom_strategies),
            trace=dict(suite.trace), identity=run_identity(data, model_spec)))
    return runs


def _hash_by_hand(runs: list[RunConfig]) -> str:
    """The suite hash as its definition reads: the hash of its runs' sorted config hashes."""
    return config_hash(sorted(config_hash(run) for run in runs))


@pytest.mark.parametrize("name", sorted(shipped_suites()), ids=lambda name: f"{name}.toml")
def test_a_shipped_suites_runs_and_hash_equal_a_rebuild_from_its_settings(name):
    """Every shipped suite, the gpu one included (building its runs needs no GPU)."""
    suite = load_suite(name)
    by_hand = _rebuilt_by_hand(suite)
    assert [run.run_id for run in suite.runs] == [run.run_id for run in by_hand]
    assert [config_hash(run) for run in suite.runs] == [config_hash(run) for run in by_hand]
    assert suite.suite_hash == _hash_by_hand(by_hand)


def test_the_cpu_suites_hash_is_the_one_its_shipped_baseline_was_stored_for():
    """The baseline was written by `baseline update` before the suite carried its runs."""
    stored = read_baseline(REPO / "baselines" / "cpu.json", expected_suite="cpu")
    assert load_suite("cpu").suite_hash == stored["suite_hash"]


def test_a_variations_runs_and_hash_follow_its_overrides():
    suite = load_suite("cpu")
    variation = load_suite("cpu", ["train.stage2_lr=3e-4"])
    assert variation.suite_hash == _hash_by_hand(_rebuilt_by_hand(variation))
    assert variation.suite_hash != suite.suite_hash
    two_stage = [run for run in variation.runs if run.strategy == "two-stage"]
    assert two_stage and {run.phases[-1].lr for run in two_stage} == {3e-4}


def test_replacing_a_setting_builds_the_runs_again():
    """dataclasses.replace makes a new Suite: its runs are never the old ones (a single run, the
    `--strategy` path, is made this way)."""
    suite = load_suite(str(TINY_SUITE))
    single = app.single_run_suite(suite, "mixed", "tiny-llama", 7)
    assert [(run.strategy, run.seed) for run in single.runs] == [("mixed", 7)]
    assert single.suite_hash == _hash_by_hand(_rebuilt_by_hand(single))
    assert single.suite_hash != suite.suite_hash
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        dataclasses.replace(suite, strategies=("nope",))


def test_a_suite_is_expanded_once_and_no_use_case_expands_it_again(monkeypatch, tmp_path):
    calls = []
    expand = suite_module.expand_suite
    monkeypatch.setattr(suite_module, "expand_suite",
                        lambda suite: calls.append(suite.name) or expand(suite))
    suite = load_suite(str(TINY_SUITE))
    assert calls == ["tiny"]
    dry_run_plan(suite, tmp_path)
    app.check_suite_settings(suite)
    app.check_suite_can_run(suite)
    app.judge_suite(suite, [], tmp_path)
    assert suite.suite_hash and len(suite.runs) == 4
    assert calls == ["tiny"]
