"""`plan --nodes`: the suite's runs packed onto a cluster (GPU-hours, wall time), at the MFU a
benchmark measured when one is given."""

from __future__ import annotations

import json
import sys

import pytest

from factrecall_bench import cli
from factrecall_bench.cli_exit import exit_code_of
from factrecall_bench.errors import UserError
from factrecall_bench.plan_cluster import (
    ClusterShape,
    cluster_schedule,
    measured_throughput,
    packed_wall_hours,
)
from tests.conftest import ROOT

MEASURED = ROOT / "benchmarks" / "results" / "gpu_check_mixed_mfu1b.json"


@pytest.mark.parametrize(("slots", "wall"), [(1, 12.0), (2, 7.0), (3, 5.0), (5, 3.0), (9, 3.0)])
def test_runs_are_packed_longest_first_onto_the_first_free_slot(slots, wall):
    assert packed_wall_hours([2, 3, 2, 3, 2], slots) == wall


def test_the_schedule_counts_every_seed_and_the_gpus_of_each_run():
    plan = {"seeds": 3, "rows": [{"run_hours": 2.0}, {"run_hours": 1.0}]}
    schedule = cluster_schedule(plan, ClusterShape(nodes=2, gpus_per_node=4, gpus_per_run=2))
    assert schedule["runs"] == 6 and schedule["runs_at_once"] == 4
    assert schedule["gpu_hours"] == 2 * (3 * 2.0 + 3 * 1.0)
    # 2, 2, 2, 1 start at once; the next 1 follows the first 1, the last one a 2: 3 h in all
    assert schedule["wall_hours"] == 3.0


def test_a_run_wider_than_the_cluster_is_refused():
    with pytest.raises(UserError, match="more than the cluster's 8"):
        ClusterShape(nodes=1, gpus_per_node=8, gpus_per_run=16)


def test_the_measured_mfu_is_read_from_the_gpu_check_result(tmp_path):
    measured = measured_throughput(MEASURED)
    assert measured.mfu == json.loads(MEASURED.read_text())["mfu_1b"]["mfu"]
    assert measured.source == ("measured for llama-3.2-1b on NVIDIA H200, "
                               "gpu_check_mixed_mfu1b.json; applied to every model")
    (tmp_path / "other.json").write_text(json.dumps({"device": "x"}))
    with pytest.raises(UserError, match="no measured MFU"):
        measured_throughput(tmp_path / "other.json")
    with pytest.raises(UserError, match=r"missing.json: cannot read it \(No such file"):
        measured_throughput(tmp_path / "missing.json")


def plan_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "plan", "--suite", "paper", *args])
    code = exit_code_of(cli.app, debug=False)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_on_nodes_at_the_measured_mfu(monkeypatch, capsys):
    code, out, _ = plan_cli(monkeypatch, capsys, "--gpus", "2", "--nodes", "4", "--measured",
                            str(MEASURED), "--json")
    plan = json.loads(out)
    assert code == 0 and plan["mfu"] == measured_throughput(MEASURED).mfu
    schedule = plan["cluster"]
    assert schedule["runs_at_once"] == 16 and schedule["runs"] == len(plan["rows"]) * plan["seeds"]
    assert schedule["gpu_hours"] == pytest.approx(2 * plan["seeds"] * sum(
        row["run_hours"] for row in plan["rows"]))
    code, out, _ = plan_cli(monkeypatch, capsys, "--gpus", "2", "--nodes", "4")
    assert code == 0 and "16 at once" in out and "(assumed)" in out


def test_mfu_and_measured_together_are_refused(monkeypatch, capsys):
    code, _, err = plan_cli(monkeypatch, capsys, "--mfu", "0.4", "--measured", str(MEASURED))
    assert code == 2 and err == "error: give --mfu or --measured, not both\n"
