"""The analyses a suite asks for at the end of training ([trace.analyses]): parsed and recorded,
run after the answers into result.json, and invisible to training: a suite run with and without
them gives the same answers, losses and trace, run after run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from factrecall_bench.analyses.at_end import AnalysesSettings, analyses_settings
from factrecall_bench.errors import UserError
from factrecall_bench.orchestrate import run_configs
from factrecall_bench.suite import load_suite
from tests.conftest import MICRO_SUITE, ROOT, TRAINING_TRACE, run_cli

ANALYSES_TABLE = ('\n[trace.analyses]\nwhat = ["representation", "reads", "grafting"]\n'
                  'reads = {max_items = 12}\nrepresentation = {max_people = 6}\n'
                  'grafting = {methods = ["top_delta"], max_questions = 12, random_draws = 1, '
                  'initial_fraction = 0.01}\n')


def micro_suite(folder: Path, name: str, extra: str) -> Path:
    """The micro suite, two seeds run one after the other, the training-mode trace, plus `extra`."""
    text = MICRO_SUITE.read_text().replace('name = "micro"', f'name = "{name}"')
    text = text.replace("seeds = [0]", "seeds = [0, 1]")
    path = folder / f"{name}.toml"
    path.write_text(text + TRAINING_TRACE + extra)
    return path


def test_the_table_parses_with_documented_defaults_and_each_analysis_keeps_its_settings(tmp_path):
    (config, _) = load_suite(str(micro_suite(tmp_path, "parsed", ANALYSES_TABLE))).runs
    settings = analyses_settings(config)
    assert settings.what == ("representation", "reads", "grafting")
    resolved = settings.resolved(seed=7)
    assert resolved["reads"].max_items == 12 and resolved["reads"].seed == 7
    assert resolved["reads"].method == "occlusion"  # the documented default
    assert resolved["representation"].max_people == 6
    assert resolved["grafting"].methods == ("top_delta",)
    assert AnalysesSettings().what == ()  # none unless asked


@pytest.mark.parametrize(("table", "message"), [
    ('what = ["circuits"]', "what must name distinct analyses"),
    ('what = ["reads", "reads"]', "what must name distinct analyses"),
    ('what = "reads"', "what must be a list"),
    ('what = ["reads"]\nreads = {max_itemz = 3}', "reads has no setting max_itemz"),
    ('what = ["reads"]\nreads = {method = "saliency"}', "reads.method must be"),
    ('what = ["grafting"]\ngrafting = {share = 2.0}', "grafting.share must be"),
    ('whut = ["reads"]', "unknown key(s) whut"),
])
def test_a_bad_table_is_a_user_error_naming_the_setting(tmp_path, table, message):
    (config, _) = load_suite(str(micro_suite(tmp_path, "bad",
                                             f"\n[trace.analyses]\n{table}\n"))).runs
    with pytest.raises(UserError, match=re.escape(message)) as raised:
        analyses_settings(config)
    assert str(raised.value).startswith("suite bad: trace.analyses: ")


def test_the_cli_refuses_a_bad_table_in_one_line_with_exit_2_before_any_run(tmp_path):
    path = micro_suite(tmp_path, "bad", '\n[trace.analyses]\nwhat = ["circuits"]\n')
    completed = run_cli("run", "--suite", str(path), "--runs-dir", str(tmp_path / "runs"),
                        "--no-check")
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().count("\n") == 0 and "what must name" in completed.stderr
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.fixture(scope="module")
def with_and_without(tmp_path_factory) -> dict[str, list[Any]]:
    """The same two runs trained in one process, once with and once without the analyses."""
    folder = tmp_path_factory.mktemp("at-end")
    results = {}
    for name, extra in (("plain", ""), ("analysed", ANALYSES_TABLE)):
        configs = list(load_suite(str(micro_suite(folder, name, extra))).runs)
        outcome = run_configs(configs, folder / "runs")
        assert [o.status for o in outcome.outcomes] == ["finished", "finished"], \
            [o.reason for o in outcome.outcomes]
        results[name] = [json.loads((folder / "runs" / name / c.run_id / "result.json").read_text())
                         for c in configs]
    results["folders"] = [folder / "runs" / "analysed" / c.run_id for c in configs]
    return results


@pytest.mark.slow
def test_analyses_change_no_answer_loss_or_trace_of_this_run_or_the_next(with_and_without):
    for plain, analysed in zip(with_and_without["plain"], with_and_without["analysed"],
                               strict=True):
        assert plain["seed"] == analysed["seed"]
        assert plain["per_question"] == analysed["per_question"]
        assert plain["metrics"] == analysed["metrics"]
        assert plain["loss_curve"] == analysed["loss_curve"]
        assert plain["trace"]["summary"] == analysed["trace"]["summary"]
        assert plain["analyses"] is None


@pytest.mark.slow
def test_the_result_holds_each_analysis_its_settings_summary_and_timing(with_and_without):
    for result in with_and_without["analysed"]:
        analyses = result["analyses"]
        assert analyses["settings"]["what"] == ["representation", "reads", "grafting"]
        assert set(analyses["results"]) == set(analyses["timings"]) == set(analyses["settings"]["what"])
        assert analyses["results"]["reads"]["settings"]["max_items"] == 12
        assert analyses["results"]["reads"]["settings"]["seed"] == result["seed"]
        groups = analyses["results"]["representation"]["groups"]
        layers = result["config"]["model"]["n_layer"] + 1  # embeddings, then each block
        assert len(groups["p_train"]["cosine"]) == layers
        # the summary is the mean over the blocks' outputs, recomputed here from the full lists
        cosine = groups["p_train"]["cosine"][1:]
        assert analyses["summary"]["representation_cosine@p_train"] == pytest.approx(
            sum(cosine) / len(cosine))
        share = analyses["results"]["reads"]["formats"]["bio"]["share"]
        if share["subject"] is not None:
            assert analyses["summary"]["reads_subject_relation@bio"] == pytest.approx(
                1.0 - share["rest"])
        counts = analyses["results"]["grafting"]["shared"]["counts"]["0.05"]
        assert counts["recomputed"] == counts["stored"]  # the trace's shared set, found again
        assert all(math.isfinite(v) for v in analyses["summary"].values() if v is not None)


def test_every_readme_trace_analyses_block_is_a_valid_table():
    import tomllib

    readme = (ROOT / "README.md").read_text("utf-8")
    blocks = [tomllib.loads(block) for block in re.findall(r"^```toml\n(.*?)^```", readme,
                                                            re.S | re.M)]
    tables = [block["trace"]["analyses"] for block in blocks
              if "analyses" in (block.get("trace") or {})]
    assert tables, "the README shows [trace.analyses]"
    for table in tables:
        AnalysesSettings(**table).resolved(seed=0)


@pytest.mark.slow
def test_at_the_end_they_equal_analyze_on_the_finished_run_and_keep_the_global_rng(
        with_and_without):
    from factrecall_bench.analyses.at_end import run_analyses_at_end
    from factrecall_bench.analyses.run import load_run

    folder, result = with_and_without["folders"][0], with_and_without["analysed"][0]
    run = load_run(folder)  # the final checkpoint, as `factrecall-bench analyze` loads it
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    again = run_analyses_at_end(run.config, run.model, run.data,
                                {"run_dir": folder, "initial_state": run.initial_state,
                                 "trace": run.result["trace"]})
    assert torch.equal(torch.random.get_rng_state(), before)
    assert again["summary"].keys() == result["analyses"]["summary"].keys()
    for key, value in result["analyses"]["summary"].items():
        assert again["summary"][key] == pytest.approx(value, abs=1e-6), key
