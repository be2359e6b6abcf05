"""Greedy exact match decided by one teacher-forced forward pass per batch (`score_qa`) against
per-example greedy `model.generate`, on the same questions of a briefly trained CPU-suite model:
both times, the ratio, and the verdicts that disagree (there must be none).
Writes benchmarks/results/eval.json.

    python benchmarks/bench_eval.py [--smoke] [--qa-epochs 20] [--lr 3e-3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from factrecall_bench.batching import plan_run  # noqa: E402
from factrecall_bench.config import Phase, RunConfig  # noqa: E402
from factrecall_bench.data.examples import QAItem  # noqa: E402
from factrecall_bench.data.facts import FactData  # noqa: E402
from factrecall_bench.evaluate import generate_answers, score_qa  # noqa: E402
from factrecall_bench.models import build_model  # noqa: E402


def train_briefly(data: FactData, config: RunConfig, qa_epochs: float, lr: float
                  ) -> torch.nn.Module:
    """A few epochs on QA of P_train: ID questions come out mostly right, OOD mostly wrong,
    so both verdicts (and near misses) occur."""
    model = build_model(config.model, data.tokenizer, config.seed)
    phase = Phase("qa", {"qa_train": qa_epochs}, lr=lr)
    plans = plan_run((phase,), data.source_sizes(), config.train.batch_size, config.seed)
    common.train_plans(model, data, config, plans)
    return model


@torch.inference_mode()
def generate_one_by_one(model: torch.nn.Module, items: list[QAItem], pad_id: int, eos_id: int
                        ) -> list[list[int]]:
    """The alternative: one greedy `generate` per question, just long enough for its answer."""
    model.eval()
    answers = []
    for item in items:
        ids = torch.tensor([item.prompt_ids])
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                do_sample=False, max_new_tokens=len(item.answer_ids),
                                pad_token_id=pad_id, eos_token_id=eos_id)
        answers.append(output[0, ids.shape[1]:].tolist())
    return answers


def verdicts(answers: list[list[int]], items: list[QAItem]) -> list[int]:
    return [int(answer == item.answer_ids) for answer, item in zip(answers, items)]


def disagreements(reference: list[int], other: list[int], items: list[QAItem]) -> list[str]:
    return [item.question_id for a, b, item in zip(reference, other, items) if a != b]


def time_methods(model: torch.nn.Module, data: FactData, items: list[QAItem], rounds: int,
                 batch_size: int) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds per round of each method (order alternating) and each method's verdicts."""
    eos_id = int(data.tokenizer.eos_token_id)
    methods = {
        "score_qa": lambda: score_qa(model, items, data.pad_id, batch_size).exact_match,
        "generate_one_by_one": lambda: verdicts(
            generate_one_by_one(model, items, data.pad_id, eos_id), items),
        "generate_answers_batched": lambda: verdicts(
            generate_answers(model, items, data.pad_id, eos_id), items),
    }
    score_qa(model, items[:batch_size], data.pad_id, batch_size)  # warm-up
    generate_one_by_one(model, items[:8], data.pad_id, eos_id)
    times: dict[str, list[float]] = {name: [] for name in methods}
    found: dict[str, list[int]] = {}
    for round_index in range(rounds):
        names = list(methods) if round_index % 2 == 0 else list(methods)[::-1]
        for name in names:
            wall, found[name] = common.seconds(methods[name])
            times[name].append(wall)
    return times, found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(__doc__.splitlines()[0], argv, add_options)
    overrides = common.smoke_overrides() if args.smoke else {}
    config = common.cpu_suite_config("mixed", **overrides)
    data = common.load_data(config, args.data_root)
    qa_epochs, rounds = (1.0, 1) if args.smoke else (args.qa_epochs, args.rounds)
    train_s, model = common.seconds(lambda: train_briefly(data, config, qa_epochs, args.lr))
    items = data.id_questions + data.ood_questions
    with contextlib.redirect_stdout(sys.stderr):
        times, found = time_methods(model, data, items, rounds, config.eval.batch_size)
    best = {name: min(values) for name, values in times.items()}
    exact = found["score_qa"]
    n_id = len(data.id_questions)
    result = {
        "settings": {"suite": "cpu", "questions": len(items), "qa_epochs_trained": qa_epochs,
                     "lr": args.lr,
                     "train_s": train_s, "rounds": rounds, "score_batch_size": config.eval.batch_size,
                     "model": dataclasses.asdict(config.model), "smoke": args.smoke},
        "alternative": "model.generate per question, greedy, max_new_tokens = answer length + end",
        "seconds": best, "seconds_rounds": times,
        "ratio": best["generate_one_by_one"] / best["score_qa"],
        "ratio_batched_generate": best["generate_answers_batched"] / best["score_qa"],
        "target": {"ratio_at_least": 10.0,
                   "met": best["generate_one_by_one"] / best["score_qa"] >= 10.0},
        "exact_match": {"id": sum(exact[:n_id]) / max(n_id, 1),
                        "ood": sum(exact[n_id:]) / max(len(items) - n_id, 1)},
        "disagreements": {name: disagreements(exact, found[name], items)
                          for name in ("generate_one_by_one", "generate_answers_batched")},
    }
    path = common.write_result("eval", result, args.out_dir)
    print(summary(result, path))
    return result


def summary(result: dict[str, Any], path: Path) -> str:
    seconds, disagree = result["seconds"], result["disagreements"]
    return (f"eval: {result['settings']['questions']} questions, score_qa {seconds['score_qa']:.2f} s"
            f", one-by-one generate {seconds['generate_one_by_one']:.2f} s, ratio "
            f"{result['ratio']:.1f} (target 10); batched generate "
            f"{seconds['generate_answers_batched']:.2f} s; exact match ID "
            f"{result['exact_match']['id']:.2f} OOD {result['exact_match']['ood']:.2f}; "
            f"disagreements {len(disagree['generate_one_by_one'])} (one by one), "
            f"{len(disagree['generate_answers_batched'])} (batched)\n  -> {path}")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qa-epochs", type=float, default=20.0,
                        help="epochs on QA of P_train before scoring")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of that training")
    parser.add_argument("--rounds", type=int, default=2)


if __name__ == "__main__":
    main()
