"""`--shard I/N`: the shares of a suite cover every run exactly once, whatever N; each machine
computes its own share with no coordinator; the last shard to finish judges the whole suite, and
`check` joins the shards' runs."""

from __future__ import annotations

import json
import sys

import pytest

from factrecall_bench import cli
from factrecall_bench.cli_exit import exit_code_of
from factrecall_bench.config import config_hash
from factrecall_bench.shard import Shard, parse_shard
from factrecall_bench.suite import load_suite
from tests.conftest import MICRO_SUITE, run_cli
from tests.integration.test_faults import pair_suite


@pytest.fixture(scope="module")
def paper_configs() -> tuple:
    return load_suite("paper").runs


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_the_shards_cover_every_run_exactly_once_and_evenly(paper_configs, count):
    shares = [Shard(index, count).select(paper_configs) for index in range(1, count + 1)]
    run_ids = [config.run_id for share in shares for config in share]
    assert sorted(run_ids) == sorted(config.run_id for config in paper_configs)
    assert len(set(run_ids)) == len(run_ids)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_share_depends_on_the_runs_not_on_their_order(paper_configs):
    """Every machine expands the suite itself: the share must not depend on anything else."""
    shuffled = sorted(paper_configs, key=lambda config: config.run_id[::-1])
    for index in (1, 2, 3):
        assert {c.run_id for c in Shard(index, 3).select(shuffled)} == \
            {c.run_id for c in Shard(index, 3).select(paper_configs)}
    first = Shard(1, 3).select(paper_configs)
    assert [c.run_id for c in first] == [c.run_id for c in paper_configs if c in first]  # suite order
    assert min(map(config_hash, paper_configs)) in map(config_hash, first)


@pytest.mark.parametrize(("text", "shard"), [("1/4", Shard(1, 4)), (" 2 / 2 ", Shard(2, 2))])
def test_shards_are_read_as_i_of_n(text, shard):
    assert parse_shard(text) == shard


@pytest.mark.parametrize(("text", "message"), [
    ("3/2", "--shard 3/2: expected I/N with 1 <= I <= N"),
    ("0/2", "--shard 0/2: expected I/N with 1 <= I <= N"),
    ("1of2", "--shard '1of2': expected I/N"),
])
def test_a_bad_shard_is_one_line_and_exit_2_before_any_work(monkeypatch, capsys, tmp_path, text,
                                                            message):
    runs = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "run", "--suite", str(MICRO_SUITE),
                                      "--runs-dir", str(runs), "--shard", text])
    assert exit_code_of(cli.app, debug=False) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not runs.exists()


@pytest.mark.slow
def test_two_shards_train_the_suite_once_and_the_last_one_judges_it(tmp_path):
    suite, runs = pair_suite(tmp_path), tmp_path / "runs"
    first = run_cli("run", "--suite", str(suite), "--runs-dir", str(runs), "--no-check",
                    "--shard", "1/2", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"suites": []}  # nothing judged: a run is missing
    assert "shard 1/2: 1 of 2 runs not finished yet" in first.stderr
    assert len(list(runs.glob("micro/*/result.json"))) == 1
    checked_early = run_cli("check", "--suite", str(suite), "--runs-dir", str(runs), "--json")
    assert "1 of 2 runs are not finished" in checked_early.stderr, checked_early.stderr
    second = run_cli("run", "--suite", str(suite), "--runs-dir", str(runs), "--no-check",
                     "--shard", "2/2", "--json")
    assert second.returncode == 0, second.stderr
    rows = json.loads(second.stdout)["suites"][0]["runs"]
    assert sorted((row["status"], row["reused"]) for row in rows) == \
        [("finished", False), ("finished", True)]
    assert len(list(runs.glob("micro/*/result.json"))) == 2
    checked = run_cli("check", "--suite", str(suite), "--runs-dir", str(runs), "--json")
    assert [row["status"] for row in json.loads(checked.stdout)["runs"]] == ["finished"] * 2
