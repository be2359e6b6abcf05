"""Time per optimizer step and per run (extrapolated from a few steps and sampled evaluation) of
the CPU-suite recipe (mixed) at N = 200, 1000, 5000 people, for two model sizes, 1 thread.
Writes benchmarks/results/scaling.json.

    python benchmarks/bench_scaling.py [--smoke] [--sizes 200,1000,5000] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from factrecall_bench.batching import PhasePlan, plan_run  # noqa: E402
from factrecall_bench.config import RunConfig  # noqa: E402
from factrecall_bench.data.dataset import ensure_dataset, load_saved_dataset  # noqa: E402
from factrecall_bench.data.facts import FactData  # noqa: E402
from factrecall_bench.data.tokenizer import ensure_tokenizer  # noqa: E402
from factrecall_bench.evaluate import bio_hits, score_qa  # noqa: E402
from factrecall_bench.models import build_model, count_parameters  # noqa: E402
from factrecall_bench.strategies import resolve_strategy  # noqa: E402

MODELS = {"d128-l2": {"d_model": 128, "n_layer": 2, "n_head": 4, "d_ff": 512},
          "d256-l4": {"d_model": 256, "n_layer": 4, "n_head": 4, "d_ff": 1024}}
EVAL_QUESTIONS, EVAL_BIOS = 512, 128
"""Evaluation is timed on this many questions / biographies and extrapolated to all of them."""


def prepared_data(config: RunConfig, data_root: Path) -> tuple[float, FactData]:
    """Generate and train the tokenizer once (cached, untimed); time the load a run does."""
    folder = ensure_dataset(config.data, data_root)
    ensure_tokenizer(folder, load_saved_dataset(folder))
    return common.seconds(lambda: common.load_data(config, data_root))


def run_steps(config: RunConfig, data: FactData) -> dict[str, int]:
    """Optimizer steps of a whole run, per strategy of the suite (equal by the compute rule)."""
    steps = {}
    for strategy in ("mixed", "two-stage"):
        phases = resolve_strategy(strategy, config.train)
        plans = plan_run(phases, data.source_sizes(), config.train.batch_size, config.seed)
        steps[strategy] = sum(len(plan.batches) for plan in plans)
    return steps


def step_seconds(model: torch.nn.Module, config: RunConfig, data: FactData, steps: int,
                 warmup: int) -> float:
    plan = plan_run(config.phases, data.source_sizes(), config.train.batch_size, config.seed)[0]
    common.train_plans(model, data, config, [PhasePlan(plan.phase, plan.batches[:warmup])])
    timed = PhasePlan(plan.phase, plan.batches[warmup:warmup + steps])
    measured = common.train_plans(model, data, config, [timed])
    return measured["seconds"] / measured["steps"]


def eval_seconds(model: torch.nn.Module, config: RunConfig, data: FactData) -> float:
    """The final evaluation of a run (QA ID + OOD, BIO first token), extrapolated from samples."""
    questions = data.id_questions[:EVAL_QUESTIONS]
    bios = data.bio_train_people[:EVAL_BIOS]
    batch = config.eval.batch_size
    qa_s, _ = common.seconds(lambda: score_qa(model, questions, data.pad_id, batch))
    bio_s, _ = common.seconds(lambda: bio_hits(model, bios, data.pad_id, batch))
    n_questions = len(data.id_questions) + len(data.ood_questions)
    n_bios = len(data.bio_train_people) + len(data.bio_test_people)
    return qa_s / len(questions) * n_questions + bio_s / len(bios) * n_bios


def measure_cell(config: RunConfig, data: FactData, load_s: float, steps: int, warmup: int
                 ) -> dict[str, Any]:
    model = build_model(config.model, data.tokenizer, config.seed)
    step_s = step_seconds(model, config, data, steps, warmup)
    eval_s = eval_seconds(model, config, data)
    total_steps = run_steps(config, data)
    return {
        "n_people": config.data.n_people, "parameters": count_parameters(model),
        "vocab": len(data.tokenizer), "step_s": step_s, "steps_per_run": total_steps,
        "data_load_s": load_s, "train_s_per_run": step_s * total_steps["mixed"],
        "eval_s_per_run": eval_s,
        "run_s": load_s + step_s * total_steps["mixed"] + eval_s,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(__doc__.splitlines()[0], argv, add_options)
    smoke = common.smoke_overrides()
    sizes = [12] if args.smoke else [int(size) for size in args.sizes.split(",")]
    models = {"smoke": smoke["model"]} if args.smoke else MODELS
    steps, warmup = (1, 1) if args.smoke else (args.steps, args.warmup)
    table = []
    for n_people in sizes:
        data_overrides = {**(smoke["data"] if args.smoke else {}), "n_people": n_people}
        load_s, data = prepared_data(common.cpu_suite_config("mixed", data=data_overrides),
                                     args.data_root)  # the tokenizer does not depend on the model
        for name, model in models.items():
            config = common.cpu_suite_config("mixed", data=data_overrides, model=model)
            table.append({"model": name, **model,
                          **measure_cell(config, data, load_s, steps, warmup)})
    result = {
        "settings": {"suite": "cpu", "strategy": "mixed", "timed_steps": steps, "warmup": warmup,
                     "eval_sampled": {"questions": EVAL_QUESTIONS, "bios": EVAL_BIOS},
                     "smoke": args.smoke},
        "method": "run_s = data_load_s (cached dataset, tokenization) + step_s x steps_per_run "
                  "(mixed) + eval_s_per_run (sampled, extrapolated); no checkpoints or trace",
        "table": table,
    }
    path = common.write_result("scaling", result, args.out_dir)
    print(summary(table, path))
    return result


def summary(table: list[dict[str, Any]], path: Path) -> str:
    lines = ["scaling: model    N      params   step_s  steps  train_s  eval_s  load_s  run_s"]
    for row in table:
        lines.append(f"  {row['model']:>8} {row['n_people']:>6} {row['parameters']:>10,} "
                     f"{row['step_s']:7.3f} {row['steps_per_run']['mixed']:>6} "
                     f"{row['train_s_per_run']:8.0f} {row['eval_s_per_run']:7.1f} "
                     f"{row['data_load_s']:7.1f} {row['run_s']:6.0f}")
    return "\n".join(lines) + f"\n  -> {path}"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="200,1000,5000", help="people, comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per cell first")


if __name__ == "__main__":
    main()
