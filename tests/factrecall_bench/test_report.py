"""Suite reports: the plots draw whatever the runs measured, including none or all correct;
report.md and JUnit render each verdict's status as decided (a report-only claim: "reported")."""

from __future__ import annotations

import io
import json
import statistics
import sys
from types import SimpleNamespace
from xml.etree import ElementTree

import pytest

from factrecall_bench import exit_codes
from factrecall_bench.evaluate import proportion
from factrecall_bench.report import (
    _num,
    definitions_section,
    group_key,
    markdown_report,
    p_train_share_cell,
    print_summary,
    sample_summaries,
    summary_rows,
    trace_rows,
    trace_section,
    trace_text,
    write_junit,
    write_plots,
    write_suite_report,
    wrong_answers_section,
)
from factrecall_bench.runfolder import suite_folder
from factrecall_bench.samples import SUMMARY_FILE, SUMMARY_SCHEMA_VERSION
from factrecall_bench.verdicts import Verdict, verdicts_document


def a_result(strategy: str, hits: list[int]) -> dict:
    return {"strategy": strategy, "model": "tiny-llama", "variant": "base", "seed": 0,
            "metrics": {"ood_exact_match": proportion(hits)},
            "loss_curve": [[10, 3.0], [20, 2.0]]}


def test_plots_accept_rates_of_zero_and_one(tmp_path):
    results = [a_result("two-stage", [0] * 7), a_result("mixed", [1] * 12)]
    names = write_plots(results, tmp_path)
    assert names == ["ood_accuracy.png", "learning_curves.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in names)


def _verdicts_document() -> dict:
    common = {"kind": "claim", "test": "welch", "metric": "trace.gini_heads@0.01",
              "ci_low": -0.3, "ci_high": 0.1, "p_value": 0.946, "detail": "mixed 0.40 vs 0.50"}
    verdicts = [
        Verdict(name="gini", status="reported", expect="report", outcome="undecided",
                effect=-0.105, **common),
        Verdict(name="ood", status="pass", expect="holds", outcome="holds", effect=0.7, **common),
        Verdict(name="bio", status="inconclusive", expect="holds", outcome="undecided",
                effect=0.1, **common),
        Verdict(name="shared", status="fail", expect="holds", outcome="does_not_hold",
                effect=-0.2, **common),
    ]
    return {**verdicts_document("cpu", verdicts), "summary": [], "runs": []}


def test_a_report_only_claim_is_reported_in_verdicts_json_and_report_md():
    document = _verdicts_document()
    gini = document["verdicts"][0]
    assert (gini["status"], gini["label"]) == ("reported", "reported (undecided, effect -0.105)")
    assert document["exit_code"] == 1  # from the fail; "reported" adds nothing
    suite = SimpleNamespace(name="cpu", description="d", report_name="cpu", overrides=())
    text = markdown_report(suite, document, [])  # type: ignore[arg-type]
    row = next(line for line in text.splitlines() if line.startswith("| gini |"))
    assert "**reported (undecided, effect -0.105)**" in row and "pass" not in row


def test_junit_reports_a_reported_claim_as_a_passing_case_with_its_outcome(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(path, [_verdicts_document()])
    suite = ElementTree.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    gini = cases["gini"]
    assert gini.find("failure") is None and gini.find("skipped") is None
    properties = {p.get("name"): p.get("value") for p in gini.iter("property")}
    assert (properties["status"], properties["outcome"]) == ("reported", "undecided")
    assert properties["effect"] == "-0.105"
    assert gini.findtext("system-out", "").startswith("reported (undecided, effect -0.105): ")
    assert cases["shared"].find("failure") is not None
    assert cases["bio"].find("skipped") is not None


def test_plots_are_the_same_pngs_under_a_users_hostile_matplotlib_settings(tmp_path):
    """A matplotlibrc that changes the file type, resolution, colours, fonts, line widths and
    background must not reach the report's figures: the same bytes as under matplotlib's defaults."""
    import matplotlib
    from cycler import cycler

    results = [a_result("two-stage", [0, 1, 1]), a_result("mixed", [1, 1, 0, 1])]
    (tmp_path / "default").mkdir()
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        write_plots(results, tmp_path / "default")
    hostile = {"savefig.format": "svg", "savefig.dpi": 37, "figure.dpi": 41,
               "savefig.transparent": True, "savefig.facecolor": "red",
               "figure.facecolor": "blue", "axes.facecolor": "black",
               "axes.prop_cycle": cycler(color=["#123456"]), "lines.linewidth": 7.0,
               "font.size": 22.0, "axes.grid": True, "figure.figsize": (2.0, 2.0)}
    (tmp_path / "user").mkdir()
    with matplotlib.rc_context(hostile):
        names = write_plots(results, tmp_path / "user")
    for name in names:
        user = (tmp_path / "user" / name).read_bytes()
        assert user[:8] == b"\x89PNG\r\n\x1a\n"
        assert user == (tmp_path / "default" / name).read_bytes(), name


def test_no_baseline_is_shown_as_such_skipped_in_junit_and_exits_0(tmp_path):
    verdict = Verdict(name="two-stage/tiny-llama baseline", kind="regression",
                      status="no_baseline", expect="no_change", outcome="no_baseline", test="-",
                      metric="-", detail="no baseline for these settings: none")
    document = {**verdicts_document("cpu+train.stage2_lr=3e-4", [verdict]), "summary": [],
                "runs": []}
    assert document["exit_code"] == 0
    assert document["verdicts"][0]["label"] == "no baseline"
    suite = SimpleNamespace(name="cpu", description="d", report_name="cpu+train.stage2_lr=3e-4",
                            overrides=("train.stage2_lr=3e-4",), variation="cpu+train.stage2_lr=3e-4")
    text = markdown_report(suite, document, [])  # type: ignore[arg-type]
    assert "Variation `cpu+train.stage2_lr=3e-4`: the suite with `train.stage2_lr=3e-4`." in text
    assert "| two-stage/tiny-llama baseline | **no baseline** |" in text
    path = tmp_path / "junit.xml"
    write_junit(path, [document])
    junit_suite = ElementTree.parse(path).getroot().find("testsuite")
    assert junit_suite is not None and junit_suite.get("skipped") == "1"
    assert junit_suite.find("testcase/skipped") is not None


def test_a_runs_trace_reads_as_sentences_per_k_and_definition():
    trace = {"definition": "training/update/global", "n_parameters": 1000,
             "per_k": {"0.01": {"shared": {"count": 7, "expected_by_chance": 0.1, "enrichment": 70.0},
                                "centralization": {"gini_heads": None, "top5_heads_share": None}}},
             "ablation": {"0.01": {"drop": {"ood_exact_match": 0.5},
                                   "random_drop_mean": {"ood_exact_match": 0.01}}},
             "definitions": {"training/update/global": {"per_k": {"0.01": {}},
                                                        "summary": {"shared_count@0.01": 7.0}}}}
    assert trace_text(trace) == [
        "trace definition training/update/global, 1,000 parameters scored",
        "k=0.01: 7 shared, 0.1 by chance (70x); Gini over heads -, top-5 heads -",
        "  drop when reset to the weights before training: ood_exact_match 0.5 (random sets 0.01)",
        "definition training/update/global: shared k=0.01 7",
    ]


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# A suite's report (report.py) as mutation testing (docs/mutation.md) found it unpinned: what CI reads in
# the JUnit file (a failed verdict is a <failure>, an inconclusive one <skipped>, the counts), the exit code
# that failed runs add, the summary numbers per group, the lines of report.md and of the printed summary,
# and which runs' samples reach the report.


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


# --- a metric no run has -----------------------------------------------------------------------


def test_a_metric_no_run_of_a_group_has_is_a_dash_in_report_md():
    """Runs finished before a metric was registered have no value for it: "–", not 0."""
    results = [_result("mixed", 0, 0.25), _result("mixed", 1, 0.75)]
    for result in results:
        del result["metrics"]["bio_first_token_test"]
    markdown = markdown_report(SUITE, _document([], [], summary_rows(results)), [])
    assert "| mixed / tiny-llama | 2 | 1.000 ± 0.000 | 0.500 ± 0.354 | – | 10 |" in markdown.splitlines()


def test_a_variation_with_several_settings_names_them_all():
    suite = SimpleNamespace(name="cpu", description="d", report_name="cpu+a=1+b=2",
                            overrides=("a=1", "b=2"), variation="cpu+a=1+b=2")
    lines = markdown_report(suite, _document([]), []).splitlines()  # type: ignore[arg-type]
    assert lines[:7] == [
        "# Suite `cpu`", "", "d", "",
        "Variation `cpu+a=1+b=2`: the suite with `a=1`, `b=2`. Its regression checks compare a run "
        "only with a baseline entry trained with the same settings.", "",
        "| group | seeds | ID exact match | OOD exact match | BIO recall P_test | s/run |"]


def test_the_p_train_share_is_observed_and_chance_over_other_peoples_values():
    def member(p_train, p_test, chance):
        return {"ood": {"wrong_kinds": {"wrong_attribute": 5, "p_train_value": p_train,
                                        "p_test_value": p_test, "other": 2},
                        "p_train_value_by_chance": chance}}
    # (2 + 1) of (2 + 1 + 0 + 1) people's values are P_train's; chance (1.5 + 0.5) / 4
    assert p_train_share_cell([member(2, 0, 1.5), member(1, 1, 0.5)]) == "75% (50%)"
    # wrong answers, but none of them another person's value: nothing to share out
    assert p_train_share_cell([member(0, 0, 0.0)]) == "-"
    older = member(2, 0, 1.5)
    del older["ood"]["p_train_value_by_chance"]  # a summary written before the chance count
    assert p_train_share_cell([member(2, 0, 1.5), older]) == "-"


# --- the trace in report.md --------------------------------------------------------------------


def _trace_summary(k: str, shared: float, chance: float, enrichment: float,
                   gini_heads: float | None, top5: float | None, gini_neurons: float) -> dict:
    values = {"shared_count": shared, "expected_by_chance": chance, "enrichment": enrichment,
              "gini_heads": gini_heads, "top5_heads_share": top5, "gini_neurons": gini_neurons}
    return {f"{key}@{k}": value for key, value in values.items() if value is not None}


def _traced(seed: int, main: dict, other: dict, third: dict) -> dict:
    """A run whose trace recorded three definitions, the main one ("m/main") in the middle and
    neither first nor last in alphabetical order."""
    result = _result("mixed", seed, 0.5)
    result["trace"] = {"definition": "m/main", "definitions": {
        "z/other": {"per_k": {"0.01": {}}, "summary": other},
        "m/main": {"per_k": {"0.01": {}, "0.1": {}}, "summary": main},
        "a/third": {"per_k": {"0.01": {}}, "summary": third}}}
    return result


def _traced_results() -> list[dict]:
    seed0 = _traced(0, {**_trace_summary("0.01", 10, 0.5, 20, 0.25, 0.5, 0.125),
                        **_trace_summary("0.1", 100, 50, 2, 0.5, 0.25, 0.25)},
                    _trace_summary("0.01", 4, 1, 4, 0.5, 0.75, 0.5),
                    _trace_summary("0.01", 1, 1, 1, None, None, 0.0))
    seed1 = _traced(1, {**_trace_summary("0.01", 20, 0.5, 40, None, None, 0.375),
                        **_trace_summary("0.1", 200, 50, 4, 0.75, 0.75, 0.75)},
                    _trace_summary("0.01", 6, 1, 6, 0.25, 0.25, 0.5),
                    _trace_summary("0.01", 3, 1, 3, None, None, 1.0))
    untraced = _result("two-stage", 0, 0.5)  # no trace: no rows
    none_traced = {**_result("two-stage", 1, 0.5), "trace": None}
    return [seed0, untraced, seed1, none_traced]


def test_trace_rows_are_means_over_seeds_per_definition_and_k_the_main_definition_first():
    group = "mixed / tiny-llama"
    assert trace_rows(_traced_results()) == [
        # seed 1 has no Gini over heads at 0.01 (a set without head parameters): left out
        {"group": group, "definition": "m/main", "k": "0.01", "seeds": 2, "shared_count": 15.0,
         "expected_by_chance": 0.5, "enrichment": 30.0, "gini_neurons": 0.25},
        {"group": group, "definition": "m/main", "k": "0.1", "seeds": 2, "shared_count": 150.0,
         "expected_by_chance": 50.0, "enrichment": 3.0, "gini_heads": 0.625,
         "top5_heads_share": 0.5, "gini_neurons": 0.5},
        {"group": group, "definition": "z/other", "k": "0.01", "seeds": 2, "shared_count": 5.0,
         "expected_by_chance": 1.0, "enrichment": 5.0, "gini_heads": 0.375,
         "top5_heads_share": 0.5, "gini_neurons": 0.5},
        {"group": group, "definition": "a/third", "k": "0.01", "seeds": 2, "shared_count": 2.0,
         "expected_by_chance": 1.0, "enrichment": 2.0, "gini_neurons": 0.5}]
    assert trace_rows([_result("mixed", 0, 0.5)]) == []


TRACE_INTRO = ("Means over seeds. shared: parameters in both the BIO and the QA top-k; x chance: "
               "shared / the overlap two random sets of those sizes would have; Gini heads and "
               "top-5 heads: how concentrated the shared set is over attention heads (- where it "
               "holds no head parameter). Definitions are mode/score/ranking, the main one first "
               "(README, \"Gradient trace\").")


def test_trace_section_puts_the_groups_side_by_side_with_a_dash_for_no_value():
    rows = [{"group": "mixed / m", "definition": "m/main", "k": "0.01", "seeds": 2,
             "shared_count": 12.5, "enrichment": 25.0, "gini_heads": 0.4, "top5_heads_share": 0.75},
            {"group": "two-stage / m", "definition": "m/main", "k": "0.01", "seeds": 1,
             "shared_count": 3.0, "enrichment": 6.0},
            {"group": "mixed / m", "definition": "z/other", "k": "0.1", "seeds": 2,
             "shared_count": 1234.0, "enrichment": 0.5, "gini_heads": 0.125,
             "top5_heads_share": 0.0625}]
    assert trace_section(rows) == [
        "", "## Trace: shared parameters and centralization", "", TRACE_INTRO, "",
        "| definition | k | mixed / m: shared | mixed / m: x chance | mixed / m: Gini heads | "
        "mixed / m: top-5 heads | two-stage / m: shared | two-stage / m: x chance | "
        "two-stage / m: Gini heads | two-stage / m: top-5 heads |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| m/main | 0.01 | 12.5 | 25 | 0.4 | 0.75 | 3 | 6 | - | - |",
        "| z/other | 0.1 | 1.23e+03 | 0.5 | 0.125 | 0.0625 | - | - | - | - |"]
    assert trace_section([]) == []


DEFINITIONS_INTRO = ("Each cell: outcome, effect (a - b), p adjusted by Holm over the definitions. "
                     "The verdict above is decided under the main definition (first row).")


def test_trace_claims_under_every_definition_one_row_a_definition_one_column_a_claim():
    def row(definition, outcome, effect, p_adjusted):
        return {"definition": definition, "outcome": outcome, "effect": effect,
                "p_value": 0.01, "p_adjusted": p_adjusted}
    gini = _verdict("gini", "pass", definitions=(row("m/main", "holds", 0.25, 0.0125),
                                                 row("z/other", "does_not_hold", -0.5, 0.5)))
    shared = _verdict("shared", "fail", definitions=(row("m/main", "undecided", 1234.5, None),
                                                     row("a/third", "holds", 2.0, 0.002)))
    verdicts = _document([gini, _verdict("ood", "pass"), shared])["verdicts"]
    assert definitions_section(verdicts) == [
        "", "## Trace claims under every definition", "", DEFINITIONS_INTRO, "",
        "| definition | gini | shared |", "|---|---|---|",
        "| m/main | holds, 0.25, p 0.0125 | undecided, 1.23e+03, p - |",
        "| z/other | does not hold, -0.5, p 0.5 | - |",
        "| a/third | - | holds, 2, p 0.002 |"]
    assert definitions_section(_document([_verdict("ood", "pass")])["verdicts"]) == []


def test_the_written_report_carries_the_trace_definitions_and_analyses_sections(tmp_path):
    results = _traced_results()[:1]
    results[0]["analyses"] = {"summary": {"grafting_fraction@magnitude": 0.25}}
    claim = _verdict("gini", "pass", definitions=(
        {"definition": "m/main", "outcome": "holds", "effect": 0.25, "p_value": 0.01,
         "p_adjusted": 0.02},))
    document = write_suite_report(SUITE, results, [], [claim], tmp_path)
    assert [(row["definition"], row["k"]) for row in document["trace"]] == [
        ("m/main", "0.01"), ("m/main", "0.1"), ("z/other", "0.01"), ("a/third", "0.01")]
    assert document["analyses"] == [{"group": "mixed / tiny-llama", "n": 1, "mean": 0.25,
                                     "sd": 0.0, "key": "grafting_fraction@magnitude"}]
    lines = (tmp_path / "cpu" / "report.md").read_text("utf-8").splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Verdicts", "## Trace claims under every definition",
                        "## Trace: shared parameters and centralization", "## Mechanism analyses"]
    assert "| m/main | 0.01 | 10 | 20 | 0.25 | 0.5 |" in lines
    assert ("| grafting_fraction@magnitude | 0.250 ± 0.000 (1) | not stated (v1: a small set "
            "localizes recall) |") in lines


# --- a run's trace as text ---------------------------------------------------------------------


def test_a_trace_without_its_fields_reads_unknown_definition_and_no_parameters():
    assert trace_text({}) == ["trace definition ?, 0 parameters scored"]


def test_a_runs_trace_text_shows_centralization_every_dropped_metric_and_every_k():
    trace = {"definition": "d", "n_parameters": 1234567,
             "per_k": {"0.01": {"shared": {"count": 1500, "expected_by_chance": 12.5,
                                           "enrichment": 120.0},
                                "centralization": {"gini_heads": 0.625,
                                                   "top5_heads_share": 0.875}}},
             "ablation": {"0.01": {"drop": {"ood_exact_match": 0.5, "id_exact_match": 0.25},
                                   "random_drop_mean": {"ood_exact_match": 0.0625}}},
             "definitions": {"d": {"per_k": {"0.01": {}, "0.1": {}},
                                   "summary": {"shared_count@0.01": 1500.0}}}}
    assert trace_text(trace) == [
        "trace definition d, 1,234,567 parameters scored",
        "k=0.01: 1,500 shared, 12.5 by chance (120x); Gini over heads 0.625, top-5 heads 0.875",
        "  drop when reset to the weights before training: ood_exact_match 0.5 (random sets "
        "0.0625), id_exact_match 0.25 (random sets -)",
        "definition d: shared k=0.01 1,500, k=0.1 0"]


# --- expected failures and unexpected passes ---------------------------------------------------


def _expectation_document() -> dict:
    return _document([_verdict("known gap", "xfail", "paper's size only", expect="fails",
                               outcome="does_not_hold"),
                      _verdict("surprise", "xpass", "held anyway", expect="fails",
                               outcome="holds")])


def test_junit_writes_an_expected_failure_as_pytest_does_and_an_unexpected_pass_with_properties(
        tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(path, [_expectation_document()])
    suite = ElementTree.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "1")
    xfail, xpass = suite.findall("testcase")
    [skipped] = list(xfail)
    assert (skipped.tag, skipped.attrib) == ("skipped", {
        "type": "pytest.xfail", "message": "expected failure (does not hold): paper's size only"})
    assert [child.tag for child in xpass] == ["properties", "system-out"]
    properties = {p.get("name"): p.get("value") for p in xpass.iter("property")}
    assert (properties["status"], properties["outcome"], properties["expect"]) == (
        "xpass", "holds", "fails")
    assert xpass.findtext("system-out") == "unexpected pass (holds): held anyway"


def test_expected_failures_and_unexpected_passes_print_in_magenta(monkeypatch):
    text = _printed(monkeypatch, _expectation_document(), color=True)
    assert "\x1b[35mexpected failure (does not hold)\x1b[0m known gap: paper's size only" in text
    assert "\x1b[35munexpected pass (holds)\x1b[0m surprise: held anyway" in text
