"""A suite's report: verdicts.json, report.md with PNG plots, a summary table, JUnit XML."""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from rich.console import Console
from rich.table import Table

from factrecall_bench.analyses.summary import analyses_rows, analyses_section
from factrecall_bench.io import write_bytes_atomic
from factrecall_bench.metrics import summarized_metrics
from factrecall_bench.runfolder import WRONG_KINDS, SuiteFolder, suite_folder
from factrecall_bench.suite import Suite
from factrecall_bench.verdicts import Verdict, status_label, suite_exit_code, verdicts_document


def summary_metric_names() -> list[str]:
    """The summary table's metrics (`metrics.Metric.summarized`), in the registry's order."""
    return [metric.name for metric in summarized_metrics()]


def group_key(result: Mapping[str, Any]) -> str:
    variant = result.get("variant", "base")
    prefix = "" if variant == "base" else f"{variant} / "
    return f"{prefix}{result['strategy']} / {result['model']}"


def _by_group(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for result in results:
        grouped[group_key(result)].append(result)
    return grouped


def summary_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds of the headline metrics, per (variant, strategy, model)."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for result in results:
        grouped[group_key(result)].append(result)
    rows = []
    for key, members in grouped.items():
        row: dict[str, Any] = {"group": key, "seeds": sorted(r["seed"] for r in members)}
        for metric in summary_metric_names():
            row[metric] = _mean_sd([r["metrics"][metric]["value"] for r in members
                                    if metric in r["metrics"]])
        row["train_s_mean"] = statistics.fmean(r["timings"]["total_s"] for r in members)
        rows.append(row)
    return rows


def _mean_sd(values: list[float]) -> dict[str, float] | None:
    """None when no run has the metric (runs finished before it was registered)."""
    if not values:
        return None
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def _summary_cell(spread: dict[str, float] | None, seeds: int = 2) -> str:
    """`0.871 ± 0.012` (mean ± sd over seeds); one seed has no spread to show: `0.871`."""
    if spread is None:
        return "–"
    if seeds < 2:
        return f"{spread['mean']:.3f}"
    return f"{spread['mean']:.3f} ± {spread['sd']:.3f}"


def write_suite_report(suite: Suite, results: Sequence[Mapping[str, Any]], outcome_rows: list[dict],
                       verdicts: list[Verdict], runs_dir: Path) -> dict[str, Any]:
    """Write verdicts.json and report.md (+ plots) into RUNS_DIR/<suite>/ (a `--set` variation's
    into RUNS_DIR/<variation>/, never over the suite's); return the document."""
    folder = suite_folder(runs_dir, suite.report_name)
    failed = [row for row in outcome_rows if row["status"] in ("failed", "busy")]
    document = verdicts_document(suite.report_name, verdicts)
    document["exit_code"] = _exit_code(verdicts, failed)
    document.update({"summary": summary_rows(results), "runs": outcome_rows,
                     "trace": trace_rows(results), "analyses": analyses_rows(_by_group(results))})
    plots = write_plots(results, folder.path)
    document["written"] = {"report": str(folder.report),
                           "plots": ", ".join(str(folder.path / plot) for plot in plots),
                           "verdicts": str(folder.verdicts)}
    folder.write_verdicts(document)  # type: ignore[arg-type]
    samples = sample_summaries(suite_folder(runs_dir, suite.name), results)
    folder.write_report(markdown_report(suite, document, plots, samples))
    return document


def sample_summaries(folder: SuiteFolder, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """samples-summary.json of every run of the suite that logged its samples (`--log-samples`)."""
    found = (folder.run(result["run_id"]).read_samples_summary() for result in results
             if "run_id" in result)
    return [summary for summary in found if summary is not None]


def _exit_code(verdicts: list[Verdict], failed_runs: list[dict]) -> int:
    from factrecall_bench import exit_codes

    runs_code = exit_codes.RUNS_FAILED if failed_runs else exit_codes.OK
    return exit_codes.combined([suite_exit_code(verdicts), runs_code])


def _summary_header() -> list[str]:
    labels = [metric.label for metric in summarized_metrics()]
    return ["| " + " | ".join(["group", "seeds", *labels, "s/run"]) + " |",
            "|" + "---|" * (len(labels) + 3)]


def markdown_report(suite: Suite, document: dict[str, Any], plots: list[str],
                    samples: list[dict[str, Any]] | None = None) -> str:
    lines = [f"# Suite `{suite.name}`", "", suite.description, "", *_variation_lines(suite),
             *_summary_header()]
    for row in document["summary"]:
        cells = [_summary_cell(row[m], len(row['seeds'])) for m in summary_metric_names()]
        lines.append(f"| {row['group']} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | {row['train_s_mean']:.0f} |")
    lines += ["", "## Verdicts", "", "| verdict | status | effect | interval | p (adj.) | detail |",
              "|---|---|---|---|---|---|"]
    for verdict in document["verdicts"]:
        lines.append(f"| {verdict['name']} | **{status_label(verdict)}** | {_num(verdict['effect'])} | "
                     f"[{_num(verdict['ci_low'])}, {_num(verdict['ci_high'])}] | "
                     f"{_num(verdict['p_value'])} ({_num(verdict['p_adjusted'])}) | "
                     f"{verdict['detail']} |")
    failed = [row for row in document["runs"] if row["status"] in ("failed", "busy")]
    lines += [""] + [f"- run {row['run_id']} {row['status']}: {row['reason']}" for row in failed]
    lines += definitions_section(document["verdicts"])
    lines += trace_section(document.get("trace") or [])
    lines += analyses_section(document.get("analyses") or [])
    lines += wrong_answers_section(samples or [])
    lines += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


TRACE_KEYS = ("shared_count", "expected_by_chance", "enrichment", "gini_heads", "top5_heads_share",
              "gini_neurons")
"""Per trace definition and k, the numbers report.md shows (means over seeds)."""


def trace_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per group, trace definition and k: the mean over seeds of TRACE_KEYS (a key some seed has
    no value for, e.g. Gini over heads of a set without head parameters, is left out); the main
    definition first, then the others in their recorded order."""
    grouped: dict[tuple[str, str, str], list[dict[str, float]]] = defaultdict(list)
    for result in results:
        trace = result.get("trace") or {}
        definitions = trace.get("definitions") or {}
        for name in sorted(definitions, key=lambda name: name != trace.get("definition")):
            for k in definitions[name].get("per_k") or {}:
                grouped[(group_key(result), name, k)].append(definitions[name]["summary"])
    rows = []
    for (group, definition, k), summaries in grouped.items():
        means = {key: statistics.fmean(s[f"{key}@{k}"] for s in summaries)
                 for key in TRACE_KEYS if all(f"{key}@{k}" in s for s in summaries)}
        rows.append({"group": group, "definition": definition, "k": k,
                     "seeds": len(summaries), **means})
    return rows


TRACE_COLUMNS = (("shared_count", "shared"), ("enrichment", "x chance"), ("gini_heads", "Gini heads"),
                 ("top5_heads_share", "top-5 heads"))


def trace_section(rows: list[dict[str, Any]]) -> list[str]:
    """Shared parameters and their centralization: one row per trace definition and k, the groups
    side by side."""
    if not rows:
        return []
    groups = list(dict.fromkeys(row["group"] for row in rows))
    by_cell = {(row["definition"], row["k"], row["group"]): row for row in rows}
    headers = [f"{group}: {label}" for group in groups for _, label in TRACE_COLUMNS]
    lines = ["", "## Trace: shared parameters and centralization", "",
             "Means over seeds. shared: parameters in both the BIO and the QA top-k; x chance: "
             "shared / the overlap two random sets of those sizes would have; Gini heads and "
             "top-5 heads: how concentrated the shared set is over attention heads (- where it "
             "holds no head parameter). Definitions are mode/score/ranking, the main one first "
             "(README, \"Gradient trace\").", "",
             "| definition | k | " + " | ".join(headers) + " |",
             "|---|---|" + "---|" * len(headers)]
    for definition, k in dict.fromkeys((row["definition"], row["k"]) for row in rows):
        cells = [_num(by_cell.get((definition, k, group), {}).get(key))
                 for group in groups for key, _ in TRACE_COLUMNS]
        lines.append(f"| {definition} | {k} | " + " | ".join(cells) + " |")
    return lines


def trace_text(trace: Mapping[str, Any]) -> list[str]:
    """A run's trace as people read it (`factrecall-bench trace RUN`): per k the shared set
    against chance, its centralization and its ablation, then every definition's shared count."""
    lines = [f"trace definition {trace.get('definition', '?')}, "
             f"{trace.get('n_parameters', 0):,} parameters scored"]
    for k, entry in (trace.get("per_k") or {}).items():
        shared, central = entry["shared"], entry["centralization"]
        lines.append(f"k={k}: {shared['count']:,} shared, {_num(shared['expected_by_chance'])} "
                     f"by chance ({_num(shared['enrichment'])}x); Gini over heads "
                     f"{_num(central.get('gini_heads'))}, top-5 heads "
                     f"{_num(central.get('top5_heads_share'))}")
        ablation = (trace.get("ablation") or {}).get(k)
        if ablation:
            drops = ", ".join(f"{metric} {_num(drop)} (random sets "
                              f"{_num(ablation['random_drop_mean'].get(metric))})"
                              for metric, drop in ablation["drop"].items())
            lines.append(f"  drop when reset to the weights before training: {drops}")
    for name, entry in (trace.get("definitions") or {}).items():
        counts = ", ".join(f"k={k} {entry['summary'].get(f'shared_count@{k}', 0):,.0f}"
                           for k in entry.get("per_k") or {})
        lines.append(f"definition {name}: shared {counts}")
    return lines


def definitions_section(verdicts: list[dict[str, Any]]) -> list[str]:
    """Trace claims judged under every trace definition: one row a definition, one column a
    claim, each cell the outcome, effect and Holm-adjusted p (over the definitions)."""
    judged = [v for v in verdicts if v.get("definitions")]
    if not judged:
        return []
    names = list(dict.fromkeys(row["definition"] for v in judged for row in v["definitions"]))
    lines = ["", "## Trace claims under every definition", "",
             "Each cell: outcome, effect (a - b), p adjusted by Holm over the definitions. The "
             "verdict above is decided under the main definition (first row).", "",
             "| definition | " + " | ".join(v["name"] for v in judged) + " |",
             "|---|" + "---|" * len(judged)]
    for name in names:
        cells = []
        for verdict in judged:
            row = next((r for r in verdict["definitions"] if r["definition"] == name), None)
            cells.append("-" if row is None else
                         f"{row['outcome'].replace('_', ' ')}, {_num(row['effect'])}, "
                         f"p {_num(row['p_adjusted'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _variation_lines(suite: Suite) -> list[str]:
    if not suite.overrides:
        return []
    settings = ", ".join(f"`{item}`" for item in suite.overrides)
    return [f"Variation `{suite.variation}`: the suite with {settings}. Its regression checks "
            "compare a run only with a baseline entry trained with the same settings.", ""]


WRONG_KIND_HEADERS = {"wrong_attribute": "same person, another attribute",
                      "p_train_value": "a P_train person's value",
                      "p_test_value": "another P_test person's value", "other": "other"}


def wrong_answers_section(summaries: list[dict[str, Any]]) -> list[str]:
    """What the wrong OOD answers were, per group, summed over the runs that logged samples (no
    section without any)."""
    if not summaries:
        return []
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        grouped[group_key(summary)].append(summary)
    lines = ["", "## Wrong OOD answers (samples)", "",
             "Greedy answers from each run's samples.jsonl; a wrong answer is counted under the "
             "first kind it matches, left to right. The last column: of the wrong answers that "
             "are another person's value, the share that is a P_train person's, and the share "
             "expected by chance (each a random other person's value): with few distinct values "
             "most are some P_train person's anyway.", "",
             "| group | runs | OOD questions | wrong | "
             + " | ".join(WRONG_KIND_HEADERS[kind] for kind in WRONG_KINDS)
             + " | P_train among people's values (chance) |",
             "|---|---|---|---|" + "---|" * (len(WRONG_KINDS) + 1)]
    for key, members in sorted(grouped.items()):
        questions = sum(m["ood"]["questions"] for m in members)
        wrong = sum(m["ood"]["wrong"] for m in members)
        counts = [sum(m["ood"]["wrong_kinds"][kind] for m in members) for kind in WRONG_KINDS]
        cells = [f"{count} ({count / wrong:.0%})" if wrong else "0" for count in counts]
        lines.append(f"| {key} | {len(members)} | {questions} | {wrong} | " + " | ".join(cells)
                     + f" | {p_train_share_cell(members)} |")
    return lines


def p_train_share_cell(members: list[dict[str, Any]]) -> str:
    """`observed% (chance%)` over the OOD wrong answers that are another person's value; `-`
    with none, or when a run's summary predates the chance count."""
    if not all("p_train_value_by_chance" in m["ood"] for m in members):
        return "-"
    people_values = sum(m["ood"]["wrong_kinds"][kind] for m in members
                        for kind in ("p_train_value", "p_test_value"))
    if not people_values:
        return "-"
    observed = sum(m["ood"]["wrong_kinds"]["p_train_value"] for m in members) / people_values
    chance = sum(m["ood"]["p_train_value_by_chance"] for m in members) / people_values
    return f"{observed:.0%} ({chance:.0%})"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def write_plots(results: Sequence[Mapping[str, Any]], folder: Path) -> list[str]:
    if not results:
        return []
    import matplotlib
    import matplotlib.style

    matplotlib.use("Agg")
    # matplotlib's own defaults, whatever a user's matplotlibrc says (colours, fonts, sizes,
    # savefig.*): the same PNGs on every machine
    with matplotlib.style.context("default"):
        return [_ood_plot(results, folder), _curves_plot(results, folder)]


def _save(figure: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def _ood_plot(results: Sequence[Mapping[str, Any]], folder: Path) -> str:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.5))
    groups = sorted({group_key(r) for r in results})
    for index, group in enumerate(groups):
        members = [r for r in results if group_key(r) == group]
        for offset, result in enumerate(members):
            metric = result["metrics"]["ood_exact_match"]
            x = index + (offset - (len(members) - 1) / 2) * 0.1
            axes.errorbar(x, metric["value"], yerr=[[metric["value"] - metric["low"]],
                                                    [metric["high"] - metric["value"]]],
                          fmt="o", capsize=3, color=f"C{index}")
    axes.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("OOD exact match (95% Wilson)")
    _save(figure, folder / "ood_accuracy.png")
    plt.close(figure)
    return "ood_accuracy.png"


def _curves_plot(results: Sequence[Mapping[str, Any]], folder: Path) -> str:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.5))
    groups = sorted({group_key(r) for r in results})
    labelled: set[str] = set()
    for result in results:
        curve = result.get("loss_curve") or []
        group = group_key(result)
        axes.plot([p[0] for p in curve], [p[1] for p in curve], color=f"C{groups.index(group)}",
                  alpha=0.7, label=None if group in labelled else group)  # one legend entry a group
        labelled.add(group)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.set_yscale("log")
    axes.legend(fontsize=7)
    _save(figure, folder / "learning_curves.png")
    plt.close(figure)
    return "learning_curves.png"


def print_summary(document: dict[str, Any]) -> None:
    """Results and verdicts to stdout (what a user pipes to a file); where they were written."""
    console = Console(soft_wrap=True)
    table = Table(title=f"suite {document['suite']}")
    for column in ("group", "seeds", *(metric.label for metric in summarized_metrics())):
        table.add_column(column)
    for row in document["summary"]:
        table.add_row(row["group"], str(len(row["seeds"])),
                      *[_summary_cell(row[m], len(row['seeds'])) for m in summary_metric_names()])
    console.print(table)
    for run in document["runs"]:
        if run["status"] not in ("finished",):
            console.print(f"run {run['run_id']} {run['status']}: {run['reason']}", markup=False,
                          highlight=False)
    for verdict in document["verdicts"]:
        label = status_label(verdict)
        console.print(f"[{_style(verdict['status'])}]{label}[/] {verdict['name']}: "
                      f"{verdict['detail']}", highlight=False)
    for what, path in document.get("written", {}).items():
        console.print(f"{what}: {path}", markup=False, highlight=False)
    from factrecall_bench import exit_codes

    console.print(exit_codes.described(document["exit_code"]), highlight=False)
    sys.stdout.flush()


def _style(status: str) -> str:
    return {"pass": "green", "fail": "red", "reported": "cyan", "xfail": "magenta",
            "xpass": "magenta"}.get(status, "yellow")


def write_junit(path: Path, documents: list[dict[str, Any]]) -> None:
    """One testsuite per suite, one testcase per verdict: fail = failure; inconclusive, no
    baseline and xfail (an expected failure, as pytest writes it) = skipped; pass = a plain
    passing case; a reported claim or an unexpected pass (xpass) is a passing case that carries
    its status, outcome and numbers as properties and its label and detail in system-out."""
    root = ElementTree.Element("testsuites", name="factrecall-bench")
    for document in documents:
        verdicts = document["verdicts"]
        node = ElementTree.SubElement(
            root, "testsuite", name=document["suite"], tests=str(len(verdicts)),
            failures=str(sum(v["status"] == "fail" for v in verdicts)),
            skipped=str(sum(v["status"] in SKIPPED_STATUSES for v in verdicts)))
        for verdict in verdicts:
            _junit_case(node, document["suite"], verdict)
    write_bytes_atomic(path, ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


SKIPPED_STATUSES = ("inconclusive", "no_baseline", "xfail")
"""Verdicts JUnit shows as skipped: undecided, or nothing to compare with."""
JUNIT_PROPERTIES = ("status", "outcome", "expect", "test", "metric", "effect", "ci_low",
                    "ci_high", "p_value", "p_adjusted")


def _junit_case(node: ElementTree.Element, suite: str, verdict: dict[str, Any]) -> None:
    case = ElementTree.SubElement(node, "testcase", classname=suite, name=verdict["name"])
    if verdict["status"] == "fail":
        ElementTree.SubElement(case, "failure", message=verdict["detail"])
    elif verdict["status"] == "xfail":  # before SKIPPED_STATUSES, which counts it
        ElementTree.SubElement(case, "skipped", type="pytest.xfail",
                               message=f"{status_label(verdict)}: {verdict['detail']}")
    elif verdict["status"] in SKIPPED_STATUSES:
        ElementTree.SubElement(case, "skipped", message=verdict["detail"])
    elif verdict["status"] in ("reported", "xpass"):
        properties = ElementTree.SubElement(case, "properties")
        for key in JUNIT_PROPERTIES:
            value = verdict.get(key)
            ElementTree.SubElement(properties, "property", name=key,
                                   value="" if value is None else str(value))
        ElementTree.SubElement(case, "system-out").text = (
            f"{status_label(verdict)}: {verdict['detail']}")
