"""Suite reports: the plots draw whatever the runs measured, including none or all correct;
report.md and JUnit render each verdict's status as decided (a report-only claim: "reported")."""

from __future__ import annotations

from types import SimpleNamespace
from xml.etree import ElementTree

from factrecall_bench.evaluate import proportion
from factrecall_bench.report import markdown_report, trace_text, write_junit, write_plots
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
