"""Reliability: bad files never crash, locks keep runs apart, divergence fails one run only."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from factrecall_bench.config import DataSpec, EvalSpec, ModelSpec, TrainSpec
from factrecall_bench.errors import UserError
from factrecall_bench.events import read_events
from factrecall_bench.runner import run_one
from factrecall_bench.strategies import STRATEGIES
from factrecall_bench.suite import find_suite, load_suite, parse_suite
from factrecall_bench.verdicts.baselines import BaselineError, read_baseline
from tests.conftest import TESTS, run_cli

MICRO = TESTS / "data" / "suites" / "micro.toml"
PACKAGE = Path(__file__).parent.parent / "factrecall_bench"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

toml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=3),
    max_leaves=8)
suite_keys = st.sampled_from(["name", "seeds", "strategies", "models", "jobs", "data", "model",
                              "train", "eval", "trace", "variants", "claims", "regression", "x"])


def _field_values(spec: type) -> st.SearchStrategy[dict]:
    """Optional entries of one suite table: mostly valid values of each field's type, some not."""
    choices = {"bio_loss": ["all", "values"], "mixed_precision": ["auto", "no"],
               "name": ["tiny-llama", "tiny-neox"], "d_model": [16, 32, 64], "n_head": [1, 2, 4],
               "batch_size": [8, 16, 32], "grad_accum": [1, 2]}
    values = {}
    for field in dataclasses.fields(spec):
        default = getattr(spec(), field.name)
        if field.name in choices:
            values[field.name] = st.sampled_from(choices[field.name])
        elif isinstance(default, bool):
            values[field.name] = st.booleans()
        elif isinstance(default, int):
            values[field.name] = st.integers(1, 2 * max(default, 2))
        elif isinstance(default, float):
            values[field.name] = st.floats(0.0, 1.0) if default <= 1 else st.floats(0, 2 * default)
    return st.fixed_dictionaries({}, optional=values)


_CPU_SUITE = tomllib.loads(find_suite("cpu").read_text())
_TABLES = {"data": DataSpec, "model": ModelSpec, "train": TrainSpec, "eval": EvalSpec}
plausible_suites = st.fixed_dictionaries(
    {"name": st.just("fuzz")},
    optional={
        "seeds": st.lists(st.integers(0, 99), min_size=1, max_size=3),
        "strategies": st.lists(st.sampled_from(sorted(STRATEGIES)), min_size=1, max_size=3,
                               unique=True),
        "models": st.lists(st.sampled_from(["tiny-llama", "tiny-neox"]), min_size=1, unique=True),
        "jobs": st.integers(0, 4),
        **{table: _field_values(spec) for table, spec in _TABLES.items() if table != "model"},
        "model": _field_values(ModelSpec).map(lambda m: {k: v for k, v in m.items() if k != "name"}),
        "variants": st.lists(st.fixed_dictionaries(
            {}, optional={"data": _field_values(DataSpec), "train": _field_values(TrainSpec)}),
            min_size=1, max_size=3).map(
                lambda variants: [{"name": f"v{i}", **v} for i, v in enumerate(variants)]),
        "claims": st.lists(st.sampled_from(_CPU_SUITE["claims"]), max_size=3),
    })
"""Suites near the valid ones, so most load and the checks behind the first one are reached."""
one_bad_entry = st.tuples(plausible_suites, suite_keys, toml_values).map(
    lambda drawn: {**drawn[0], drawn[1]: drawn[2]})


@FAST
@given(st.integers(0, 9).flatmap(lambda k: plausible_suites if k < 7 else one_bad_entry if k < 9
                                 else st.dictionaries(suite_keys, toml_values, max_size=6)))
def test_any_suite_table_loads_or_is_one_user_error(raw):
    try:
        suite = parse_suite({"name": "fuzz", **raw} if "name" not in raw else raw, "fuzz.toml")
    except UserError as error:
        event("refused")
        assert "\n" not in str(error).strip()
        return
    event("loaded")
    configs = suite.runs
    assert len(configs) == (len(suite.variants) * len(suite.models) * len(suite.seeds)
                            * len(suite.strategies))
    for config in configs:  # every setting the suite names reaches its runs
        (variant,) = [v for v in raw.get("variants", [{"name": "base"}])
                      if v["name"] == config.variant]
        for table in ("data", "train"):
            for key, value in {**raw.get(table, {}), **variant.get(table, {})}.items():
                assert getattr(getattr(config, table), key) == value


@FAST
@given(st.binary(max_size=300))
def test_any_suite_bytes_load_or_are_one_user_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("suite") / "fuzz.toml"
    path.write_bytes(data)
    with pytest.raises(UserError):
        load_suite(str(path))


@FAST
@given(st.binary(max_size=400) | toml_values.map(lambda v: json.dumps(v).encode()))
def test_any_baseline_bytes_are_one_baseline_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("baseline") / "cpu.json"
    path.write_bytes(data)
    with pytest.raises(BaselineError) as caught:
        read_baseline(path, expected_suite="cpu")
    assert str(path) in str(caught.value)


@FAST
@given(st.lists(st.binary(max_size=80) | toml_values.map(json.dumps).map(str.encode), max_size=8))
def test_event_logs_never_crash_the_reader(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    data = b"\n".join(lines)
    path.write_bytes(data)
    read = read_events(path)
    assert len(read.events) + len(read.bad_lines) <= data.count(b"\n") + 1
    assert all(isinstance(event["event"], str) for event in read.events)


def test_non_utf8_suite_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"name = \"\xff\xfe\"\n")
    result = run_cli("run", "--suite", str(path), "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x" * 80])
def test_names_cannot_escape_the_runs_folder(name):
    with pytest.raises(UserError, match="folder"):
        parse_suite({"name": name}, "test")
    with pytest.raises(UserError, match="folder"):
        parse_suite({"name": "ok", "variants": [{"name": name}]}, "test")


def test_a_run_locked_by_another_process_is_left_alone(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    lock = tmp_path / "micro" / config.run_id / ".lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); "
        "l.acquire(); print('held', flush=True); time.sleep(60)"), str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        outcome = run_one(config, tmp_path)
    finally:
        holder.kill()
    assert outcome.status == "busy"
    assert not (lock.parent / "events.jsonl").exists()


def test_divergence_fails_that_run_and_the_suite_goes_on(tmp_path):
    suite_file = tmp_path / "diverge.toml"
    suite_file.write_text(MICRO.read_text().replace('strategies = ["two-stage"]',
                                                    'strategies = ["two-stage", "explode"]')
                          + '\n[custom_strategies]\nexplode = [{name = "bio", '
                            'epochs = {bio = 5}, lr = 1e6}]\n'
                          + '\n[[claims]]\nname = "two-stage beats explode"\nwhy = "t"\n'
                            'metric = "ood_exact_match"\nkind = "greater"\na = "two-stage"\n'
                            'b = "explode"\ntest = "welch"\n')
    result = run_cli("run", "--suite", str(suite_file), "--runs-dir", str(tmp_path), "--json")
    assert result.returncode == 4, result.stderr  # a run failed (exit_codes.RUNS_FAILED)
    document = json.loads(result.stdout)["suites"][0]
    statuses = {row["run_id"].split("-tiny")[0]: row for row in document["runs"]}
    assert statuses["two-stage"]["status"] == "finished"
    assert statuses["explode"]["status"] == "failed"
    assert re.search("diverged|nan", statuses["explode"]["reason"], re.IGNORECASE)
    assert document["verdicts"][0]["status"] == "inconclusive"


def test_no_eval_or_exec_and_safe_checkpoint_loading():
    source = "\n".join(path.read_text() for path in PACKAGE.rglob("*.py"))
    assert not re.search(r"(?<![.\w])(eval|exec)\(", source)
    assert all("weights_only=True" in line for line in source.splitlines() if "torch.load(" in line)


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    from factrecall_bench import io

    target = tmp_path / "result.json"
    io.write_json_atomic(target, {"old": True})

    def broken_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    with pytest.raises(OSError):
        io.write_json_atomic(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_reader_never_sees_half_a_result(tmp_path):
    """A writer rewriting result.json while a reader polls: every read parses."""
    from factrecall_bench.io import write_json_atomic

    target = tmp_path / "result.json"
    big = {"values": list(range(20000))}
    write_json_atomic(target, big)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from factrecall_bench.io import write_json_atomic\n"
        "for i in range(150): write_json_atomic(Path(sys.argv[1]), "
        "{'values': list(range(20000)), 'i': i})"), str(target)])
    reads = 0
    while writer.poll() is None or reads < 50:
        json.loads(target.read_text())
        reads += 1
        if writer.poll() is not None and reads >= 50:
            break
        time.sleep(0.001)
    assert writer.wait() == 0
