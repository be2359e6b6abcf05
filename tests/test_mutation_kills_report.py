"""A suite's report (report.py) as mutation testing (docs/mutation.md) found it unpinned: what CI
reads in the JUnit file (a failed verdict is a <failure>, an inconclusive one <skipped>, the
counts), the exit code that failed runs add, the summary numbers per group, the lines of report.md
and of the printed summary, and which runs' samples reach the report."""

from __future__ import annotations

import io
import json
import statistics
import sys
from types import SimpleNamespace
from xml.etree import ElementTree

import pytest

from factrecall_bench import exit_codes
from factrecall_bench.report import (
    _num,
    group_key,
    markdown_report,
    print_summary,
    sample_summaries,
    summary_rows,
    write_junit,
    write_plots,
    write_suite_report,
    wrong_answers_section,
)
from factrecall_bench.runfolder import suite_folder
from factrecall_bench.samples import SUMMARY_FILE, SUMMARY_SCHEMA_VERSION
from factrecall_bench.verdicts import Verdict, verdicts_document

SUITE = SimpleNamespace(name="cpu", description="A suite for the report tests", report_name="cpu",
                        overrides=(), variation="")


def _result(strategy: str, seed: int, ood: float, idm: float = 1.0, bio: float = 0.5,
            total_s: float = 10.0, variant: str | None = "base", run_id: str | None = None
            ) -> dict:
    result = {"strategy": strategy, "model": "tiny-llama", "seed": seed,
              "metrics": {"ood_exact_match": {"value": ood, "low": ood / 2, "high": (1 + ood) / 2},
                          "id_exact_match": {"value": idm},
                          "bio_first_token_test": {"value": bio}},
              "timings": {"total_s": total_s}, "loss_curve": [[1, 2.0], [2, 1.0]]}
    if variant is not None:
        result["variant"] = variant
    if run_id is not None:
        result["run_id"] = run_id
    return result


def _verdict(name: str, status: str, detail: str = "d", **fields) -> Verdict:
    values = {"kind": "claim", "expect": "holds", "outcome": "holds", "test": "welch",
              "metric": "ood_exact_match", "effect": 0.25, "ci_low": 0.125, "ci_high": 0.375,
              "p_value": 0.0123, **fields}
    return Verdict(name=name, status=status, detail=detail, **values)


# --- group and summary -------------------------------------------------------------------------


def test_a_group_is_variant_strategy_and_model_with_the_base_variant_unnamed():
    assert group_key(_result("mixed", 0, 0.5)) == "mixed / tiny-llama"
    assert group_key(_result("mixed", 0, 0.5, variant=None)) == "mixed / tiny-llama"
    assert group_key(_result("mixed", 0, 0.5, variant="lr-2")) == "lr-2 / mixed / tiny-llama"


def test_summary_rows_are_mean_and_sample_sd_over_seeds_per_group():
    results = [_result("mixed", 2, 0.5, total_s=10.0), _result("mixed", 0, 0.25, total_s=20.0),
               _result("mixed", 1, 0.75, total_s=30.0), _result("two-stage", 0, 0.125, bio=0.0)]
    rows = summary_rows(results)
    assert [row["group"] for row in rows] == ["mixed / tiny-llama", "two-stage / tiny-llama"]
    mixed, two_stage = rows
    assert mixed["seeds"] == [0, 1, 2]
    assert mixed["ood_exact_match"] == {"mean": 0.5,
                                        "sd": pytest.approx(statistics.stdev([0.5, 0.25, 0.75]))}
    assert mixed["ood_exact_match"]["sd"] == pytest.approx(0.25)
    assert mixed["id_exact_match"] == {"mean": 1.0, "sd": 0.0}
    assert mixed["train_s_mean"] == 20.0
    assert two_stage["ood_exact_match"] == {"mean": 0.125, "sd": 0.0}  # one seed: no spread
    assert two_stage["bio_first_token_test"] == {"mean": 0.0, "sd": 0.0}
    assert two_stage["train_s_mean"] == 10.0


def test_a_suite_without_results_has_no_plots(tmp_path):
    assert write_plots([], tmp_path) == []
    assert list(tmp_path.iterdir()) == []


# --- report.md ---------------------------------------------------------------------------------


def _document(verdicts, runs=(), summary=None) -> dict:
    return {**verdicts_document("cpu", verdicts), "summary": summary or [], "runs": list(runs)}


def test_report_md_lines():
    results = [_result("mixed", 0, 0.25, total_s=12.4), _result("mixed", 1, 0.75, total_s=13.0)]
    verdicts = [_verdict("ood higher", "pass"), _verdict("none", "inconclusive", effect=None,
                                                         ci_low=None, ci_high=None, p_value=None)]
    runs = [{"run_id": "r1", "status": "failed", "reason": "diverged"},
            {"run_id": "r2", "status": "busy", "reason": "locked by pid 7"},
            {"run_id": "r3", "status": "finished", "reason": ""}]
    document = _document(verdicts, runs, summary_rows(results))
    document["verdicts"][0]["p_adjusted"] = 0.0246
    text = markdown_report(SUITE, document, ["ood_accuracy.png", "learning_curves.png"])
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text.splitlines() == [
        "# Suite `cpu`", "", "A suite for the report tests", "",
        "| group | seeds | ID exact match | OOD exact match | BIO recall P_test | s/run |",
        "|---|---|---|---|---|---|",
        "| mixed / tiny-llama | 2 | 1.000 ± 0.000 | 0.500 ± 0.354 | 0.500 ± 0.000 | 13 |",
        "", "## Verdicts", "", "| verdict | status | effect | interval | p (adj.) | detail |",
        "|---|---|---|---|---|---|",
        "| ood higher | **pass** | 0.25 | [0.125, 0.375] | 0.0123 (0.0246) | d |",
        "| none | **inconclusive** | - | [-, -] | - (-) | d |",
        "", "- run r1 failed: diverged", "- run r2 busy: locked by pid 7",
        "", "![ood_accuracy.png](ood_accuracy.png)", "![learning_curves.png](learning_curves.png)"]


def test_numbers_in_the_report_have_three_significant_digits():
    assert _num(None) == "-"
    assert _num(0.123456) == "0.123"
    assert _num(1234.5) == "1.23e+03"


def test_wrong_answers_lines():
    def summary(strategy, wrong, kinds):
        return {"strategy": strategy, "model": "m", "variant": "base",
                "ood": {"questions": 10, "wrong": wrong, "wrong_kinds": dict(
                    zip(("wrong_attribute", "p_train_value", "p_test_value", "other"), kinds,
                        strict=True))}}
    lines = wrong_answers_section([summary("z", 0, (0, 0, 0, 0)), summary("a", 3, (1, 0, 2, 0))])
    assert lines == [
        "", "## Wrong OOD answers (samples)", "",
        "Greedy answers from each run's samples.jsonl; a wrong answer is counted under the "
        "first kind it matches, left to right. The last column: of the wrong answers that "
        "are another person's value, the share that is a P_train person's, and the share "
        "expected by chance (each a random other person's value): with few distinct values "
        "most are some P_train person's anyway.", "",
        "| group | runs | OOD questions | wrong | same person, another attribute | a P_train "
        "person's value | another P_test person's value | other "
        "| P_train among people's values (chance) |",
        "|---|---|---|---|---|---|---|---|---|",
        "| a / m | 1 | 10 | 3 | 1 (33%) | 0 (0%) | 2 (67%) | 0 (0%) | - |",
        "| z / m | 1 | 10 | 0 | 0 | 0 | 0 | 0 | - |"]


def _samples_summary(strategy: str) -> dict:
    return {"schema_version": SUMMARY_SCHEMA_VERSION, "strategy": strategy, "model": "m",
            "variant": "base", "ood": {"questions": 4, "wrong": 1, "wrong_kinds": {
                "wrong_attribute": 1, "p_train_value": 0, "p_test_value": 0, "other": 0}}}


def test_sample_summaries_of_the_runs_that_logged_samples(tmp_path):
    folder = suite_folder(tmp_path, "cpu")
    for run_id, strategy in (("r1", "mixed"), ("r3", "two-stage")):
        (folder.run(run_id).path).mkdir(parents=True)
        (folder.run(run_id).path / SUMMARY_FILE).write_text(
            json.dumps(_samples_summary(strategy)), "utf-8")
    results = [{"run_id": "r1"}, {"run_id": "r2"}, {"strategy": "x"}, {"run_id": "r3"}]
    found = sample_summaries(folder, results)
    assert [s["strategy"] for s in found] == ["mixed", "two-stage"]


# --- the written report and its exit code ------------------------------------------------------


@pytest.mark.parametrize(("statuses", "runs", "code"), [
    (["pass"], ["finished"], exit_codes.OK),
    (["pass"], ["finished", "failed"], exit_codes.RUNS_FAILED),
    (["pass"], ["busy"], exit_codes.RUNS_FAILED),
    (["inconclusive"], ["failed"], exit_codes.RUNS_FAILED),
    (["fail"], ["failed"], exit_codes.FAILED),
    (["inconclusive"], ["finished"], exit_codes.INCONCLUSIVE),
])
def test_written_report_and_its_exit_code(tmp_path, statuses, runs, code):
    results = [_result("mixed", 0, 0.5, run_id="r0")]
    outcome_rows = [{"run_id": f"r{i}", "status": s, "reason": "why"} for i, s in enumerate(runs)]
    verdicts = [_verdict(f"v{i}", s) for i, s in enumerate(statuses)]
    document = write_suite_report(SUITE, results, outcome_rows, verdicts, tmp_path)
    folder = tmp_path / "cpu"
    assert document["exit_code"] == code
    assert document["suite"] == "cpu" and document["runs"] == outcome_rows
    assert document["summary"] == summary_rows(results)
    assert document["written"] == {
        "report": str(folder / "report.md"),
        "plots": f"{folder / 'ood_accuracy.png'}, {folder / 'learning_curves.png'}",
        "verdicts": str(folder / "verdicts.json")}
    assert json.loads((folder / "verdicts.json").read_text("utf-8")) == document
    assert (folder / "report.md").read_text("utf-8") == markdown_report(
        SUITE, document, ["ood_accuracy.png", "learning_curves.png"], [])


def test_the_written_report_includes_the_runs_samples(tmp_path):
    results = [_result("mixed", 0, 0.5, run_id="r0")]
    run = tmp_path / "cpu" / "r0"
    run.mkdir(parents=True)
    (run / SUMMARY_FILE).write_text(json.dumps(_samples_summary("mixed")), "utf-8")
    write_suite_report(SUITE, results, [], [_verdict("v", "pass")], tmp_path)
    assert "| mixed / m | 1 | 4 | 1 | 1 (100%) |" in (tmp_path / "cpu" / "report.md").read_text()


# --- JUnit -------------------------------------------------------------------------------------


def test_junit_is_what_ci_reads(tmp_path):
    first = _document([_verdict("passes", "pass"), _verdict("fails", "fail", "dropped by 0.2"),
                       _verdict("unsure", "inconclusive", "not reachable"),
                       _verdict("fails too", "fail", "x")])
    second = {**_document([_verdict("only", "pass")]), "suite": "gpu"}
    path = tmp_path / "junit.xml"
    write_junit(path, [first, second])
    assert path.read_bytes().startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ElementTree.parse(path).getroot()
    assert (root.tag, root.get("name")) == ("testsuites", "factrecall-bench")
    suites = root.findall("testsuite")
    assert [(s.get("name"), s.get("tests"), s.get("failures"), s.get("skipped"))
            for s in suites] == [("cpu", "4", "2", "1"), ("gpu", "1", "0", "0")]
    cases = suites[0].findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("cpu", "passes"), ("cpu", "fails"), ("cpu", "unsure"), ("cpu", "fails too")]
    assert list(cases[0]) == []  # a pass is a plain passing case
    [failure] = list(cases[1])
    assert (failure.tag, failure.get("message")) == ("failure", "dropped by 0.2")
    [skipped] = list(cases[2])
    assert (skipped.tag, skipped.get("message")) == ("skipped", "not reachable")
    assert suites[1].find("testcase").get("classname") == "gpu"


def test_junit_reported_claim_carries_every_property(tmp_path):
    reported = _verdict("gini", "reported", "mixed 0.4 vs 0.5", expect="report",
                        outcome="does_not_hold", effect=-0.105, ci_low=None)
    document = _document([reported])
    document["verdicts"][0]["p_adjusted"] = 0.5
    path = tmp_path / "junit.xml"
    write_junit(path, [document])
    case = ElementTree.parse(path).getroot().find("testsuite/testcase")
    assert [child.tag for child in case] == ["properties", "system-out"]
    properties = [(p.get("name"), p.get("value")) for p in case.iter("property")]
    assert properties == [("status", "reported"), ("outcome", "does_not_hold"),
                          ("expect", "report"), ("test", "welch"), ("metric", "ood_exact_match"),
                          ("effect", "-0.105"), ("ci_low", ""), ("ci_high", "0.375"),
                          ("p_value", "0.0123"), ("p_adjusted", "0.5")]
    assert case.findtext("system-out") == "reported (does not hold, effect -0.105): mixed 0.4 vs 0.5"


# --- the printed summary -----------------------------------------------------------------------


def _printed(monkeypatch, document, color=False) -> str:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NO_COLOR", raising=False)
    if color:
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("TERM", "xterm-256color")
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    print_summary(document)
    return stream.getvalue()


def _summary_document() -> dict:
    results = [_result("mixed", 0, 0.25), _result("mixed", 1, 0.75)]
    document = _document([_verdict("v pass", "pass", "fine"), _verdict("v fail", "fail", "bad"),
                          _verdict("v unsure", "inconclusive", "unsure"),
                          _verdict("v rep", "reported", "told", outcome="holds", effect=0.5)],
                         [{"run_id": "r1", "status": "failed", "reason": "diverged [oom]"},
                          {"run_id": "r2", "status": "finished", "reason": ""}],
                         summary_rows(results))
    document["written"] = {"report": "/work/runs/cpu-2/report.md",
                           "verdicts": "runs/[x]/verdicts.json"}
    return document


def test_printed_summary_lines(monkeypatch):
    text = _printed(monkeypatch, _summary_document())
    lines = [line.rstrip() for line in text.splitlines()]
    assert "suite cpu" in lines[0]
    header = next(line for line in lines if "group" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "group", "seeds", "ID exact match", "OOD exact match", "BIO recall P_test"]
    row = next(line for line in lines if "mixed / tiny-llama" in line)
    assert row.split("│")[1:-1] == [" mixed / tiny-llama ", " 2     ", " 1.000 ± 0.000  ",
                                     " 0.500 ± 0.354   ", " 0.500 ± 0.000     "]
    tail = lines[lines.index(next(line for line in lines if line.startswith("run r1"))):]
    assert tail == ["run r1 failed: diverged [oom]", "pass v pass: fine", "fail v fail: bad",
                    "inconclusive v unsure: unsure", "reported (holds, effect +0.5) v rep: told",
                    "report: /work/runs/cpu-2/report.md", "verdicts: runs/[x]/verdicts.json",
                    "exit code 1 (a regression or a failed claim)"]


def test_printed_summary_without_written_files_and_long_details_on_one_line(monkeypatch):
    document = _summary_document()
    del document["written"]
    document["verdicts"][0]["detail"] = "word " * 40  # 200 characters
    monkeypatch.setenv("COLUMNS", "80")
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    print_summary(document)
    lines = stream.getvalue().splitlines()
    assert "pass v pass: " + ("word " * 40).strip() in [line.rstrip() for line in lines]
    assert lines[-1] == "exit code 1 (a regression or a failed claim)"
    assert not any(line.startswith("report:") for line in lines)


def test_printed_statuses_are_coloured_by_what_they_mean(monkeypatch):
    text = _printed(monkeypatch, _summary_document(), color=True)
    # numbers and paths in these lines are printed as they are, not highlighted
    assert "\nexit code 1 (a regression or a failed claim)\n" in text
    assert "\nreport: /work/runs/cpu-2/report.md\n" in text
    assert "\nrun r1 failed: diverged [oom]\n" in text
    assert "reported (holds, effect +0.5)\x1b[0m v rep: told\n" in text
    assert "\x1b[32mpass\x1b[0m v pass" in text  # green
    assert "\x1b[31mfail\x1b[0m v fail" in text  # red
    assert "\x1b[33minconclusive\x1b[0m v unsure" in text  # yellow
    assert "\x1b[36mreported (holds, effect +0.5)\x1b[0m v rep" in text  # cyan


# --- plots: what each figure shows -------------------------------------------------------------


def _figures(monkeypatch, tmp_path, results) -> dict:
    from factrecall_bench import report

    figures = {}
    real_save = report._save

    def keep(figure, path):
        figures[path.name] = figure
        real_save(figure, path)
    monkeypatch.setattr(report, "_save", keep)
    assert write_plots(results, tmp_path) == ["ood_accuracy.png", "learning_curves.png"]
    return figures


def _plot_results() -> list[dict]:
    a0, a1 = _result("mixed", 0, 0.25), _result("mixed", 1, 0.75)
    b0 = _result("two-stage", 0, 0.5)
    a1["loss_curve"] = [[10, 3.0], [20, 1.5]]
    b0["loss_curve"] = [[5, 2.0], [15, 0.5], [25, 0.25]]
    del a0["loss_curve"]
    return [a1, b0, a0]


def test_the_ood_plot_shows_each_runs_interval_around_its_group(monkeypatch, tmp_path):
    from matplotlib.colors import to_rgba

    figure = _figures(monkeypatch, tmp_path, _plot_results())["ood_accuracy.png"]
    assert tuple(figure.get_size_inches()) == (7.0, 3.5)
    [axes] = figure.axes
    assert axes.get_ylabel() == "OOD exact match (95% Wilson)"
    assert axes.get_ylim() == (0.0, 1.0)
    labels = axes.get_xticklabels()
    assert [label.get_text() for label in labels] == ["mixed / tiny-llama",
                                                      "two-stage / tiny-llama"]
    assert [(label.get_rotation(), label.get_ha()) for label in labels] == [(20.0, "right")] * 2
    points = []
    for container in axes.containers:
        line, caps, (bars,) = container.lines
        [x], [y] = line.get_xdata(), line.get_ydata()
        [[(_, low), (_, high)]] = bars.get_segments()
        assert line.get_marker() == "o"  # a dot per run, no line between runs
        points.append((round(float(x), 6), y, low, high, to_rgba(line.get_color()),
                       len(caps), caps[0].get_markersize()))
    # mixed (group 0): seed 1 then seed 0, at 0 -/+ 0.05; two-stage (group 1) at 1
    assert points == [(-0.05, 0.75, 0.375, 0.875, to_rgba("C0"), 2, 6.0),
                      (0.05, 0.25, 0.125, 0.625, to_rgba("C0"), 2, 6.0),
                      (1.0, 0.5, 0.25, 0.75, to_rgba("C1"), 2, 6.0)]


def test_the_curves_plot_draws_every_runs_loss_with_one_legend_entry_a_group(monkeypatch,
                                                                            tmp_path):
    from matplotlib.colors import to_rgba

    figure = _figures(monkeypatch, tmp_path, _plot_results())["learning_curves.png"]
    assert tuple(figure.get_size_inches()) == (7.0, 3.5)
    [axes] = figure.axes
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_yscale()) == (
        "optimizer step", "training loss", "log")
    lines = [(list(line.get_xdata()), list(line.get_ydata()), to_rgba(line.get_color()),
              line.get_alpha(), line.get_label()) for line in axes.get_lines()]
    assert lines[:2] == [([10, 20], [3.0, 1.5], to_rgba("C0"), 0.7, "mixed / tiny-llama"),
                         ([5, 15, 25], [2.0, 0.5, 0.25], to_rgba("C1"), 0.7,
                          "two-stage / tiny-llama")]
    assert lines[2][:4] == ([], [], to_rgba("C0"), 0.7)  # a run without a curve: nothing drawn
    assert lines[2][4].startswith("_")  # and no second legend entry for its group
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["mixed / tiny-llama",
                                                                "two-stage / tiny-llama"]
    assert legend.get_texts()[0].get_fontsize() == 7.0


def test_plots_are_png_at_100_dpi_cropped_to_their_content(tmp_path):
    import struct

    write_plots(_plot_results(), tmp_path)
    data = (tmp_path / "ood_accuracy.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    physical = data.index(b"pHYs")
    per_metre = struct.unpack(">I", data[physical + 4:physical + 8])[0]
    assert round(per_metre * 0.0254) == 100
    assert (width, height) != (700, 350)  # bbox_inches="tight": cropped to what is drawn


def test_one_seed_shows_its_value_without_a_spread(monkeypatch):
    """A group of one seed has no standard deviation: `0.250`, not `0.250 ± 0.000`."""
    document = _document([], [], summary_rows([_result("mixed", 0, 0.25)]))
    lines = [line.rstrip() for line in _printed(monkeypatch, document).splitlines()]
    row = next(line for line in lines if "mixed / tiny-llama" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[1] == "1" and cells[3] == "0.250" and "±" not in row
    markdown = markdown_report(SUITE, document, [])
    (table_row,) = [line for line in markdown.splitlines() if line.startswith("| mixed / tiny-llama")]
    assert "±" not in table_row and "| 0.250 |" in table_row
