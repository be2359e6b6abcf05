"""Runs identified by what they train: a finished run is reused by any suite or variation that
trains the same thing (`identity.reuse_identity`, `runfolder.reuse_finished_run`), and a suite
can `extend` another (`suite.suite_table`)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.identity import reuse_identity
from factrecall_bench.runfolder import RunFolder
from factrecall_bench.suite import load_suite, parse_suite, shipped_suites
from tests.conftest import MICRO_SUITE, run_cli

CPU = shipped_suites()["cpu"]


def _configs(suite) -> dict[tuple[str, int], object]:
    return {(config.strategy, config.seed): config for config in suite.runs}


# --- what a run's reuse identity holds ---------------------------------------------------------


def test_a_setting_the_strategy_never_reads_leaves_the_reuse_identity_alone():
    cpu = _configs(load_suite("cpu"))
    varied = _configs(load_suite("cpu", ["train.stage2_lr=3e-4"]))
    assert reuse_identity(varied[("mixed", 0)]) == reuse_identity(cpu[("mixed", 0)])
    assert reuse_identity(varied[("two-stage", 0)]) != reuse_identity(cpu[("two-stage", 0)])


def test_the_suites_name_is_not_part_of_the_reuse_identity_but_every_recorded_setting_is():
    raw = tomllib.loads(CPU.read_text())
    base = _configs(parse_suite(raw, "cpu"))[("mixed", 0)]
    renamed = _configs(parse_suite({**raw, "name": "elsewhere"}, "renamed"))[("mixed", 0)]
    assert renamed.run_id != base.run_id
    assert reuse_identity(renamed) == reuse_identity(base)
    for changed in (dataclasses.replace(base, seed=1),
                    dataclasses.replace(base, trace={**base.trace, "top_k": [0.5]}),
                    dataclasses.replace(base, eval=dataclasses.replace(base.eval, max_questions=7)),
                    dataclasses.replace(base, train=dataclasses.replace(base.train, log_every=3)),
                    dataclasses.replace(base, train=dataclasses.replace(base.train, warmup_fraction=0.5))):
        assert reuse_identity(changed) != reuse_identity(base)


# --- extends -----------------------------------------------------------------------------------

LOW2 = """name = "low2"
extends = "cpu"
strategies = ["mixed", "two-stage", "two-stage-low2"]

[custom_strategies.two-stage-low2]
phases = [
  {name = "bio", epochs = {bio = "bio_epochs"}},
  {name = "qa", epochs = {qa_train = "qa_epochs"}, lr = "0.1*stage2_lr"},
]
"""


def test_a_suite_that_extends_cpu_trains_cpus_runs_as_cpu_does(tmp_path):
    path = tmp_path / "low2.toml"
    path.write_text(LOW2)
    low2, cpu = load_suite(str(path)), load_suite("cpu")
    cpu_raw = tomllib.loads(CPU.read_text())
    assert (low2.name, low2.extends, low2.ci, low2.claims) == ("low2", "cpu", False, ())
    assert low2.seeds == tuple(cpu_raw["seeds"]) and low2.jobs == cpu_raw["jobs"]
    mine, theirs = _configs(low2), _configs(cpu)
    for key, config in theirs.items():
        assert reuse_identity(mine[key]) == reuse_identity(config), key
        assert mine[key].suite == "low2"
    assert len(mine) == len(theirs) + len(cpu_raw["seeds"])
    assert low2.extended_identities and len(low2.extended_identities) == len(theirs)


def test_a_child_table_is_merged_key_by_key_and_a_list_replaced(tmp_path):
    (tmp_path / "parent.toml").write_text(MICRO_SUITE.read_text())
    (tmp_path / "child.toml").write_text(
        'name = "child"\nextends = "parent.toml"\nseeds = [3]\n[train]\nlr = 1e-3\n')
    child = load_suite(str(tmp_path / "child.toml"))
    parent_raw = tomllib.loads(MICRO_SUITE.read_text())
    (config,) = child.runs
    assert config.seed == 3 and config.train.lr == 1e-3
    assert config.train.stage2_lr == parent_raw["train"]["stage2_lr"]
    assert config.data.n_people == parent_raw["data"]["n_people"]
    assert child.extends == parent_raw["name"]


@pytest.mark.parametrize(("text", "message"), [
    ('name = "x"\nextends = "nowhere"\n', "extends 'nowhere', which is neither a shipped suite"),
    ('name = "x"\nextends = 3\n', "extends must name a suite"),
    ('name = "x"\nextends = "x.toml"\n', "a cycle"),
])
def test_a_bad_extends_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "x.toml").write_text(text)
    with pytest.raises(UserError, match=message):
        load_suite(str(tmp_path / "x.toml"))
    completed = run_cli("run", "--suite", str(tmp_path / "x.toml"), "--runs-dir",
                        str(tmp_path / "runs"))
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().count("\n") == 0, completed.stderr
    assert not (tmp_path / "runs" / "x").exists()


# --- the walk: a suite, then a suite that extends it, then a variation --------------------------

MINE = """name = "mine"
extends = "base.toml"
strategies = ["mixed", "two-stage", "two-stage-low2"]
[custom_strategies.two-stage-low2]
phases = [{name = "bio", epochs = {bio = "bio_epochs"}},
          {name = "qa", epochs = {qa_train = "qa_epochs"}, lr = "0.1*stage2_lr"}]
"""


def _results(runs: Path, suite: str) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text())
            for path in sorted((runs / suite).glob("*/result.json"))}


@pytest.mark.slow
def test_only_the_new_strategy_trains_and_the_base_report_is_left_alone(tmp_path):
    text = MICRO_SUITE.read_text().replace('name = "micro"', 'name = "base"').replace(
        'strategies = ["two-stage"]', 'strategies = ["mixed", "two-stage"]').replace(
        "bio_epochs = 40", "bio_epochs = 8").replace("qa_epochs = 20", "qa_epochs = 4") + (
        '\n[regression]\nmetrics = ["id_exact_match", "ood_exact_match"]\nmin_effect = 0.05\n')
    assert tomllib.loads(text)["strategies"] == ["mixed", "two-stage"]
    assert tomllib.loads(text)["train"]["bio_epochs"] == 8
    (tmp_path / "base.toml").write_text(text)
    (tmp_path / "mine.toml").write_text(MINE)
    runs, baselines = tmp_path / "runs", tmp_path / "baselines"
    common = ("--runs-dir", str(runs), "--baselines-dir", str(baselines))
    stored = run_cli("baseline", "update", "--suite", str(tmp_path / "base.toml"), *common)
    assert stored.returncode == 0, stored.stderr[-2000:]
    judged = run_cli("run", "--suite", str(tmp_path / "base.toml"), *common)
    assert judged.returncode == 0 and "nothing to do" in judged.stderr, judged.stderr[-2000:]
    base_report = (runs / "base" / "report.md").read_bytes()
    trained_before = _results(runs, "base")

    planned = run_cli("run", "--suite", str(tmp_path / "mine.toml"), "--dry-run", *common)
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    assert sum(line.strip().startswith("reuse") and "(trained as base/" in line
               for line in lines) == 2, planned.stdout
    assert sum(line.strip().startswith("train") for line in lines) == 1, planned.stdout

    mine = run_cli("run", "--suite", str(tmp_path / "mine.toml"), *common)
    assert mine.returncode == 0, mine.stderr[-3000:]
    assert "1 of 3 runs to train" in mine.stderr and "2 reused" in mine.stderr, mine.stderr
    assert (runs / "base" / "report.md").read_bytes() == base_report
    assert (runs / "mine" / "report.md").is_file()
    verdicts = json.loads((runs / "mine" / "verdicts.json").read_text())
    statuses = {v["name"]: v["status"] for v in verdicts["verdicts"] if v["kind"] == "regression"}
    assert "fail" not in statuses.values() and "inconclusive" not in statuses.values(), statuses
    assert statuses["two-stage-low2/tiny-llama baseline"] == "no_baseline"
    assert any(name.startswith("mixed/") and status == "pass" for name, status in statuses.items())

    reused = {name: result for name, result in _results(runs, "mine").items()
              if "reused_from" in result}
    assert len(reused) == 2 and _results(runs, "base") == trained_before
    for name, result in reused.items():
        source = trained_before[result["reused_from"].split("/")[1]]
        assert result["reused_from"].startswith("base/") and result["suite"] == "mine"
        assert result["per_question"] == source["per_question"]
        assert result["metrics"] == source["metrics"]
        assert not (runs / "mine" / name / "checkpoints").exists()
        assert RunFolder(runs / "mine" / name).trained_checkpoints() == (
            runs / result["reused_from"] / "checkpoints")

    varied = run_cli("run", "--suite", str(tmp_path / "base.toml"), "--set",
                     "train.stage2_lr=1e-3", *common)
    assert varied.returncode == 0, varied.stderr[-3000:]
    assert "1 of 2 runs to train" in varied.stderr and "1 reused" in varied.stderr, varied.stderr
    (mixed,) = [r for r in _results(runs, "base").values()
                if r["strategy"] == "mixed" and "reused_from" in r]
    assert mixed["config"]["train"]["stage2_lr"] == 1e-3


# --- what the user reads when something is off (issue 29, item 6) -------------------------------


def test_a_hint_names_the_suite_as_the_user_gave_it(tmp_path):
    (tmp_path / "my.toml").write_text(MICRO_SUITE.read_text())
    completed = run_cli("check", "--suite", str(tmp_path / "my.toml"), "--runs-dir",
                        str(tmp_path / "runs"))
    assert completed.returncode == 2
    assert f"`factrecall-bench run --suite {tmp_path / 'my.toml'}`" in completed.stderr
    varied = load_suite(str(tmp_path / "my.toml"), ["train.lr=1e-3"])
    assert varied.command_arguments == f"--suite {tmp_path / 'my.toml'} --set train.lr=1e-3"


@pytest.mark.parametrize(("make", "message"), [
    (lambda path: path.write_text("x"), "is a file, not a folder"),
])
def test_a_runs_or_baselines_folder_that_is_a_file_is_named_so(tmp_path, make, message):
    make(tmp_path / "taken")
    for command in (["run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path / "taken")],
                    ["baseline", "update", "--suite", str(MICRO_SUITE), "--runs-dir",
                     str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "taken")]):
        completed = run_cli(*command)
        assert completed.returncode == 2, completed.stderr
        assert message in completed.stderr and "Traceback" not in completed.stderr
        assert not (tmp_path / "runs" / "micro").exists()  # nothing trained
    assert (tmp_path / "taken").read_text() == "x"


def test_a_missing_suite_file_says_the_file_is_missing(tmp_path):
    completed = run_cli("run", "--suite", str(tmp_path / "nothere.toml"))
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"error: suite file {tmp_path / 'nothere.toml'} does not exist"


def test_the_last_line_says_what_the_exit_code_means():
    from factrecall_bench import exit_codes

    assert exit_codes.described(3) == "exit code 3 (inconclusive: a verdict the data cannot decide)"
    assert set(exit_codes.MEANINGS) == {0, 1, 2, 3, 4, 5, 130}
