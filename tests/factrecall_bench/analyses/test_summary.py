"""The analyses' per-run numbers: computed from the full results as documented, named by claims,
summarized over seeds in report.md with the paper's direction, and tabled in the TUI."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from factrecall_bench.analyses.summary import (
    analyses_rows,
    analyses_section,
    analyses_summary,
    paper_direction,
)
from factrecall_bench.verdicts import Claim, evaluate_claim
from factrecall_bench.verdicts.evidence import metric_value

REPRESENTATION = {"groups": {
    "p_train": {"n_people": 3, "n_pairs": 18, "cosine": [0.1, 0.6, 0.8],
                "cosine_mismatched": [0.1, 0.2, 0.3], "cka": [0.5, 0.7, 0.9],
                "cka_mismatched": [0.1, 0.1, 0.1]},
    "p_test": {"n_people": 0, "n_pairs": 0}}}
READS = {"formats": {
    "bio": {"share": {"subject": 0.25, "relation": 0.5, "rest": 0.25}},
    "qa_id": {"share": {"subject": None, "relation": None, "rest": None}}}}
GRAFTING = {"methods": {
    "top_delta": {"k": 50, "fraction": 0.05, "recovered": {"id_exact_match": 0.92},
                  "random": [{"recovered": {"id_exact_match": 0.1}},
                             {"recovered": {"id_exact_match": 0.3}}],
                  "overlap_with_shared": {"0.01": {"enrichment": 3.5}}},
    "learned": {"k": None, "tried": []}}}


def test_each_scalar_is_the_documented_reduction_of_the_full_result():
    summary = analyses_summary({"representation": REPRESENTATION, "reads": READS,
                                "grafting": GRAFTING})
    assert summary == pytest.approx({
        "representation_cosine@p_train": (0.6 + 0.8) / 2,  # blocks only: layer 0 left out
        "representation_cosine_gap@p_train": (0.4 + 0.5) / 2,
        "representation_cka@p_train": (0.7 + 0.9) / 2,
        "reads_subject_relation@bio": 0.75, "reads_subject@bio": 0.25,
        "grafting_fraction@top_delta": 0.05, "grafting_id_recovered@top_delta": 0.92,
        "grafting_random_id_recovered@top_delta": 0.2,
        "grafting_shared_enrichment@top_delta/0.01": 3.5})  # no people, no share, no k: absent


def test_the_paper_direction_is_beside_the_stated_ones_only():
    assert paper_direction("representation_cka@p_test").startswith("higher under mixed")
    assert paper_direction("reads_subject_relation@bio").startswith("higher under mixed")
    assert paper_direction("reads_subject_relation@qa_id").startswith("not stated")
    assert paper_direction("something_new@x") == "not stated"


def run(strategy: str, seed: int, summary: dict[str, float] | None) -> dict[str, Any]:
    return {"strategy": strategy, "model": "tiny-llama", "seed": seed, "run_id": f"{strategy}{seed}",
            "metrics": {}, "analyses": None if summary is None else {"summary": summary}}


KEY = "representation_cosine@p_test"
MIXED = [0.80, 0.84, 0.82]
TWO_STAGE = [0.50, 0.58, 0.55]


def results() -> list[dict[str, Any]]:
    return [run("mixed", s, {KEY: v}) for s, v in enumerate(MIXED)] + \
        [run("two-stage", s, {KEY: v}) for s, v in enumerate(TWO_STAGE)]


def claim(**overrides: Any) -> Claim:
    return Claim.from_dict({"name": "consistency", "metric": f"analyses.{KEY}", "kind": "greater",
                            "a": "mixed", "b": "two-stage", "test": "welch", "why": "paper v2",
                            "expect": "report", **overrides})


def test_a_claim_names_an_analysis_number_and_is_judged_on_the_seeds_values():
    assert metric_value(results()[0], f"analyses.{KEY}") == 0.80
    verdict = evaluate_claim(claim(), results())
    assert verdict.effect == pytest.approx(statistics.fmean(MIXED) - statistics.fmean(TWO_STAGE))
    assert verdict.outcome == "holds" and verdict.status == "reported"


def test_a_claim_on_an_analysis_the_runs_lack_is_inconclusive():
    bare = [run(r["strategy"], r["seed"], None) for r in results()]
    verdict = evaluate_claim(claim(expect="holds"), bare)
    assert verdict.status == "inconclusive" and f"analyses.{KEY}" in verdict.detail


def test_an_analysis_number_is_no_proportion_for_a_threshold_claim():
    with pytest.raises(ValueError, match="needs a proportion metric"):
        Claim.from_dict({"name": "t", "metric": f"analyses.{KEY}", "kind": "at_least",
                         "strategies": ["mixed"], "threshold": 0.5, "test": "t", "why": "w"})


def test_report_rows_are_mean_and_sd_over_seeds_with_the_paper_direction():
    grouped = {"mixed / tiny-llama": results()[:3], "two-stage / tiny-llama": results()[3:]}
    rows = analyses_rows(grouped)
    assert [(r["group"], r["n"]) for r in rows] == [("mixed / tiny-llama", 3),
                                                     ("two-stage / tiny-llama", 3)]
    assert rows[0]["mean"] == pytest.approx(statistics.fmean(MIXED))
    assert rows[1]["sd"] == pytest.approx(statistics.stdev(TWO_STAGE))
    lines = analyses_section(rows)
    assert "## Mechanism analyses" in lines
    row = next(line for line in lines if line.startswith(f"| {KEY} |"))
    assert f"{statistics.fmean(MIXED):.3f} ± {statistics.stdev(MIXED):.3f} (3)" in row
    assert row.endswith(f"| {paper_direction(KEY)} |")
    assert analyses_section([]) == []


def test_a_seed_without_a_value_counts_out_not_as_zero():
    grouped = {"g": [run("mixed", 0, {KEY: 0.5}), run("mixed", 1, {KEY: math.nan}),
                     run("mixed", 2, None)]}
    (row,) = analyses_rows(grouped)
    assert (row["n"], row["mean"], row["sd"]) == (1, 0.5, 0.0)


def test_the_suite_report_has_the_section_and_verdicts_json_the_rows(tmp_path: Path):
    from factrecall_bench.report import write_suite_report
    from factrecall_bench.suite import load_suite
    from tests.conftest import MICRO_SUITE

    suite = load_suite(str(MICRO_SUITE))
    full = [{**r, "variant": "base", "metrics": {m: {"value": 0.5, "low": 0.2, "high": 0.8, "n": 10} for m in
                                                  ("id_exact_match", "ood_exact_match",
                                                   "bio_first_token_test")},
             "timings": {"total_s": 1.0}} for r in results()]
    document = write_suite_report(suite, full, [], [], tmp_path)
    assert {row["key"] for row in document["analyses"]} == {KEY}
    report = (tmp_path / "micro" / "report.md").read_text()
    assert "## Mechanism analyses" in report and "higher under mixed" in report
