"""GPU check: speed of the training step (SmolLM2-135M, 1B Llama) and mixed vs two-stage runs.

`--speed`: SmolLM2-135M on the mixed recipe (~1,000 bioS people, batch 64), padded vs packed vs
packed + torch.compile, each over the same 40 steps after 8 warmup steps (compile time reported
as the warmup's): tokens/s, MFU, peak memory (gpu_speed.py). `--mfu-1b`: bf16 fine-tuning
throughput of a Llama-3.2-1B architecture built from config (random weights, full 512-token
rows), eager and compiled. Unless `--skip-runs`: both strategies trained on ~1,000 people with
`run_one` and the trace hook (as a suite would): OOD/ID exact match, tokens/s, MFU, memory.
JSON (with the card's name) goes to --out, else $OUT/gpu_check.json, else
benchmarks/results/gpu_check.json, rewritten after each part so a run cut short still leaves what
it measured.

    python benchmarks/pack_smollm2.py --out .devwork/smollm2-pack   # here, where the GGUF is
    python benchmarks/gpu_check.py --pack .devwork/smollm2-pack --speed --mfu-1b --skip-runs
    python benchmarks/gpu_check.py --tiny --speed --mfu-1b          # CPU smoke test: tiny models
The speed parts are sized to take ~4-5 minutes on one H100 (est.: compilation ~1-2 min each).
MFU = 6 * parameters * training tokens/s / peak dense bf16 FLOP/s of the device (padding tokens
not counted, so it is a lower bound). On an H200 the 1B part took ~15 s, the two-stage run 126 s
and the mixed run 218 s (625 steps each: a 135M model with short sequences is bound by the host,
not the GPU); the whole check takes ~6.5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factrecall_bench.config import DataSpec, RunConfig  # noqa: E402
from factrecall_bench.environment import environment_record  # noqa: E402
from factrecall_bench.suite import parse_suite  # noqa: E402

GPU_DATA = DataSpec(n_people=1000, seed=0, bio_variants=2, permute=True)
TINY_DATA = DataSpec(n_people=24, seed=0, bio_variants=2, permute=True, templates_per_attribute=3)
GPU_TRAIN = dict(bio_epochs=8, qa_epochs=8, lr=3e-4, stage2_lr=3e-4, batch_size=64, weight_decay=0.01,
                 checkpoint_every=100000, log_every=20)
TINY_TRAIN = dict(bio_epochs=2, qa_epochs=2, lr=1e-3, stage2_lr=1e-3, batch_size=16, checkpoint_every=100000)
TRACE = dict(enabled=True, top_k=[0.01], probe_examples=128, ablation_random_draws=2)
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12}
"""Dense bf16 tensor-core peak by device-name fragment (SXM parts)."""
MFU_1B = dict(steps=30, warmup=5, micro_batch=16, seq_len=512)
MFU_TINY = dict(steps=3, warmup=1, micro_batch=4, seq_len=32)


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def check_configs(model: str, data: DataSpec, train: dict[str, Any],
                  strategies: list[str]) -> list[RunConfig]:
    """One run per strategy, in the order given, built and validated as a suite file would be."""
    raw = {"name": "gpu-check", "seeds": [0], "strategies": strategies, "models": [model],
           "data": asdict(data), "train": train, "eval": {"batch_size": 256}, "trace": TRACE}
    return list(parse_suite(raw, "gpu_check").runs)


def run_strategy(config: RunConfig, runs_root: Path, peak: float | None) -> dict[str, Any]:
    from factrecall_bench.models import count_parameters
    from factrecall_bench.runner import run_dir, run_one
    from factrecall_bench.trace.hook import trace_hook_for

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    measured: dict[str, Any] = {}

    def trace_and_count(config: RunConfig, model: torch.nn.Module, data: Any, context: dict) -> Any:
        measured["parameters"] = count_parameters(model)
        hook = trace_hook_for(config)
        return hook(config, model, data, context) if hook else None

    outcome = run_one(config, runs_root, after_eval=trace_and_count)
    if outcome.result is None:
        return {"status": outcome.status, "reason": outcome.reason}
    return {"status": outcome.status, **summarize(outcome.result, measured.get("parameters", 0), peak),
            "steady_tokens_per_s": steady_tokens_per_s(run_dir(runs_root, config) / "events.jsonl")}


def steady_tokens_per_s(events_file: Path) -> float | None:
    """Median training rate of the logged windows in the second half of the run (after warmup
    and any compilation)."""
    from factrecall_bench.events import read_events

    rates = [event["tokens_per_s"] for event in read_events(events_file).events
             if event["event"] == "step" and "tokens_per_s" in event]
    later = rates[len(rates) // 2:]
    return round(float(statistics.median_high(later)), 1) if later else None


def mfu(parameters: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilization: 6 FLOPs per parameter and training token, over the device's peak."""
    return round(6 * parameters * tokens_per_s / peak, 4) if peak else None


def peak_memory_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def summarize(result: dict[str, Any], parameters: int, peak: float | None) -> dict[str, Any]:
    tokens_per_s = result["throughput"]["train_tokens_per_s"]
    trace = result.get("trace") or {}
    return {
        "metrics": {name: round(value["value"], 4) for name, value in result["metrics"].items()},
        "n_ood_questions": result["metrics"]["ood_exact_match"]["n"],
        "steps": result["total_steps"], "parameters": parameters,
        "train_tokens_per_s": round(tokens_per_s, 1),
        "mfu": mfu(parameters, tokens_per_s, peak),
        "timings_s": {name: round(value, 2) for name, value in result["timings"].items()},
        "peak_memory_gib": peak_memory_gib(),
        "phase_evals": result.get("phase_evals"),
        "trace_summary": trace.get("summary"),
    }


def mfu_config(tiny: bool) -> Any:
    from transformers import AutoConfig

    from factrecall_bench.model_families import published_architecture

    values = published_architecture("llama-3.2-1b") or {}
    if tiny:
        values.update(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def measure_mfu_1b_both(tiny: bool, peak: float | None, compiled: bool) -> dict[str, Any]:
    """Eager, then (with `compiled`) torch.compile'd: the warmup's wall includes compilation."""
    eager = measure_mfu_1b(tiny, peak)
    if not compiled:
        return eager
    _free_memory()
    return {**eager, "compiled": measure_mfu_1b(tiny, peak, compiled=True)}


def measure_mfu_1b(tiny: bool, peak: float | None, compiled: bool = False) -> dict[str, Any]:
    """Library training steps (fp32 master weights, bf16 autocast, AdamW) on random tokens."""
    from transformers import AutoModelForCausalLM

    from factrecall_bench.batching import MicroBatch
    from factrecall_bench.config import Phase, TrainSpec
    from factrecall_bench.models import count_parameters
    from factrecall_bench.runner import accelerator_for
    from factrecall_bench.train import make_optimizer, optimizer_step

    settings = MFU_TINY if tiny else MFU_1B
    accelerator = accelerator_for("auto")
    config = mfu_config(tiny)
    with torch.device(accelerator.device):
        model = AutoModelForCausalLM.from_config(config)
    parameters = count_parameters(model)
    model = accelerator.prepare_model(model)
    if compiled:
        accelerator.unwrap_model(model).get_decoder().compile()
    optimizer = accelerator.prepare_optimizer(
        make_optimizer(model, Phase(name="mfu", epochs={}, lr=1e-5), TrainSpec()))
    generator = torch.Generator().manual_seed(0)
    shape = (settings["micro_batch"], settings["seq_len"])
    ids = torch.randint(0, config.vocab_size, shape, generator=generator).to(accelerator.device)
    tensors = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids),
               "is_qa": torch.zeros(shape[0], dtype=torch.bool, device=accelerator.device)}
    # Its tasks and loss tokens known on the host, as the Trainer's are: no read-back per step.
    batch = MicroBatch(tensors, {"bio": shape[0] * (shape[1] - 1)})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    model.train()
    first = time.perf_counter()
    for step in range(settings["steps"]):
        if step == settings["warmup"]:
            _synchronize()
            started = time.perf_counter()
            warmup_s = started - first
        losses = optimizer_step(model, optimizer, [batch], accelerator, clip_norm=1.0)
    _synchronize()
    elapsed = time.perf_counter() - started
    tokens_per_s = (settings["steps"] - settings["warmup"]) * ids.numel() / elapsed
    return {"architecture": "llama-3.2-1b" + (" (tiny)" if tiny else ""), "parameters": parameters,
            **settings, "precision": accelerator.mixed_precision, "compiled": compiled,
            "warmup_s": round(warmup_s, 2), "final_loss": round(losses.mean(), 4),
            "step_s": round(elapsed / (settings["steps"] - settings["warmup"]), 4),
            "tokens_per_s": round(tokens_per_s, 1),
            "mfu": mfu(parameters, tokens_per_s, peak), "peak_memory_gib": peak_memory_gib()}


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def output_path(out: Path | None) -> Path:
    if out is not None:
        return out
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return Path(__file__).resolve().parent / "results" / "gpu_check.json"


def write_report(report: dict[str, Any], path: Path) -> None:
    from factrecall_bench.io import write_json_atomic

    write_json_atomic(path, report)


def model_under_test(args: argparse.Namespace, scratch: Path) -> tuple[str, str]:
    """(suite model name, where its weights came from)."""
    if args.tiny:
        return "tiny-llama", "random init (tiny preset)"
    if args.pack is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pack_smollm2 import unpack

        folder = unpack(args.pack, scratch / "smollm2-135m")
        return f"hf:{folder}", f"SmolLM2-135M-Instruct GGUF, repacked to fit the transfer ({args.pack})"
    return args.model, "packaged GGUF" if args.model == "smollm2-135m" else args.model


def parse_strategies(text: str) -> list[str]:
    """`--strategies "two-stage, mixed"` -> ["two-stage", "mixed"]."""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny models and few people (CPU test).")
    parser.add_argument("--mfu-1b", action="store_true", help="Also measure 1B Llama training MFU.")
    parser.add_argument("--speed", action="store_true",
                        help="Training speed of the mixed recipe: padded, packed, compiled.")
    parser.add_argument("--no-compile", action="store_true",
                        help="Leave out the torch.compile variants.")
    parser.add_argument("--skip-runs", action="store_true",
                        help="Only the speed and MFU parts, no mixed/two-stage runs.")
    parser.add_argument("--model", default="smollm2-135m", help="Model of the two runs.")
    parser.add_argument("--pack", type=Path, help="A folder written by pack_smollm2.py.")
    parser.add_argument("--people", type=int, help="Override the number of people.")
    parser.add_argument("--epochs", type=float, help="Override bio_epochs and qa_epochs.")
    parser.add_argument("--strategies", default="mixed,two-stage",
                        help="Comma-separated strategies to run, in this order.")
    parser.add_argument("--runs-dir", type=Path, help="Run folders (default: a temporary folder).")
    parser.add_argument("--out", type=Path, help="JSON file to write.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    name = device_name()
    peak = peak_flops(name)
    path = output_path(args.out)
    report: dict[str, Any] = {"device": name, "peak_bf16_flops": peak, "torch": torch.__version__,
                              "cuda": torch.version.cuda, "tiny": args.tiny,
                              "dynamo_backend": os.environ.get("ACCELERATE_DYNAMO_BACKEND", "no"),
                              "environment": environment_record(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        if args.speed:
            report["speed"] = measure_recipe_speed(args, Path(scratch), peak)
            write_report({**report, "wall_s": round(time.perf_counter() - started, 1)}, path)
            _free_memory()
        if args.mfu_1b:
            report["mfu_1b"] = measure_mfu_1b_both(args.tiny, peak, compiled=not args.no_compile)
            write_report({**report, "wall_s": round(time.perf_counter() - started, 1)}, path)
            _free_memory()
        if not args.skip_runs:
            run_both(args, Path(scratch), report, path, peak, started)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    write_report(report, path)
    print(json.dumps(report, indent=2, default=str))
    return report


def measure_recipe_speed(args: argparse.Namespace, scratch: Path, peak: float | None
                         ) -> dict[str, Any]:
    """The mixed recipe's step speed, padded vs packed (vs compiled): see gpu_speed.py."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_speed

    model, source = model_under_test(args, scratch)
    data, train = recipe(args)
    config = check_configs(model, data, train, ["mixed"])[0]
    variants = tuple(v for v in gpu_speed.VARIANTS if not (v.compiled and args.no_compile))
    settings = gpu_speed.TINY_SPEED if args.tiny else gpu_speed.GPU_SPEED
    return {"model": model, "model_source": source,
            **gpu_speed.measure_speed(config, scratch / "data", settings, peak, variants)}


def recipe(args: argparse.Namespace) -> tuple[DataSpec, dict[str, Any]]:
    """The data and training settings of the check (tiny or full, with the overrides)."""
    data = TINY_DATA if args.tiny else GPU_DATA
    if args.people:
        data = DataSpec(**{**asdict(data), "n_people": args.people})
    train = dict(TINY_TRAIN if args.tiny else GPU_TRAIN)
    if args.epochs is not None:
        train.update(bio_epochs=args.epochs, qa_epochs=args.epochs)
    return data, train


def run_both(args: argparse.Namespace, scratch: Path, report: dict[str, Any], path: Path,
             peak: float | None, started: float) -> None:
    model, source = model_under_test(args, scratch)
    data, train = recipe(args)
    report.update(model=model, model_source=source, data=asdict(data), train=train, trace=TRACE)
    runs_root = args.runs_dir or scratch / "runs"
    for config in check_configs(model, data, train, parse_strategies(args.strategies)):
        report["runs"][config.strategy] = run_strategy(config, runs_root, peak)
        write_report({**report, "wall_s": round(time.perf_counter() - started, 1)}, path)
        _free_memory()


def _free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
