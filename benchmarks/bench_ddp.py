"""Data parallelism on CPU: one run trained by 2 processes (torchrun, gloo, 1 thread each) against
the same run in one process with 2 threads (and with 1). The same answers and the same loss curve
(to float summation order) are expected; the ratios are the speed-ups.
Writes benchmarks/results/ddp.json.

    python benchmarks/bench_ddp.py [--smoke] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SUITE = """\
name = "bench-ddp"
description = "The cpu suite's mixed recipe, seed 0, a short budget, no trace"
seeds = [0]
strategies = ["mixed"]
models = ["tiny-llama"]

[data]
n_people = {people}
bio_variants = 5
permute = true
fullname = true
templates_per_attribute = 5

[model]
n_layer = {layers}
d_model = {d_model}
n_head = 4
d_ff = {d_ff}

[train]
bio_epochs = {epochs}
qa_epochs = {epochs}
lr = 1e-3
stage2_lr = 1e-3
batch_size = 32
checkpoint_every = 100000
log_every = 10
"""
FULL = dict(people=200, layers=2, d_model=128, d_ff=512)
SMOKE = dict(people=12, layers=1, d_model=16, d_ff=32)


def write_suite(folder: Path, smoke: bool, epochs: float) -> Path:
    path = folder / "bench-ddp.toml"
    path.write_text(SUITE.format(epochs=epochs, **(SMOKE if smoke else FULL)))
    return path


def timed_run(command: list[str], threads: int, runs_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... failed: {completed.stderr.strip()[-400:]}")
    (path,) = runs_dir.glob("bench-ddp/*/result.json")
    result = json.loads(path.read_text())
    return {"wall_s": round(wall, 2), "train_s": round(result["timings"]["train_s"], 2),
            "eval_s": round(result["timings"]["eval_s"], 2), "steps": result["total_steps"],
            "train_tokens_per_s": round(result["throughput"]["train_tokens_per_s"], 1),
            "metrics": {name: value["value"] for name, value in result["metrics"].items()},
            "per_question": result["per_question"], "loss_curve": result["loss_curve"]}


def same_loss_curves(curves: list[list[list[float]]]) -> bool:
    """The same logged steps, and losses equal to 1e-4 (relative): summation order differs."""
    first = curves[0]
    return all([step for step, _ in curve] == [step for step, _ in first]
               and all(math.isclose(loss, reference, rel_tol=1e-4)
                       for (_, loss), (_, reference) in zip(curve, first, strict=True))
               for curve in curves[1:])


def measure(suite: Path, scratch: Path) -> dict[str, Any]:
    command = ["-m", "factrecall_bench", "run", "--suite", str(suite), "--no-check", "--runs-dir"]
    single = timed_run([sys.executable, *command, str(scratch / "single")], threads=1,
                       runs_dir=scratch / "single")
    one = timed_run([sys.executable, *command, str(scratch / "one")], threads=2,
                    runs_dir=scratch / "one")
    two = timed_run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node=2", *command, str(scratch / "two")], threads=1,
                    runs_dir=scratch / "two")
    runs = (single, one, two)
    answers = [run.pop("per_question") for run in runs]
    curves = [run.pop("loss_curve") for run in runs]
    return {"one_process_1_thread": single, "one_process_2_threads": one,
            "two_processes_1_thread": two, "same_answers": answers[0] == answers[1] == answers[2],
            "same_loss_curve": same_loss_curves(curves),
            "train_speedup": round(one["train_s"] / two["train_s"], 3),
            "train_speedup_over_1_thread": round(single["train_s"] / two["train_s"], 3),
            "wall_speedup": round(one["wall_s"] / two["wall_s"], 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--epochs", type=float, default=2.0, help="bio and qa epochs")

    args = common.parse_args(__doc__.splitlines()[0], argv, options)
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as folder:
        suite = write_suite(Path(folder), args.smoke, args.epochs)
        payload = {"settings": {"smoke": args.smoke, "epochs": args.epochs,
                                **(SMOKE if args.smoke else FULL)},
                   **measure(suite, Path(folder))}
    path = common.write_result("ddp", payload, args.out_dir)
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
