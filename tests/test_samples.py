"""Per-sample answers: samples.jsonl agrees with result.json question by question; wrong answers
are told apart (another attribute of the same person, a P_train or P_test person's value, other);
the report counts them per group."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from factrecall_bench.report import markdown_report, sample_summaries, wrong_answers_section
from factrecall_bench.runfolder import SuiteFolder
from factrecall_bench.runner import RunOptions, run_dir, run_one
from factrecall_bench.samples import (
    SAMPLES_FILE,
    SUMMARY_FILE,
    WRONG_KINDS,
    People,
    classify_wrong_answer,
    disagreements,
    read_samples,
    read_summary,
    summarize,
)
from factrecall_bench.suite import expand_suite, load_suite
from tests.conftest import MICRO_SUITE

PEOPLE = People(
    values={
        0: {"birth_city": "Austin, TX", "company_city": "Boston, MA", "major": "Law"},
        1: {"birth_city": "Boston, MA", "company_city": "Denver, CO", "major": "Art"},
        2: {"birth_city": "Denver, CO", "company_city": "Austin, TX", "major": "Law"},
        3: {"birth_city": "Miami, FL", "company_city": "Austin, TX", "major": "Music"},
    },
    in_train={0: True, 1: True, 2: False, 3: False},
)


@pytest.mark.parametrize(("answer", "person", "attribute", "kind"), [
    ("Boston, MA", 0, "birth_city", "wrong_attribute"),  # person 0's company city (and 1's birth city)
    ("Boston, MA", 3, "birth_city", "p_train_value"),  # person 1's (P_train) birth city
    ("Denver, CO", 3, "birth_city", "p_test_value"),  # person 2's (P_test) birth city only
    ("Austin, TX", 2, "birth_city", "wrong_attribute"),
    ("Austin, TX", 3, "birth_city", "wrong_attribute"),  # its own company city
    ("Art", 2, "major", "p_train_value"),
    ("Music", 2, "major", "p_test_value"),
    ("Law", 3, "major", "p_train_value"),  # a P_train and a P_test person's: P_train counts
    (" Paris, FR ", 3, "birth_city", "other"),
    ("", 3, "birth_city", "other"),
])
def test_wrong_answers_are_told_apart(answer, person, attribute, kind):
    assert classify_wrong_answer(answer, person, attribute, PEOPLE) == kind


def line(split: str, qid: str, exact: int, kind: str | None = None) -> dict:
    return {"split": split, "question_id": qid, "exact_match": exact, "wrong_kind": kind}


def test_summary_counts_every_kind_per_split():
    lines = [line("id", "p0/a", 1), line("ood", "p2/a", 0, "p_train_value"),
             line("ood", "p2/b", 0, "p_train_value"), line("ood", "p3/a", 0, "other"),
             line("ood", "p3/b", 1)]
    summary = summarize(lines)
    assert summary["id"] == {"questions": 1, "wrong": 0, "wrong_kinds": dict.fromkeys(WRONG_KINDS, 0)}
    assert summary["ood"]["questions"] == 4 and summary["ood"]["wrong"] == 3
    assert summary["ood"]["wrong_kinds"] == {"wrong_attribute": 0, "p_train_value": 2,
                                             "p_test_value": 0, "other": 1}
    per_question = {"id": {"question_ids": ["p0/a"], "exact_match": [1]},
                    "ood": {"question_ids": ["p2/a", "p2/b", "p3/a", "p3/b"],
                            "exact_match": [0, 0, 0, 0]}}
    assert disagreements(lines, per_question) == ["p3/b"]


def test_report_section_only_with_samples():
    summary = {"strategy": "mixed", "model": "tiny-llama", "variant": "base",
               "ood": {"questions": 10, "wrong": 4,
                       "wrong_kinds": {"wrong_attribute": 1, "p_train_value": 2, "p_test_value": 0,
                                       "other": 1}}}
    assert wrong_answers_section([]) == []
    table = "\n".join(wrong_answers_section([summary, summary]))
    assert "## Wrong OOD answers" in table
    assert "| mixed / tiny-llama | 2 | 20 | 8 | 2 (25%) | 4 (50%) | 0 (0%) | 2 (25%) |" in table


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    runs = tmp_path_factory.mktemp("sampled")
    config = expand_suite(load_suite(str(MICRO_SUITE)))[0]
    outcome = run_one(config, runs, options=RunOptions(log_samples=True))
    assert outcome.status == "finished", outcome.reason
    return run_dir(runs, config), outcome.result


@pytest.mark.slow
def test_samples_agree_with_per_question(sampled_run):
    folder, result = sampled_run
    lines = read_samples(folder)
    for split in ("id", "ood"):
        mine = [entry for entry in lines if entry["split"] == split]
        scored = result["per_question"][split]
        assert [entry["question_id"] for entry in mine] == scored["question_ids"]
        assert [entry["exact_match"] for entry in mine] == scored["exact_match"]
        assert [entry["first_token"] for entry in mine] == scored["first_token"]
    assert 0 < sum(entry["exact_match"] for entry in lines) < len(lines)  # some right, some wrong
    for entry in lines:
        if entry["exact_match"]:
            assert entry["greedy_answer"] == entry["target"] and entry["ended"]
        assert (entry["wrong_kind"] is None) == bool(entry["exact_match"])
        assert entry["prompt"] and entry["target"] and entry["attribute"] in entry["question_id"]
    events = (folder / "events.jsonl").read_text()
    assert "samples:" not in events  # no disagreement warning


@pytest.mark.slow
def test_samples_summary_is_stored_and_reaches_the_report(sampled_run):
    folder, result = sampled_run
    summary = read_summary(folder)
    assert summary is not None and summary["run_id"] == result["run_id"]
    assert {k: summary[k] for k in ("id", "ood")} == summarize(read_samples(folder))
    assert sum(summary["ood"]["wrong_kinds"].values()) == summary["ood"]["wrong"] > 0
    suite_folder = SuiteFolder(folder.parent)
    assert sample_summaries(suite_folder, [result]) == [summary]
    document = {"summary": [], "verdicts": [], "runs": []}
    suite = SimpleNamespace(name="micro", description="d", report_name="micro", overrides=())
    text = markdown_report(suite, document, [], sample_summaries(suite_folder, [result]))  # type: ignore[arg-type]
    assert "## Wrong OOD answers" in text and "two-stage / tiny-llama | 1 |" in text
    json.loads((folder / SUMMARY_FILE).read_text())
    assert (folder / SAMPLES_FILE).read_text().endswith("\n")


@pytest.mark.slow
def test_the_documented_formats_are_the_written_ones(sampled_run):
    folder, _ = sampled_run
    formats = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text("utf-8")
    documented = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", formats, re.S)]
    line_example = next(d for d in documented if "greedy_answer" in d)
    summary_example = next(d for d in documented if "wrong_kinds" in d.get("ood", {}))
    assert all(set(entry) == set(line_example) for entry in read_samples(folder))
    summary = read_summary(folder)
    assert summary is not None and set(summary) == set(summary_example)
    assert set(summary["ood"]["wrong_kinds"]) == set(summary_example["ood"]["wrong_kinds"])


def test_no_samples_without_the_option(tmp_path):
    assert read_summary(tmp_path) is None
    assert sample_summaries(SuiteFolder(tmp_path), [{"run_id": "nope"}, {}]) == []
