"""CPU seconds of each mechanism analysis on a finished run, beside one evaluation pass of the run
(`runner.evaluate_recall`: every ID and OOD question and every biography), timed before and after.
CPU time, not wall time: on a shared machine wall time measures the neighbours.

    python scripts/analyses_cost.py RUN_DIR [--threads 1] [--what representation,reads,grafting]

Grafting is timed with methods = ["top_delta"] (the learned mask adds mask_steps forward/backward
passes per size tried).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from factrecall_bench.analyses.run import RUNNERS, load_run, parse_what, settings_for
from factrecall_bench.runner import evaluate_recall


def cpu_seconds(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return round(time.process_time() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--what", default="representation,reads,grafting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run_dir)

    def evaluate() -> object:
        return evaluate_recall(run.model, run.data, run.config.eval.batch_size)

    evaluate()  # warm up
    print(f"evaluation pass: {cpu_seconds(evaluate)} CPU s")
    for name in parse_what(args.what):
        overrides = {"methods": ["top_delta"]} if name == "grafting" else {}
        settings = settings_for(name, overrides, run.config.seed)
        seconds = cpu_seconds(lambda name=name, settings=settings: RUNNERS[name](run, settings))
        print(f"{name}: {seconds} CPU s")
    print(f"evaluation pass: {cpu_seconds(evaluate)} CPU s")


if __name__ == "__main__":
    main()
