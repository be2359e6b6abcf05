"""Every benchmark script runs end to end at its `--smoke` setting and writes its JSON, so the
scripts cannot rot. Nothing here is timed: performance lives in benchmarks/results/."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = {"train": ["ours_tokens_per_s", "hf_tokens_per_s", "ratio", "levers"],
           "eval": ["seconds", "ratio", "disagreements"],
           "data": ["target", "table"],
           "scaling": ["table"]}


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"bench_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-data")


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_runs_at_smoke_setting_and_writes_its_json(name, data_root, tmp_path):
    main = load_script(name).main
    main(["--smoke", "--out-dir", str(tmp_path), "--data-root", str(data_root)])
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name and result["settings"]["smoke"] is True
    for key in [*SCRIPTS[name], "environment", "machine", "date", "torch_threads"]:
        assert key in result, key
    assert result["environment"]["git_revision"]


def test_eval_verdicts_agree_even_at_smoke_setting(data_root, tmp_path):
    """The one correctness claim of the benchmarks: score_qa decides as generate would."""
    result = load_script("eval").main(["--smoke", "--out-dir", str(tmp_path),
                                       "--data-root", str(data_root)])
    assert result["disagreements"]["generate_one_by_one"] == []
