"""Suite reports: the plots draw whatever the runs measured, including none or all correct."""

from __future__ import annotations

from factrecall_bench.evaluate import proportion
from factrecall_bench.report import write_plots


def a_result(strategy: str, hits: list[int]) -> dict:
    return {"strategy": strategy, "model": "tiny-llama", "variant": "base", "seed": 0,
            "metrics": {"ood_exact_match": proportion(hits)},
            "loss_curve": [[10, 3.0], [20, 2.0]]}


def test_plots_accept_rates_of_zero_and_one(tmp_path):
    results = [a_result("two-stage", [0] * 7), a_result("mixed", [1] * 12)]
    names = write_plots(results, tmp_path)
    assert names == ["ood_accuracy.png", "learning_curves.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in names)
