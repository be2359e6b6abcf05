"""`factrecall-bench analyze RUN` end to end on a finished micro run (with a probe trace)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factrecall_bench.cli import app, main
from factrecall_bench.errors import UserError
from tests.conftest import MICRO_SUITE, run_cli

PROBE_TRACE = '\n[trace]\nenabled = true\ntop_k = [0.05]\nablation_random_draws = 0\n'
FAST = ["--set", "grafting.random_draws=1", "--set", "grafting.mask_steps=4",
        "--set", "grafting.max_questions=30", "--set", "reads.max_items=24",
        "--set", "representation.max_people=8"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("analyze")
    suite = folder / "micro-probe-trace.toml"
    suite.write_text(MICRO_SUITE.read_text() + PROBE_TRACE)
    runs = folder / "runs"
    done = run_cli("run", "--suite", str(suite), "--runs-dir", str(runs), "--no-check")
    assert done.returncode == 0, done.stderr
    (result,) = runs.glob("micro/*/result.json")
    return result.parent


@pytest.mark.slow
def test_analyze_writes_every_analysis_to_analyses_json_and_prints_a_summary(micro_run):
    done = CliRunner().invoke(app, ["analyze", str(micro_run), *FAST])
    assert done.exit_code == 0, done.output
    assert f"wrote {micro_run / 'analyses.json'}" in done.stdout
    assert "grafting top_delta:" in done.stdout and "reads bio:" in done.stdout
    document = json.loads((micro_run / "analyses.json").read_text())
    assert document["schema_version"] == 1
    assert set(document["analyses"]) == {"grafting", "representation", "reads"}
    grafting = document["analyses"]["grafting"]
    assert grafting["settings"]["random_draws"] == 1
    assert grafting["finetuned"]["id_exact_match"] > 0.5
    top = grafting["methods"]["top_delta"]
    assert top["k"] is not None and top["recovered"]["id_exact_match"] >= 0.9 - 1e-9
    assert set(top["overlap_with_shared"]) == {"0.05"}
    counts = grafting["shared"]["counts"]["0.05"]
    assert counts["recomputed"] == counts["stored"]  # the trace's shared set, recomputed
    layers = document["analyses"]["representation"]["groups"]["p_train"]["cosine"]
    assert len(layers) == 2  # embeddings + the micro model's one layer
    shares = document["analyses"]["reads"]["formats"]["qa_id"]["share"]
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_analyze_one_analysis_keeps_the_others_already_written(micro_run):
    done = CliRunner().invoke(app, ["analyze", str(micro_run), "--what", "representation",
                                    "--json"])
    assert done.exit_code == 0, done.output
    assert set(json.loads(done.stdout)["analyses"]) == {"grafting", "representation", "reads"}


def test_a_missing_run_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "analyze", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no such run folder" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--what", "grafting,magic"], "unknown analysis magic"),
    (["--set", "grafting.share=2"], "grafting.share"),
    (["--set", "reads.colour=1"], "no setting colour"),
    (["--set", "share=1"], "expected ANALYSIS.SETTING=VALUE"),
])
def test_bad_input_is_a_user_error(micro_run, args, message):
    done = CliRunner().invoke(app, ["analyze", str(micro_run), *args])
    assert isinstance(done.exception, UserError) and message in str(done.exception)


def test_an_unfinished_run_is_a_user_error(tmp_path):
    unfinished = tmp_path / "micro" / "run"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text("{}")
    done = CliRunner().invoke(app, ["analyze", str(unfinished)])
    assert isinstance(done.exception, UserError) and "no finished run" in str(done.exception)
