"""The TUI's trace view as labelled tables, and trace claims under each trace definition in the
verdicts view: small trace and verdict documents shaped as docs/formats.md shows them."""

from __future__ import annotations

import asyncio
import copy
import functools
import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.widgets import Static

from factrecall_bench.runfolder import VERDICTS_SCHEMA_VERSION
from factrecall_bench.tui.app import FactRecallApp
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.tui.tables import LabelledTable
from factrecall_bench.tui.trace_tables import trace_heading, trace_tables
from factrecall_bench.tui.trace_view import trace_content
from factrecall_bench.tui.verdicts_view import definition_table

SIZE = (80, 24)
MAIN = "training/update/global"
PROBE = "probe/grad_x_weight/global"
SHARED = {"count": 2690, "k": {"bio": 9300, "qa": 9300}, "n_parameters": 930000,
          "share_of_k": 0.29, "jaccard": 0.17, "overlap_over_smaller": 0.29,
          "expected_by_chance": 93.0, "enrichment": 28.9}
CENTRALIZATION = {"gini_heads": 0.4, "entropy_heads": 0.8, "top5_heads_share": 0.94,
                  "gini_neurons": 0.3, "entropy_neurons": 0.9}
RECALL = ("id_exact_match", "ood_exact_match", "bio_first_token_test")


def recall(id_em: float, ood_em: float, bio: float) -> dict[str, float]:
    return dict(zip(RECALL, (id_em, ood_em, bio), strict=True))


def documented_trace() -> dict[str, Any]:
    """docs/formats.md's example trace (one k, two definitions)."""
    return {
        "settings": {"mode": "training", "score": "update", "top_k": [0.01]},
        "n_parameters": 930000,
        "per_k": {"0.01": {
            "shared": SHARED,
            "location": {"by_kind": {"v": 400, "norm": 640}, "by_layer": [1200, 800],
                         "outside_layers": 690, "heads": [[3, 0, 1, 2], [1, 5, 0, 0]],
                         "kv_heads": [[3, 0, 1, 2], [1, 5, 0, 0]],
                         "neurons_touched_by_layer": [12, 40], "top_neurons": [[1, 17, 9]]},
            "centralization": CENTRALIZATION}},
        "consistency": {"cosine": 0.04, "per_layer": [0.02, 0.05], "outside_layers": 0.07},
        "ablation": {"0.01": {
            "count": 2690, "baseline": recall(1.0, 0.99, 1.0), "shared": recall(0.96, 0.91, 0.97),
            "drop": recall(0.04, 0.08, 0.03), "random_drop_draws": [recall(0.0, 0.0, 0.0)] * 3,
            "random_drop_mean": recall(0.0, 0.01, 0.0), "random_drop_sd": recall(0.0, 0.02, 0.0),
            "bio_only": recall(0.9, 0.9, 0.5), "bio_only_drop": recall(0.1, 0.09, 0.5)}},
        "definition": MAIN,
        "definitions": {
            PROBE: {"per_k": {"0.01": {"shared": {**SHARED, "count": 120},
                                       "centralization": {"gini_heads": 0.7}}}},
            MAIN: {"per_k": {"0.01": {"shared": SHARED, "centralization": CENTRALIZATION}}},
        },
        "summary": {"shared_count@0.01": 2690.0},
    }


def tables_by_title(trace: dict[str, Any]) -> dict[str, LabelledTable]:
    return {table.title: table for table in trace_tables(trace)}


def test_shared_set_against_chance() -> None:
    shared = tables_by_title(documented_trace())[
        "shared parameters (top k for BIO and for QA) against chance"]
    assert shared.columns == ("k", "shared", "BIO k", "QA k", "share of k", "Jaccard",
                              "by chance", "enrichment")
    assert shared.rows == (("0.01", "2690", "9300", "9300", "0.290", "0.170", "93.0", "28.9x"),)


def test_where_the_shared_set_sits() -> None:
    tables = tables_by_title(documented_trace())
    kinds = tables["where they sit: per module kind"]
    assert kinds.rows == (("v", "400"), ("norm", "640"))  # in a layer's order, not the file's
    layers = tables["where they sit: per layer"]
    assert layers.columns == ("layer", "k=0.01", "neurons k=0.01")
    assert layers.rows == (("L0", "1200", "12"), ("L1", "800", "40"),
                           ("outside layers", "690", "–"))
    heads = tables["shared per query/output heads, layer x head (k=0.01)"]
    assert heads.columns == ("layer", "h0", "h1", "h2", "h3")
    assert heads.rows == (("L0", "3", "0", "1", "2"), ("L1", "1", "5", "0", "0"))
    assert not any("key/value" in title for title in tables)  # the same as the query heads


def test_key_value_heads_show_where_they_differ_and_wide_maps_split() -> None:
    trace = documented_trace()
    location = trace["per_k"]["0.01"]["location"]
    location["kv_heads"] = [[3, 3], [6, 0]]
    location["heads"] = [list(range(30)), [0] * 30]
    tables = tables_by_title(trace)
    assert tables["shared per key/value heads, layer x head (k=0.01)"].rows == (
        ("L0", "3", "3"), ("L1", "6", "0"))
    split = [t for t in tables if t.startswith("shared per query/output heads")]
    assert split == [f"shared per query/output heads, layer x head (k=0.01, heads {a}-{b})"
                     for a, b in ((0, 11), (12, 23), (24, 29))]
    assert tables[split[2]].columns == ("layer", *(f"h{h}" for h in range(24, 30)))


def test_centralization_says_when_no_head_holds_the_set() -> None:
    table = tables_by_title(documented_trace())["how centralized they are"]
    assert table.rows == (("0.01", "0.40", "0.80", "0.94", "0.30", "0.90"),)
    assert "no head" not in table.note
    trace = documented_trace()
    trace["per_k"]["0.01"]["location"]["heads"] = [[0, 0], [0, 0]]
    assert "no head holds a shared parameter at k=0.01" in tables_by_title(trace)[
        "how centralized they are"].note


def test_ablation_beside_random_and_bio_only_controls() -> None:
    table = tables_by_title(documented_trace())[
        "ablation (k=0.01): 2690 shared parameters reset to before fact training"]
    assert table.columns == ("recall", "before", "after", "drop", "random drop", "BIO-only drop")
    assert table.rows == (
        ("ID exact match", "1.00", "0.96", "+0.04", "+0.00 ± 0.00", "+0.10"),
        ("OOD exact match", "0.99", "0.91", "+0.08", "+0.01 ± 0.02", "+0.09"),
        ("BIO recall P_test", "1.00", "0.97", "+0.03", "+0.00 ± 0.00", "+0.50"),
    )
    assert table.note.startswith("random: 3 random sets")


def test_shared_count_and_gini_per_definition_main_first() -> None:
    table = tables_by_title(documented_trace())["shared count / Gini heads per trace definition"]
    assert table.columns == ("definition", "k", "shared", "Gini heads")
    assert table.rows == ((f"{MAIN} (main)", "0.01", "2690", "0.40"),
                          (PROBE, "0.01", "120", "0.70"))
    assert trace_heading(documented_trace()) == f"trace definition {MAIN} · 930000 parameters"


def test_a_trace_without_definitions_still_renders() -> None:
    trace = documented_trace()
    del trace["definitions"], trace["definition"]
    titles = list(tables_by_title(trace))
    assert titles[0] == "shared parameters (top k for BIO and for QA) against chance"
    assert not any("definition" in title for title in titles)
    assert trace_heading(trace) == "930000 parameters"


def test_values_of_the_wrong_type_are_dashes_not_errors() -> None:
    junk: dict[str, Any] = {"per_k": {"0.01": {"shared": {"count": "many", "k": 3},
                                               "location": {"heads": "none", "by_layer": [None]},
                                               "centralization": None}, "0.05": 7},
                            "ablation": {"0.01": {"baseline": {"id_exact_match": True}}},
                            "consistency": {"per_layer": "x"}, "definitions": {"d": 1}}
    tables = tables_by_title(junk)
    assert tables["shared parameters (top k for BIO and for QA) against chance"].rows[0][:3] == (
        "0.01", "–", "–")
    assert tables["where they sit: per layer"].rows[0] == ("L0", "–", "–")
    assert not any("definition" in title for title in tables)


def test_a_running_run_shows_its_trace_event_numbers() -> None:
    run = RunState("r", "s", Path("r"))
    run.apply_event({"event": "trace", "summary": {"shared_count@0.01": 12.0}})
    heading, tables = trace_content(run)
    assert (heading, tables[0].rows) == ("trace", (("shared_count@0.01", "12.000"),))


# -- through the app -------------------------------------------------------------------------------
def sync(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def rendered(app: FactRecallApp, selector: str) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.query_one(selector, Static).content)
    return console.export_text()


def write_traced_run(runs: Path, trace: dict[str, Any]) -> None:
    run_dir = runs / "suite" / "mixed-tiny-llama-s0-00000000"
    run_dir.mkdir(parents=True)
    run_start = {"t": 1.0, "event": "run_start", "suite": "suite", "strategy": "mixed",
                 "model": "tiny-llama", "seed": 0, "total_steps": 10}
    (run_dir / "events.jsonl").write_text(json.dumps(run_start) + "\n")
    (run_dir / "result.json").write_text(json.dumps({
        "schema_version": 1, "suite": "suite", "strategy": "mixed", "model": "tiny-llama",
        "seed": 0, "metrics": {}, "trace": trace}))


def make_app(runs: Path) -> FactRecallApp:
    app = FactRecallApp(runs, clock=lambda: 100.0, poll_interval=None)
    app.animation_level = "none"
    return app


@sync
async def test_the_trace_view_scrolls_to_the_definitions_table(tmp_path: Path) -> None:
    write_traced_run(tmp_path, documented_trace())
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("5", "end")
        await pilot.pause()
        shown = rendered(app, "#trace-tables")
        assert f"{MAIN} (main)" in shown and "BIO-only drop" in shown
        scroll, tables = app.query_one("#trace-scroll"), app.query_one("#trace-tables")
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == scroll.max_scroll_y
        assert tables.region.bottom <= scroll.region.bottom  # the last table is on screen


TRACE_CLAIM = {
    "name": "two-stage shares more parameters than chance", "kind": "claim", "status": "pass",
    "label": "pass", "outcome": "holds", "expect": "holds", "test": "t",
    "metric": "trace.enrichment@0.01", "effect": 16.0, "ci_low": 9.0, "ci_high": 23.0,
    "p_value": 0.01, "p_adjusted": 0.02, "detail": "holds under 1 of 2 definitions",
    "definitions": [
        {"definition": MAIN, "outcome": "holds", "effect": 16.0, "p_value": 0.01,
         "p_adjusted": 0.02},
        {"definition": PROBE, "outcome": "does_not_hold", "effect": 0.5, "p_value": 0.4,
         "p_adjusted": 0.4},
    ],
}


def test_a_trace_claim_under_each_definition() -> None:
    table = definition_table(TRACE_CLAIM)
    assert table is not None
    assert table.rows == ((MAIN, "holds", "16.000", "0.010", "0.020"),
                          (PROBE, "does not hold", "0.500", "0.400", "0.400"))
    assert definition_table({**TRACE_CLAIM, "definitions": "junk"}) is None
    assert definition_table({"name": "x"}) is None


@sync
async def test_the_selected_verdict_shows_its_definitions(tmp_path: Path) -> None:
    write_traced_run(tmp_path, documented_trace())
    plain = {**copy.deepcopy(TRACE_CLAIM), "name": "a claim on recall"}
    del plain["definitions"]
    (tmp_path / "suite" / "verdicts.json").write_text(json.dumps({
        "schema_version": VERDICTS_SCHEMA_VERSION, "suite": "suite", "exit_code": 0,
        "verdicts": [plain, TRACE_CLAIM]}))
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("4")
        await pilot.pause()
        assert "trace definition" not in rendered(app, "#verdict-detail")
        await pilot.press("down")
        await pilot.pause()
        detail = rendered(app, "#verdict-detail")
        assert "the claim under each trace definition" in detail
        assert PROBE in detail and "does not hold" in detail
        box = app.query_one("#verdict-detail-box")
        assert box.region.bottom <= app.screen.region.bottom - 1


# -- the mechanism analyses (result["analyses"]) ---------------------------------------------------
ANALYSES = {"summary": {"representation_cosine@p_train": 0.91, "representation_cosine@p_test": 0.5,
                        "representation_cka@p_train": 0.8, "reads_subject_relation@bio": 0.99,
                        "reads_subject_relation@qa_id": "bad"},
            "timings": {"representation": 2.5}}


def test_the_analyses_are_a_table_each_a_row_per_quantity_a_column_per_place() -> None:
    from factrecall_bench.tui.trace_tables import analyses_tables

    tables = {table.title.split(":")[0]: table for table in analyses_tables(ANALYSES)}
    representation = tables["representation consistency"]
    assert representation.columns == ("quantity", "p_train", "p_test")
    assert representation.rows == (("cosine", "0.910", "0.500"), ("linear CKA", "0.800", "–"))
    assert "2.5 s" in representation.note
    assert tables["what the model reads"].rows == (("subject + relation", "0.990", "–"),)
    assert analyses_tables({}) == [] and analyses_tables({"summary": None}) == []


def test_a_run_with_analyses_and_no_trace_shows_the_analyses() -> None:
    run = RunState("r", "s", Path("r"))
    run.result = {"analyses": ANALYSES, "trace": None}
    heading, tables = trace_content(run)
    assert heading.startswith("mechanism analyses") and len(tables) == 2
    run.result = {"analyses": ANALYSES, "trace": documented_trace()}
    heading, tables = trace_content(run)
    assert heading == trace_heading(documented_trace())
    assert tables[-1].title.startswith("what the model reads")
