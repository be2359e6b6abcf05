"""Training throughput (non-pad tokens/s) of our Trainer loop against a plain Hugging Face
`transformers.Trainer` on the same model, data, batch size and step count, 1 thread, interleaved.
Writes benchmarks/results/train.json.

    python benchmarks/bench_train.py [--smoke] [--steps 60] [--rounds 3] [--levers]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from transformers import DataCollatorForSeq2Seq, TrainingArguments  # noqa: E402
from transformers import Trainer as HFTrainer  # noqa: E402

from factrecall_bench.batching import Batch, PhasePlan, split_micro_batches  # noqa: E402
from factrecall_bench.config import RunConfig  # noqa: E402
from factrecall_bench.data.examples import Example  # noqa: E402
from factrecall_bench.data.facts import FactData  # noqa: E402
from factrecall_bench.events import EventLog  # noqa: E402
from factrecall_bench.models import build_model  # noqa: E402
from factrecall_bench.runner import accelerator_for  # noqa: E402
from factrecall_bench.train import Trainer  # noqa: E402


class NoSaveTrainer(Trainer):
    """Our Trainer without its phase-end checkpoint: the HF side saves nothing either."""

    def _checkpoint(self, *args: Any, **kwargs: Any) -> None:
        return None


def train_ours(model: torch.nn.Module, data: FactData, config: RunConfig, batches: list[Batch]
               ) -> dict[str, float]:
    """One Trainer.run over `batches` (a slice of the mixed plan); wall time and non-pad tokens."""
    accelerator = accelerator_for("no")
    with tempfile.TemporaryDirectory() as workdir:
        trainer = NoSaveTrainer(
            model=accelerator.prepare_model(model), plans=[PhasePlan(config.phases[0], batches)],
            examples=data.examples, train=config.train, accelerator=accelerator,
            events=EventLog(Path(workdir) / "events.jsonl", "bench"),
            checkpoint_dir=Path(workdir) / "checkpoints", pad_id=data.pad_id)
        wall, result = common.seconds(trainer.run)
    return {"seconds": wall, "tokens": result["train_tokens"]}


class ExampleDataset(torch.utils.data.Dataset):
    """What a user hands the HF Trainer: one dict of lists per example."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "attention_mask": [1] * len(example.input_ids),
                "labels": example.labels}


@dataclass
class CountingCollator:
    """Pads like DataCollatorForSeq2Seq (labels with -100) and counts non-pad and padded tokens."""

    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    tokens: int = 0
    positions: int = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collate(features)
        self.tokens += int(batch["attention_mask"].sum())
        self.positions += batch["input_ids"].numel()
        return batch


def hf_arguments(config: RunConfig, steps: int, output_dir: str) -> TrainingArguments:
    train = config.train
    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=train.batch_size, max_steps=steps,
        learning_rate=train.lr, weight_decay=train.weight_decay, adam_beta1=train.beta1,
        adam_beta2=train.beta2, max_grad_norm=train.clip_norm, warmup_steps=train.warmup_fraction,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": train.min_lr_fraction},
        report_to=[], save_strategy="no", logging_steps=10**6, disable_tqdm=True, use_cpu=True,
        dataloader_num_workers=0, seed=config.seed)


def train_hf(model: torch.nn.Module, data: FactData, config: RunConfig, steps: int
             ) -> dict[str, float]:
    """A fresh HF Trainer on every training example (bio + QA of P_train, shuffled by HF)."""
    dataset = ExampleDataset(data.examples["bio"] + data.examples["qa_train"])
    collator = CountingCollator(DataCollatorForSeq2Seq(data.tokenizer, padding=True,
                                                       label_pad_token_id=-100))
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = HFTrainer(model=model, args=hf_arguments(config, steps, output_dir),
                            train_dataset=dataset, data_collator=collator)
        wall, _ = common.seconds(trainer.train)
    return {"seconds": wall, "tokens": collator.tokens, "positions": collator.positions}


def our_positions(data: FactData, batches: list[Batch], grad_accum: int) -> int:
    """Token positions our loop computes (rows x width of every micro-batch), padding included."""
    total = 0
    for batch in batches:
        for micro in split_micro_batches(batch, grad_accum):
            lengths = [len(data.examples[source][index].input_ids) for source, index in micro]
            total += len(lengths) * max(lengths)
    return total


def rate(side: dict[str, float]) -> float:
    return side["tokens"] / side["seconds"]


def compare(data: FactData, config: RunConfig, steps: int, warmup: int, rounds: int
            ) -> dict[str, Any]:
    """Both sides warmed up, then `rounds` back-to-back pairs (order alternating)."""
    batches = config_batches(data, config)
    ours_model = build_model(config.model, data.tokenizer, config.seed)
    hf_model = build_model(config.model, data.tokenizer, config.seed)
    train_ours(ours_model, data, config, batches[:warmup])
    train_hf(hf_model, data, config, warmup)
    timed = batches[warmup:warmup + steps]
    pairs = []
    for round_index in range(rounds):
        run_ours = lambda: train_ours(ours_model, data, config, timed)  # noqa: E731
        run_hf = lambda: train_hf(hf_model, data, config, steps)  # noqa: E731
        if round_index % 2:
            hf, ours = run_hf(), run_ours()
        else:
            ours, hf = run_ours(), run_hf()
        pairs.append({"ours": ours, "hf": hf, "ratio": rate(ours) / rate(hf)})
    hf_positions = pairs[-1]["hf"]["positions"]
    return summarize(pairs, our_positions(data, timed, config.train.grad_accum), hf_positions)


def config_batches(data: FactData, config: RunConfig) -> list[Batch]:
    from factrecall_bench.batching import plan_run
    plans = plan_run(config.phases, data.source_sizes(), config.train.batch_size, config.seed)
    return [batch for plan in plans for batch in plan.batches]


def summarize(pairs: list[dict[str, Any]], ours_positions: int, hf_positions: int
              ) -> dict[str, Any]:
    best_ours = max(rate(pair["ours"]) for pair in pairs)
    best_hf = max(rate(pair["hf"]) for pair in pairs)
    ours_tokens = pairs[0]["ours"]["tokens"]
    return {
        "ours_tokens_per_s": best_ours, "hf_tokens_per_s": best_hf,
        "ratio_best": best_ours / best_hf,
        "ratio_median_of_pairs": statistics.median(pair["ratio"] for pair in pairs),
        "pad_share": {"ours": 1 - ours_tokens / ours_positions,
                      "hf": 1 - pairs[-1]["hf"]["tokens"] / hf_positions},
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(__doc__.splitlines()[0], argv, add_options)
    overrides = common.smoke_overrides() if args.smoke else {}
    config = common.cpu_suite_config("mixed", **overrides)
    data = common.load_data(config, args.data_root)
    steps, warmup, rounds = (2, 1, 1) if args.smoke else (args.steps, args.warmup, args.rounds)
    result = compare(data, config, steps, warmup, rounds)
    payload = {"settings": {"suite": "cpu", "strategy": "mixed", "steps": steps, "warmup": warmup,
                            "rounds": rounds, "batch_size": config.train.batch_size,
                            "model": vars(config.model) | {}, "smoke": args.smoke},
               "target": "ours >= 2x hf tokens/s", **result}
    path = common.write_result("train", payload, args.out_dir)
    print(f"ours {result['ours_tokens_per_s']:.0f} tok/s, hf {result['hf_tokens_per_s']:.0f} tok/s, "
          f"ratio {result['ratio_best']:.2f} (median of pairs {result['ratio_median_of_pairs']:.2f})"
          f" -> {path}")
    return payload


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side first")
    parser.add_argument("--rounds", type=int, default=3, help="back-to-back pairs")


if __name__ == "__main__":
    main()
