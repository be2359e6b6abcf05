"""A suite's plan on a cluster: GPU-hours and wall time for a number of nodes, from throughput
measured by the benchmarks where there is a measurement.

`plan.py` times one run (6 or 8 FLOPs per parameter and token at an MFU). Here the MFU can come
from a benchmark result (`benchmarks/gpu_check.py --mfu-1b` writes `mfu_1b.mfu`, measured on a
real GPU), and the suite's runs are packed onto the cluster: `nodes * gpus_per_node // gpus` runs
at once, longest first onto the slot that frees up first (what a job array does).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factrecall_bench.errors import UserError
from factrecall_bench.suite import Suite


@dataclass(frozen=True)
class Throughput:
    """The MFU a plan assumes, and where it comes from."""

    mfu: float
    source: str
    """`assumed`, or the benchmark file and the device it was measured on."""


def measured_throughput(path: Path) -> Throughput:
    """The MFU a benchmark measured (`mfu_1b.mfu` of gpu_check.py's result); a file without one is
    a UserError."""
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise UserError(f"--measured {path}: cannot read it ({error.strerror or error})") from error
    try:
        document = json.loads(text)
        mfu = float(document["mfu_1b"]["mfu"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"--measured {path}: no measured MFU in it (expected mfu_1b.mfu, as "
                        "benchmarks/gpu_check.py --mfu-1b writes)") from error
    if not 0 < mfu <= 1:
        raise UserError(f"--measured {path}: MFU {mfu} is not between 0 and 1")
    device = document.get("device", "an unnamed device")
    model = document["mfu_1b"].get("architecture", "one model")
    return Throughput(mfu, f"measured for {model} on {device}, {path.name}; applied to every model")


@dataclass(frozen=True)
class ClusterShape:
    nodes: int
    gpus_per_node: int
    gpus_per_run: int

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise UserError("plan needs --nodes >= 1 and --gpus-per-node >= 1")
        if self.gpus_per_run > self.total_gpus:
            raise UserError(f"--gpus {self.gpus_per_run} per run is more than the cluster's "
                            f"{self.total_gpus} ({self.nodes} nodes x {self.gpus_per_node})")

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def runs_at_once(self) -> int:
        return self.total_gpus // self.gpus_per_run


def run_hours_of(plan: dict[str, Any]) -> list[float]:
    """Every run of the suite (each row once per seed), in hours on `plan["gpus"]` GPUs."""
    return [row["run_hours"] for row in plan["rows"] for _ in range(plan["seeds"])]


def packed_wall_hours(run_hours: list[float], slots: int) -> float:
    """When the last run ends, runs started longest first on whichever slot frees up first."""
    ends = [0.0] * max(1, slots)
    for hours in sorted(run_hours, reverse=True):
        heapq.heapreplace(ends, ends[0] + hours)  # ends[0]: the earliest free slot
    return max(ends)


def cluster_schedule(plan: dict[str, Any], shape: ClusterShape) -> dict[str, Any]:
    """GPU-hours and wall time of the planned suite on `shape`."""
    hours = run_hours_of(plan)
    return {"nodes": shape.nodes, "gpus_per_node": shape.gpus_per_node,
            "gpus_per_run": shape.gpus_per_run, "runs": len(hours),
            "runs_at_once": shape.runs_at_once, "gpu_hours": shape.gpus_per_run * sum(hours),
            "wall_hours": packed_wall_hours(hours, shape.runs_at_once)}


def schedule_line(schedule: dict[str, Any], throughput: Throughput) -> str:
    """One line for people: the cluster, the runs at once, wall time and GPU-hours."""
    return (f"on {schedule['nodes']} node(s) x {schedule['gpus_per_node']} GPUs: "
            f"{schedule['runs']} runs, {schedule['runs_at_once']} at once "
            f"({schedule['gpus_per_run']} GPU(s) each): wall {schedule['wall_hours']:.1f} h, "
            f"{schedule['gpu_hours']:.1f} GPU-hours, at MFU {throughput.mfu:.0%} "
            f"({throughput.source})")


def plan_on_cluster(suite: Suite, gpus: int, gpu_memory_gib: float, mfu: float | None,
                    measured: Path | None, nodes: int | None, gpus_per_node: int
                    ) -> tuple[dict[str, Any], str | None]:
    """`plan`'s document (with `mfu_source`, and `cluster` when `nodes` is given) and the line
    that says the cluster's GPU-hours and wall time (None without `nodes`)."""
    from factrecall_bench.plan import DEFAULT_MFU, plan_suite

    if measured is not None and mfu is not None:
        raise UserError("give --mfu or --measured, not both")
    throughput = (measured_throughput(measured) if measured is not None
                  else Throughput(DEFAULT_MFU if mfu is None else mfu, "assumed"))
    shape = ClusterShape(nodes, gpus_per_node, gpus) if nodes is not None else None
    result = plan_suite(suite, gpus, gpu_memory_gib, throughput.mfu)
    result["mfu_source"] = throughput.source
    if shape is None:
        return result, None
    result["cluster"] = cluster_schedule(result, shape)
    return result, schedule_line(result["cluster"], throughput)
