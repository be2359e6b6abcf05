"""Every benchmark script runs end to end at its `--smoke` setting and writes its JSON, so the
scripts cannot rot. Nothing here is timed: performance lives in benchmarks/results/."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = {"train": ["ours_tokens_per_s", "hf_tokens_per_s", "ratio", "ratio_packed", "levers"],
           "eval": ["seconds", "ratio", "disagreements"],
           "data": ["target", "table"],
           "scaling": ["table"],
           "ddp": ["one_process_2_threads", "two_processes_1_thread", "same_answers", "train_speedup"]}


def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"bench_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """Runs a script once at --smoke (shared data folder) and returns the JSON it wrote."""
    data_root, out_dir = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("results")
    results: dict[str, dict[str, Any]] = {}

    def run(name: str) -> dict[str, Any]:
        if name not in results:
            load_script(name).main(["--smoke", "--out-dir", str(out_dir),
                                    "--data-root", str(data_root)])
            results[name] = json.loads((out_dir / f"{name}.json").read_text())
        return results[name]
    return run


# bench_ddp starts two processes (about 40 s on 2 cores): slow; the others take a few seconds.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "ddp" else name
                                  for name in SCRIPTS])
def test_script_runs_at_smoke_setting_and_writes_its_json(name, smoke_run):
    result = smoke_run(name)
    assert result["benchmark"] == name and result["settings"]["smoke"] is True
    for key in [*SCRIPTS[name], "environment", "machine", "date", "torch_threads"]:
        assert key in result, key
    assert result["environment"]["git_revision"]


def test_score_qa_verdicts_equal_one_by_one_generate_at_smoke_setting(smoke_run):
    """The one correctness claim of the benchmarks: score_qa decides as generate would."""
    assert smoke_run("eval")["disagreements"]["generate_one_by_one"] == []


def test_two_processes_train_as_one_at_smoke_setting(smoke_run):
    """Answers alone prove little at this size (nothing is learned in 6 steps): the losses must
    agree too."""
    result = smoke_run("ddp")
    assert result["same_answers"] is True and result["same_loss_curve"] is True


def test_loss_curves_that_differ_are_told_apart():
    same_loss_curves = load_script("ddp").same_loss_curves
    assert same_loss_curves([[[5, 2.0], [6, 1.5]], [[5, 2.00001], [6, 1.50001]]])
    assert not same_loss_curves([[[5, 2.0], [6, 1.5]], [[5, 2.0], [6, 1.6]]])
    assert not same_loss_curves([[[5, 2.0]], [[6, 2.0]]])
