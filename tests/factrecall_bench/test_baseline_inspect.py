"""`baseline inspect`: a stored baseline's suite, hardware class, git revision and runs, read
from a baseline written by hand here; a missing or broken file is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factrecall_bench.cli import app
from tests.conftest import run_cli

RUN = {"per_question": {"id": {"question_ids": ["p0/major", "p1/major"], "exact_match": [1, 1]},
                        "ood": {"question_ids": ["p2/major", "p3/major", "p4/major"],
                                "exact_match": [1, 0, 0]}}}
BASELINE = {
    "schema_version": 1, "suite": "mini", "suite_hash": "abcdef0123456789" * 4,
    "hardware_class": "cpu:x86_64", "created": "2026-01-02T03:04:05+00:00",
    "git_revision": "0123abcd+dirty", "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"},
    "alpha": 0.01, "min_effect": 0.05, "metrics": ["id_exact_match", "ood_exact_match"],
    "runs": [
        {"run_id": "mixed-tiny-llama-s0-00000000", "strategy": "mixed", "model": "tiny-llama",
         "seed": 0, "config_hash": "0" * 64,
         "metrics": {"id_exact_match": 1.0, "ood_exact_match": 1 / 3}, **RUN},
        {"run_id": "two-stage-tiny-llama-s1-11111111", "strategy": "two-stage",
         "model": "tiny-llama", "seed": 1, "config_hash": "1" * 64,
         "metrics": {"id_exact_match": 0.5, "ood_exact_match": 0.0}, **RUN},
    ],
}


@pytest.fixture
def baselines(tmp_path: Path) -> Path:
    (tmp_path / "mini.json").write_text(json.dumps(BASELINE))
    return tmp_path


def test_inspect_names_the_suite_hardware_revision_and_each_run(baselines):
    result = CliRunner().invoke(app, ["baseline", "inspect", "mini",
                                      "--baselines-dir", str(baselines)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"baseline {baselines / 'mini.json'}"
    assert "  suite         mini (suite hash abcdef012345)" in lines
    assert "  hardware      cpu:x86_64" in lines
    assert "  git revision  0123abcd+dirty" in lines
    assert "  runs          2" in lines
    assert lines[-2:] == [
        "    mixed / tiny-llama / seed 0: id_exact_match 1.000  ood_exact_match 0.333 "
        "(2 id, 3 ood questions)",
        "    two-stage / tiny-llama / seed 1: id_exact_match 0.500  ood_exact_match 0.000 "
        "(2 id, 3 ood questions)"]


def test_inspect_json_by_path(baselines):
    path = baselines / "mini.json"
    result = CliRunner().invoke(app, ["baseline", "inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["file"], summary["suite"], summary["hardware_class"],
            summary["git_revision"]) == (str(path), "mini", "cpu:x86_64", "0123abcd+dirty")
    assert [(r["strategy"], r["seed"], r["questions"]) for r in summary["runs"]] == [
        ("mixed", 0, {"id": 2, "ood": 3}), ("two-stage", 1, {"id": 2, "ood": 3})]
    assert "per_question" not in json.dumps(summary)


def test_baseline_help_lists_what_it_promises():
    result = CliRunner().invoke(app, ["baseline", "--help"])
    assert "inspect" in result.stdout and "update" in result.stdout


def test_a_missing_or_broken_baseline_is_one_line_and_exit_2(baselines):
    missing = run_cli("baseline", "inspect", "nope", "--baselines-dir", str(baselines))
    assert missing.returncode == 2
    assert missing.stderr == (f"error: {baselines / 'nope.json'}: no baseline file (record one "
                              f"first) ({baselines} holds: mini.json)\n")
    (baselines / "broken.json").write_text(json.dumps({**BASELINE, "runs": []}))
    broken = run_cli("baseline", "inspect", str(baselines / "broken.json"))
    assert broken.returncode == 2
    assert broken.stderr == f"error: {baselines / 'broken.json'}: runs is empty\n"
