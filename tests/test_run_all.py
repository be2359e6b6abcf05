"""`run --all`: the shipped CI suites; one that needs a GPU is skipped, saying so, where none is."""

from __future__ import annotations

from pathlib import Path

import pytest

from factrecall_bench import app, suite, suite_file
from factrecall_bench.suite import load_suite, shipped_suites

MICRO = Path(__file__).parent / "data" / "suites" / "micro.toml"


@pytest.fixture
def ci_suites_with_a_gpu_one(tmp_path, monkeypatch):
    """The shipped suites plus `needs-gpu`, a CI suite that needs a GPU."""
    text = MICRO.read_text().replace('name = "micro"', 'name = "needs-gpu"')
    gpu_suite = tmp_path / "needs-gpu.toml"
    gpu_suite.write_text("ci = true\nneeds_gpu = true\n" + text)
    load_suite(gpu_suite)  # a valid suite: the test is about selection, not loading
    suites = {**shipped_suites(), "needs-gpu": gpu_suite}
    monkeypatch.setattr(app, "shipped_suites", lambda: suites)
    monkeypatch.setattr(suite, "shipped_suites", lambda: suites)
    monkeypatch.setattr(suite_file, "shipped_suites", lambda: suites)  # find_suite reads it
    return suites


def test_all_skips_a_suite_that_needs_a_gpu_on_a_machine_without_one(ci_suites_with_a_gpu_one,
                                                                      monkeypatch, capsys):
    monkeypatch.setattr(app, "_has_gpu", lambda: False)
    chosen = [suite.name for suite in app.selected_suites([], True, None, "tiny-llama", 0)]
    assert "needs-gpu" not in chosen and "cpu" in chosen
    assert ("skipping suite(s) needs-gpu: they need a GPU and none is visible"
            in capsys.readouterr().err)


def test_all_includes_a_suite_that_needs_a_gpu_where_there_is_one(ci_suites_with_a_gpu_one,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(app, "_has_gpu", lambda: True)
    chosen = [suite.name for suite in app.selected_suites([], True, None, "tiny-llama", 0)]
    assert "needs-gpu" in chosen and "cpu" in chosen
    assert "skipping" not in capsys.readouterr().err
