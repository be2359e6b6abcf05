"""The CLI end to end: verdicts, baselines, a planted regression, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from factrecall_bench.cli import app
from tests.conftest import MICRO_SUITE, TINY_SUITE, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_with_baseline(tmp_path_factory) -> tuple[Path, Path]:
    runs = tmp_path_factory.mktemp("runs")
    baselines = tmp_path_factory.mktemp("baselines")
    made = run_cli("baseline", "update", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                   "--baselines-dir", str(baselines))
    assert made.returncode == 0, made.stderr
    return runs, baselines


def test_unchanged_code_passes_its_own_baseline(tiny_with_baseline, tmp_path):
    """Fresh runs in a new runs folder (reusing the baseline's own runs could never fail): the
    same code and seeds must give the baseline's answers, and the check must pass."""
    _, baselines = tiny_with_baseline
    runs = tmp_path / "fresh-runs"
    junit = tmp_path / "junit.xml"
    checked = run_cli("run", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                      "--baselines-dir", str(baselines), "--json", "--junit-xml", str(junit))
    assert checked.returncode == 0, checked.stderr
    assert "nothing to do" not in checked.stderr
    fresh = [json.loads(path.read_text()) for path in (runs / "tiny").glob("*/result.json")]
    stored = json.loads((baselines / "tiny.json").read_text())["runs"]
    assert len(fresh) == len(stored) == 4
    # Same code, seeds and machine: the same answers, question by question (README, Guarantees).
    by_key = {(run["strategy"], run["seed"]): run["per_question"] for run in stored}
    assert all(result["per_question"] == by_key[(result["strategy"], result["seed"])]
               for result in fresh)
    document = json.loads(checked.stdout)["suites"][0]
    regressions = [v for v in document["verdicts"] if v["kind"] == "regression"]
    assert regressions and all(v["status"] == "pass" for v in regressions)
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    assert len(list(cases)) == len(document["verdicts"])
    assert (runs / "tiny" / "report.md").exists() and (runs / "tiny" / "ood_accuracy.png").exists()


def test_planted_regression_fails_the_check_and_names_the_metric(tiny_with_baseline, tmp_path):
    """A regression is the same settings giving other answers (a code change): planted in the
    baseline, since changed settings are other runs, never judged against this baseline."""
    runs, baselines = tiny_with_baseline
    baseline = json.loads((baselines / "tiny.json").read_text())
    for entry in baseline["runs"]:
        if entry["strategy"] == "two-stage":
            answers = entry["per_question"]["id"]["exact_match"]
            planted = 1 if entry["metrics"]["id_exact_match"] < 0.5 else 0
            entry["per_question"]["id"]["exact_match"] = [planted] * len(answers)
            entry["metrics"]["id_exact_match"] = float(planted)
    (tmp_path / "tiny.json").write_text(json.dumps(baseline))
    checked = run_cli("check", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                      "--baselines-dir", str(tmp_path), "--json")
    assert checked.returncode == 1, checked.stderr
    failed = [v for v in json.loads(checked.stdout)["verdicts"] if v["status"] == "fail"]
    assert any(v["metric"] == "id_exact_match" and "two-stage" in v["name"] for v in failed)


def test_missing_baseline_is_inconclusive_not_pass(tiny_with_baseline, tmp_path):
    runs, _ = tiny_with_baseline
    checked = run_cli("check", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                      "--baselines-dir", str(tmp_path / "none"))
    assert checked.returncode == 3


def test_broken_baseline_is_an_input_error(tiny_with_baseline, tmp_path):
    runs, _ = tiny_with_baseline
    (tmp_path / "tiny.json").write_text('{"schema_version": 1, "suite": "tiny"')
    checked = run_cli("check", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                      "--baselines-dir", str(tmp_path))
    assert checked.returncode == 2
    assert "Traceback" not in checked.stderr and "tiny.json" in checked.stderr


def test_trace_command_recomputes_a_finished_run(tiny_with_baseline):
    runs, _ = tiny_with_baseline
    run_folder = sorted((runs / "tiny").glob("mixed-*"))[0]
    stored = json.loads((run_folder / "result.json").read_text())["trace"]["summary"]
    traced = run_cli("trace", str(run_folder), "--json")
    assert traced.returncode == 0, traced.stderr
    assert json.loads(traced.stdout)["summary"]["shared_count@0.01"] == \
        stored["shared_count@0.01"]
    readable = run_cli("trace", str(run_folder))  # stdout, for a pipe or a file
    assert readable.returncode == 0, readable.stderr
    count = int(stored["shared_count@0.01"])
    assert f"k=0.01: {count:,} shared" in readable.stdout
    assert f"written: {run_folder / 'trace.json'}" in readable.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--suite", "no-such-suite"], "unknown suite"),
    (["run", "--strategy", "three-stage"], "unknown strategy"),
    (["run", "--strategy", "mixed", "--model", "gpt-7"], "unknown model"),
    (["run", "--strategy", "mixed", "--model", "hf:./no/such/dir"], "does not exist"),
])
def test_bad_run_arguments_one_line_exit_2(args, message, tmp_path):
    result = run_cli(*args, "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_broken_suite_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[train]\nlr = "fast"\n')
    result = run_cli("run", "--suite", str(broken), "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and "train.lr" in result.stderr
    broken.write_text("name = [unclosed\n")
    result = run_cli("run", "--suite", str(broken), "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_wrong_flag_is_a_usage_error():
    result = run_cli("run", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_suites_listing_through_cli_runner():
    result = CliRunner().invoke(app, ["suites", "--json"])
    assert result.exit_code == 0
    names = {entry["name"] for entry in json.loads(result.stdout)}
    assert "cpu" in names


# ---------------------------------------------------------------------------------------------
# Variations (issue 29): judged only against a baseline of their own settings, reported apart


def _micro_with_regression(folder: Path) -> Path:
    path = folder / "micro.toml"
    path.write_text(MICRO_SUITE.read_text() + '\n[regression]\nmetrics = ["id_exact_match"]\n')
    return path


def _run_folders(runs: Path) -> list[str]:
    return sorted(path.name for path in (runs / "micro").iterdir() if path.is_dir())


def test_a_variation_is_reported_apart_and_never_judged_against_the_suites_baseline(tmp_path):
    suite, runs, baselines = _micro_with_regression(tmp_path), tmp_path / "runs", tmp_path / "b"
    common = ["--suite", str(suite), "--runs-dir", str(runs), "--baselines-dir", str(baselines)]
    made = run_cli("baseline", "update", *common)
    assert made.returncode == 0, made.stderr
    own = run_cli("run", *common, "--json")
    assert own.returncode == 0, own.stderr
    [regression] = [v for v in json.loads(own.stdout)["suites"][0]["verdicts"]
                    if v["kind"] == "regression"]
    assert regression["status"] == "pass"  # the suite's own run, compared with its entry
    report = (runs / "micro" / "report.md").read_bytes()
    trained = _run_folders(runs)

    planned = run_cli("run", *common, "--set", "train.stage2_lr=1e-3", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("suite micro+train.stage2_lr=1e-3: 1 of 1 runs to train, "
                                     "0 reused; report: ")
    assert _run_folders(runs) == trained  # nothing trained
    assert not (runs / "micro+train.stage2_lr=1e-3").exists()

    varied = run_cli("run", *common, "--set", "train.stage2_lr=1e-3", "--json")
    assert varied.returncode == 0, varied.stderr
    document = json.loads(varied.stdout)["suites"][0]
    assert document["suite"] == "micro+train.stage2_lr=1e-3"
    [regression] = [v for v in document["verdicts"] if v["kind"] == "regression"]
    assert (regression["name"], regression["status"], regression["label"]) == (
        "two-stage/tiny-llama baseline", "no_baseline", "no baseline")
    assert regression["detail"].startswith("no baseline for these settings: ")
    variation_report = runs / "micro+train.stage2_lr=1e-3" / "report.md"
    assert document["written"]["report"] == str(variation_report)
    assert "Variation `micro+train.stage2_lr=1e-3`" in variation_report.read_text()
    assert (runs / "micro" / "report.md").read_bytes() == report  # the suite's is untouched

    reused = run_cli("run", *common, "--set", "train.stage2_lr=1e-3", "--dry-run")
    assert "0 of 1 runs to train, 1 reused" in reused.stdout and "  reuse  two-stage" in reused.stdout

    judged = run_cli("check", *common, "--set", "train.stage2_lr=1e-3", "--name", "low-lr", "--json")
    assert judged.returncode == 0, judged.stderr
    assert json.loads(judged.stdout)["written"]["report"] == str(runs / "low-lr" / "report.md")
    assert (runs / "micro" / "report.md").read_bytes() == report
