"""One run across two "nodes" on one machine: two `accelerate launch` launchers with the shipped
multi-node config (--num_machines 2, machine ranks 0 and 1, a rendezvous on 127.0.0.1), each
starting one process, on CPU with gloo. The run must be the one-process run: the same answers
question by question and the same loss curve up to float summation order."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from factrecall_bench.events import read_events
from tests.conftest import MICRO_SUITE, ROOT, micro_result
from tests.integration.test_distributed import assert_same_run

MULTINODE_CONFIG = ROOT / "configs" / "accelerate" / "ddp-multinode.yaml"


# One at a time under pytest-xdist (`--dist loadgroup`): each launch starts processes that
# meet at a rendezvous, two cores' worth.
pytestmark = pytest.mark.xdist_group("multi_process")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(machine_rank: int, port: int, *args: str) -> list[str]:
    """What each node of a Slurm job runs (see the README), with this machine as both nodes."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    return [accelerate, "launch", "--config_file", str(MULTINODE_CONFIG),
            "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine_rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--mixed_precision", "no", "-m", "factrecall_bench", *args]


def run_two_nodes(*args: str) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    port = free_port()
    nodes = [subprocess.Popen(node_command(rank, port, *args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    ended = []
    try:
        for node in nodes:
            stdout, stderr = node.communicate(timeout=600)
            ended.append(subprocess.CompletedProcess(node.args, node.returncode, stdout, stderr))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    return ended


@pytest.mark.parametrize(("name", "kind"), [("ddp-multinode", "MULTI_GPU"),
                                            ("fsdp2-multinode", "FSDP")])
def test_the_shipped_multinode_configs_span_machines(name, kind):
    import yaml

    config = yaml.safe_load((MULTINODE_CONFIG.parent / f"{name}.yaml").read_text())
    assert config["distributed_type"] == kind and config["num_machines"] > 1
    assert config["rdzv_backend"] == "static" and config["same_network"] is True
    assert config["num_processes"] % config["num_machines"] == 0
    single = yaml.safe_load((MULTINODE_CONFIG.parent / f"{name.split('-')[0]}.yaml").read_text())
    differs = {key for key in config if config[key] != single.get(key)}
    assert differs == {"num_machines", "num_processes", "main_process_ip", "main_process_port"}


@pytest.mark.slow
def test_two_nodes_train_the_single_process_run(tmp_path, micro_uninterrupted):
    main, other = run_two_nodes("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path),
                                "--no-check", "--json")
    assert main.returncode == 0, main.stderr
    assert other.returncode == 0, other.stderr
    assert other.stdout == ""  # one process group: only its main process (node 0) reports
    report = json.loads(main.stdout)
    assert [run["status"] for run in report["suites"][0]["runs"]] == ["finished"]
    assert_same_run(micro_result(tmp_path), micro_uninterrupted)
    events = read_events(next(tmp_path.glob("micro/*/events.jsonl"))).events
    assert [e["event"] for e in events].count("run_start") == 1
