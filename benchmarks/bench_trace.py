"""Cost of the gradient trace on a tiny Llama: time as a ratio to a plain forward+backward over
the same examples, and extra memory over the parameter bytes. Writes benchmarks/results/trace.json.

    python benchmarks/bench_trace.py [--device cuda] [--repeats 5] [--threads N] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the checkout first on the path: runs uninstalled)

from factrecall_bench import trace  # noqa: E402
from factrecall_bench.trace import (  # noqa: E402
    TraceSettings,
    TrainingTraceRecorder,
    gradient_consistency,
    probe_scores,
    top_k_masks,
)

VOCAB, HIDDEN, INTER, LAYERS, HEADS = 1000, 128, 512, 2, 4
BATCH, LENGTH, BATCHES_PER_TASK, ANSWER_TOKENS = 32, 48, 8, 8
Batch = dict[str, torch.Tensor]


def build(device: str) -> tuple[LlamaForCausalLM, dict[str, list[Batch]]]:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=LENGTH,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(device)
    generator = torch.Generator().manual_seed(1)
    batches: dict[str, list[Batch]] = {"bio": [], "qa": []}
    for task in batches:
        for _ in range(BATCHES_PER_TASK):
            ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator)
            labels = ids.clone()
            if task == "qa":  # answer-only loss
                labels[:, :-ANSWER_TOKENS] = -100
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
            batches[task].append({k: v.to(device) for k, v in batch.items()})
    return model, batches


def plain(model: LlamaForCausalLM, batches: dict[str, list[Batch]]) -> None:
    """The reference: one forward+backward per batch, gradients dropped."""
    for task_batches in batches.values():
        for batch in task_batches:
            model(**batch).loss.backward()
            model.zero_grad(set_to_none=True)


def recorded(model: LlamaForCausalLM, batches: dict[str, list[Batch]], recorder: Any) -> None:
    """Training-shaped: 2 micro-batches per optimizer step, with or without the recorder."""
    step = 0
    for task, task_batches in batches.items():
        for batch in task_batches:
            if recorder is not None:
                recorder.before_backward()
            model(**batch).loss.backward()
            if recorder is not None:
                recorder.after_backward(task)
            step += 1
            if step % 2 == 0:
                if recorder is not None:
                    recorder.on_optimizer_step(lr=1e-3)
                model.zero_grad(set_to_none=True)


def workloads(model: LlamaForCausalLM, batches: dict[str, list[Batch]]) -> dict[str, Callable]:
    def probe(score: str, aggregate: str, source: dict[str, list[Batch]]) -> Callable:
        settings = TraceSettings(score=score, aggregate=aggregate, probe_examples=10**6)  # type: ignore[arg-type]
        return lambda: probe_scores(model, source, settings)

    first_batches = {task: task_batches[:1] for task, task_batches in batches.items()}
    settings = TraceSettings(mode="training")
    # The shipped suites' trace: the paper's reading and every other definition, one recorder.
    every = TraceSettings(mode="training", score="update", definitions=("all",))
    return {
        "plain": lambda: plain(model, batches),
        "probe_summed_grad_x_weight": probe("grad_x_weight", "summed", batches),
        "probe_summed_grad": probe("grad", "summed", batches),
        "consistency": lambda: gradient_consistency(model, batches),
        "plain_first_batches": lambda: plain(model, first_batches),
        "probe_per_example": probe("grad_x_weight", "per_example", first_batches),
        "train_plain": lambda: recorded(model, batches, None),
        "train_recorder": lambda: recorded(model, batches, TrainingTraceRecorder(model, settings)),
        "train_recorder_every_definition": lambda: recorded(
            model, batches, TrainingTraceRecorder(model, every)),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_all(fns: dict[str, Callable], device: str, repeats: int) -> dict[str, float]:
    """Fastest of the repeats (the least disturbed by other load), workloads interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in samples.items()}


def time_top_k(model: LlamaForCausalLM, repeats: int) -> dict[str, float]:
    scores = {n: torch.rand(p.shape, device=p.device) for n, p in model.named_parameters()}
    result, default_limit = {}, trace.selection.MAX_TOPK_CANDIDATES
    for path, limit in (("candidates", default_limit), ("bisection", 0)):
        trace.selection.MAX_TOPK_CANDIDATES = limit
        start = time.perf_counter()
        for _ in range(repeats):
            top_k_masks(scores, 0.05, "global")
        result[f"top_k_global_0.05_{path}"] = (time.perf_counter() - start) / repeats
    trace.selection.MAX_TOPK_CANDIDATES = default_limit
    return result


def cuda_peaks(fns: dict[str, Callable], device: str) -> dict[str, dict[str, int]]:
    """Peak and retained bytes above what was allocated before each workload (exact)."""
    out = {}
    for name, fn in fns.items():
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        held = fn()
        torch.cuda.synchronize()
        out[name] = {
            "peak_bytes": torch.cuda.max_memory_allocated(device) - before,
            "retained_bytes": torch.cuda.memory_allocated(device) - before,
        }
        del held
    return out


def cpu_peaks(fns: dict[str, Callable]) -> dict[str, dict[str, int]]:
    """Peak and retained bytes of CPU tensor allocations inside each workload, from the profiler's
    memory timeline (exact for tensors; a private torch API, fine for a benchmark)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    out = {}
    for name, fn in fns.items():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as profiler:  # fmt: skip
            held = fn()
        timeline = MemoryProfileTimeline(profiler._memory_profile())
        _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
        totals = [sum(row) for row in sizes] or [0]
        out[name] = {"peak_bytes": int(max(totals)), "retained_bytes": int(totals[-1])}
        del held
    return out


def memory_report(model: LlamaForCausalLM, batches: dict, device: str) -> dict[str, Any]:
    fns = workloads(model, batches)
    names = ["plain", "probe_summed_grad_x_weight", "consistency", "train_plain", "train_recorder"]
    on_cuda = device.startswith("cuda")
    chosen = {name: fns[name] for name in names}
    peaks = cuda_peaks(chosen, device) if on_cuda else cpu_peaks(chosen)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report: dict[str, Any] = {
        "method": "cuda_max_memory_allocated" if on_cuda else "torch_profiler_memory_timeline",
        "param_bytes": param_bytes,
        "peaks": peaks,
    }
    for name, reference in (("probe_summed_grad_x_weight", "plain"), ("consistency", "plain"),
                            ("train_recorder", "train_plain")):  # fmt: skip
        extra = peaks[name]["peak_bytes"] - peaks[reference]["peak_bytes"]
        report[f"extra_peak_over_param_bytes/{name}"] = extra / param_bytes
        kept = peaks[name]["retained_bytes"] - peaks[reference]["retained_bytes"]
        report[f"extra_retained_over_param_bytes/{name}"] = kept / param_bytes
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trace.json"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, batches = build(args.device)
    seconds = time_all(workloads(model, batches), args.device, args.repeats)
    seconds.update(time_top_k(model, args.repeats))
    result = {
        "model": {"arch": "llama", "vocab": VOCAB, "hidden": HIDDEN, "intermediate": INTER,
                  "layers": LAYERS, "heads": HEADS,
                  "n_parameters": sum(p.numel() for p in model.parameters())},
        "workload": {"batch_size": BATCH, "seq_len": LENGTH, "batches_per_task": BATCHES_PER_TASK,
                     "tasks": ["bio", "qa"], "per_example_batches_per_task": 1},
        "seconds": seconds,
        "ratio_to_plain_forward_backward": ratios(seconds),
        "memory": memory_report(model, batches, args.device),
        "device": device_name(args.device),
    }  # fmt: skip
    out = Path(args.out)
    common.write_result(out.stem, result, out.parent)  # atomic, with machine, versions and git revision
    memory = {key: value for key, value in result["memory"].items() if "over" in key}
    print(json.dumps({"ratios": result["ratio_to_plain_forward_backward"], "memory": memory}))


def ratios(seconds: dict[str, float]) -> dict[str, float]:
    return {
        "probe_summed_grad_x_weight": seconds["probe_summed_grad_x_weight"] / seconds["plain"],
        "probe_summed_grad": seconds["probe_summed_grad"] / seconds["plain"],
        "consistency": seconds["consistency"] / seconds["plain"],
        "probe_per_example": seconds["probe_per_example"] / seconds["plain_first_batches"],
        "train_step_with_recorder": seconds["train_recorder"] / seconds["train_plain"],
        "train_step_with_recorder_every_definition":
            seconds["train_recorder_every_definition"] / seconds["train_plain"],
    }


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


if __name__ == "__main__":
    main()
