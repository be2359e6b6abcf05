"""Cross-task gradient trace: per-task influence scores, the top-k parameters BIO and QA share,
where they sit (layer, module kind, head, neuron), how centralized they are, BIO/QA gradient
consistency, and ablation of the shared set against random and BIO-only controls (after Zhang et
al. 2025, arXiv 2505.16178).

Under FSDP2 the parameters, their gradients and so the scores and masks are DTensors sharded by
rows: every process scores, selects and ablates only its own rows (shard-local). What needs the
whole model is a sum: counts for the top-k threshold (found by bisection), tie breaking, per-row and
per-column counts for heads and neurons, dot products for the consistency; each is one all-reduce
of a few numbers. Ordinary tensors (one process, or DDP with every process holding the whole
model) take the same code with no communication.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, Shard

from factrecall_bench.distributed import reshard
from factrecall_bench.io import write_bytes_atomic

Batch = Mapping[str, Tensor]
Scores = dict[str, Tensor]
Masks = dict[str, Tensor]
Evaluate = Callable[[nn.Module], Mapping[str, float]]

TASKS = ("bio", "qa")
IGNORE_INDEX = -100
# Above this many per-tensor top-k candidates the global threshold is found by bisection instead.
MAX_TOPK_CANDIDATES = 2**24
TOP_NEURONS_KEPT = 20

_CHOICES = {
    "mode": ("probe", "training"),
    "score": ("grad", "grad_x_weight"),
    "aggregate": ("summed", "per_example"),
    "ranking": ("global", "per_matrix"),
    "bio_loss": ("values", "all"),
}


@dataclass
class TraceSettings:
    mode: Literal["probe", "training"] = "probe"
    """"probe": score the trained model on probe batches after training; "training": use the scores
    a TrainingTraceRecorder accumulated over the optimizer steps of training."""
    score: Literal["grad", "grad_x_weight"] = "grad_x_weight"
    """"grad": |g| per scalar parameter; "grad_x_weight": |g * theta|, the first-order change of the
    loss if that parameter were zeroed."""
    aggregate: Literal["summed", "per_example"] = "summed"
    """Probe mode only. "summed" (default): |gradient of each batch's mean loss|, averaged over the
    batches, one backward per batch. "per_example": |gradient of each example's mean loss|, averaged
    over the examples; one backward per example, so roughly batch-size times slower, and a parameter
    whose per-example gradients cancel still scores high."""
    ranking: Literal["global", "per_matrix"] = "global"
    """"global": one top-k over every scalar parameter of the model; "per_matrix": the same fraction
    inside every parameter tensor (at least one element each), so small tensors are not crowded
    out."""
    top_k: tuple[float, ...] = (0.001, 0.01, 0.05)
    """Fractions of the scored parameters forming each task's top-k set; one analysis per value."""
    probe_examples: int = 256
    """Examples per task used by the probe and the consistency check (the first ones given)."""
    bio_loss: Literal["values", "all"] = "values"
    """Which BIO tokens the caller puts the loss on: "values" (attribute-value tokens) or "all".
    Recorded with the result; this module scores whatever labels it is handed."""
    ablation_random_draws: int = 3
    """Seeded draws of as many random parameters as the shared set holds: the ablation's control."""
    heatmap: bool = False
    """Write a layer x head PNG of the shared set for every k (needs an output folder)."""
    seed: int = 0
    """Seed of the ablation's random draws (draw i uses seed + i)."""

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"trace.{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        self.top_k = tuple(float(f) for f in self.top_k)
        if not self.top_k or any(not 0.0 < f <= 1.0 for f in self.top_k):
            raise ValueError(f"trace.top_k must be fractions in (0, 1]; got {self.top_k!r}")
        if len(set(self.top_k)) != len(self.top_k):
            raise ValueError(f"trace.top_k has a repeated fraction: {self.top_k!r}")
        if self.probe_examples < 1:
            raise ValueError(f"trace.probe_examples must be >= 1; got {self.probe_examples}")
        if self.ablation_random_draws < 0:
            raise ValueError(
                f"trace.ablation_random_draws must be >= 0; got {self.ablation_random_draws}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top_k": list(self.top_k)}


# ---------------------------------------------------------------- shards (FSDP2) and sums


def local_part(tensor: Tensor) -> Tensor:
    """This process's rows of a sharded (DTensor) tensor; an ordinary tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def global_rows(tensor: Tensor) -> slice:
    """The rows of the whole tensor that local_part(tensor) holds. FSDP2 shards dim 0 as
    torch.chunk does: ceil(rows / processes) rows each, the last ones shorter or empty."""
    rows = tensor.shape[0]
    if not isinstance(tensor, DTensor):
        return slice(0, rows)
    if tuple(tensor.placements) != (Shard(0),):
        raise ValueError(f"trace: expected parameters sharded by rows, got {tensor.placements}")
    mesh = tensor.device_mesh
    chunk = -(-rows // mesh.size())
    start = min(mesh.get_local_rank() * chunk, rows)
    stop = min(start + chunk, rows)
    if tensor.to_local().shape[0] != stop - start:
        raise ValueError(f"trace: unexpected shard of {stop - start} rows: "
                         f"{tensor.to_local().shape[0]}")
    return slice(start, stop)


def summed(values: Tensor, like: Tensor) -> Tensor:
    """values summed over the processes that shard `like` (values themselves when not sharded)."""
    if isinstance(like, DTensor):
        values = values.to(local_part(like).device)
        dist.all_reduce(values, group=like.device_mesh.get_group())
    return values


def _any_sharded(tensors: Mapping[str, Tensor]) -> DTensor | None:
    return next((t for t in tensors.values() if isinstance(t, DTensor)), None)


def _total(counts: Sequence[float], tensors: Mapping[str, Tensor]) -> list[float]:
    """Per-process counts over tensors (all sharded alike, or none) summed over the processes."""
    values = torch.tensor(list(counts), dtype=torch.float64)
    like = _any_sharded(tensors)
    return summed(values, like).cpu().tolist() if like is not None else values.tolist()


def _like(local: Tensor, reference: Tensor) -> Tensor:
    """local wrapped as a DTensor with reference's layout (itself when reference is not one)."""
    if not isinstance(reference, DTensor):
        return local
    return DTensor.from_local(local, reference.device_mesh, reference.placements,
                              shape=reference.shape, stride=reference.stride())


def _rows_of_whole(whole: Tensor, like: Tensor) -> Tensor:
    """The rows of a whole (unsharded) tensor that this process holds of `like`."""
    return whole[global_rows(like)] if isinstance(like, DTensor) else whole


def own_rows_of(reference_state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """reference_state (whole tensors, e.g. the weights before training) cut to the rows this
    process holds of each sharded parameter, as DTensors laid out like them: under FSDP2 each
    process keeps 1/N of the ablation's reference instead of a whole copy. Unchanged otherwise."""
    params = scored_parameters(model)
    return {name: _like(_rows_of_whole(value, params[name]).to(local_part(params[name]).device),
                        params[name])
            if isinstance(params.get(name), DTensor) else value
            for name, value in reference_state.items()}


def _reference_rows(reference: Tensor, param: Tensor) -> Tensor:
    """This process's rows of a reference value, given whole or already cut (own_rows_of)."""
    return local_part(reference) if isinstance(reference, DTensor) else _rows_of_whole(reference,
                                                                                      param)


def row_counts(mask: Tensor) -> Tensor:
    """Masked elements per row of the whole tensor (int64, on CPU), from this process's rows."""
    local = local_part(mask).detach()
    counts = torch.zeros(mask.shape[0], dtype=torch.int64, device=local.device)
    counts[global_rows(mask)] = local.reshape(local.shape[0], -1).sum(1)
    return summed(counts, mask).cpu()


def column_counts(mask: Tensor) -> Tensor:
    """Masked elements per column of a whole 2-D tensor (int64, on CPU)."""
    return summed(local_part(mask).detach().sum(0, dtype=torch.int64), mask).cpu()


# ---------------------------------------------------------------- batches and losses


def scored_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters the trace scores: trainable ones, tied weights once (first name). Under
    FSDP2 the model is resharded first, so these are the sharded parameters."""
    reshard(model)
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def limit_examples(batches: Sequence[Batch], n_examples: int) -> list[dict[str, Tensor]]:
    """The first n_examples examples of batches, the last batch cut short if needed."""
    kept: list[dict[str, Tensor]] = []
    left = n_examples
    for batch in batches:
        if left <= 0:
            break
        kept.append({key: value[:left] for key, value in batch.items()})
        left -= batch["input_ids"].shape[0]
    return kept


def _single_examples(batches: Sequence[Batch]) -> Iterator[dict[str, Tensor]]:
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            yield {key: value[i : i + 1] for key, value in batch.items()}


def _batch_loss(model: nn.Module, batch: Batch) -> Tensor | None:
    """The model's mean loss on batch, or None when no token carries loss (labels shift by one)."""
    if not (batch["labels"][:, 1:] != IGNORE_INDEX).any():
        return None
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
    return model(**inputs).loss


@contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no stale gradients while probing; the mode is restored after."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


# ---------------------------------------------------------------- influence scores


def probe_scores(
    model: nn.Module, batches_by_task: Mapping[str, Sequence[Batch]], settings: TraceSettings
) -> dict[str, Scores]:
    """Per task, an fp32 score per scalar parameter: the mean over backward units (batches, or
    examples when aggregate is per_example) of |g|, times |theta| for grad_x_weight. Extra memory:
    one fp32 accumulator per task; no per-example gradient is kept. Leaves .grad cleared."""
    params = scored_parameters(model)
    scores: dict[str, Scores] = {}
    with _probing(model):
        for task, batches in batches_by_task.items():
            probe = limit_examples(batches, settings.probe_examples)
            units = _single_examples(probe) if settings.aggregate == "per_example" else probe
            scores[task] = _mean_abs_grad(model, params, units)
    if settings.score == "grad_x_weight":
        # theta does not move while probing, so sum_b |g_b * theta| = |theta| * sum_b |g_b|.
        for task_scores in scores.values():
            _times_abs_weight(task_scores, params)
    return scores


def _mean_abs_grad(
    model: nn.Module, params: Mapping[str, nn.Parameter], units: Iterator[Batch] | Sequence[Batch]
) -> Scores:
    acc = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    n_units = 0
    for unit in units:
        loss = _batch_loss(model, unit)
        if loss is None:
            continue
        loss.backward()
        for name, p in params.items():
            if p.grad is not None:
                acc[name].add_(p.grad.abs_())  # in place: this gradient is dropped right after
                p.grad = None
        n_units += 1
    for value in acc.values():
        value.div_(max(n_units, 1))
    return acc


@torch.no_grad()
def _times_abs_weight(scores: Scores, params: Mapping[str, nn.Parameter]) -> None:
    for name, value in scores.items():
        value.mul_(params[name].detach().abs())


class TrainingTraceRecorder:
    """Accumulates per-task scores during training. Per micro-batch: before_backward(), backward,
    after_backward(task) (the gradient added since before_backward belongs to task). Per optimizer
    step, after the last backward and before optimizer.step(): on_optimizer_step() adds |g_task|
    (or |g_task * theta|) of the step's summed per-task gradient, so k accumulated micro-batches
    score as one batch of their concatenation. Gradient-scaler or DDP-reduced gradients are taken
    as they stand in .grad. Extra memory (fp32, in parameter counts): a snapshot while a micro-batch
    runs, one step buffer per task, one score per task."""

    def __init__(self, model: nn.Module, settings: TraceSettings) -> None:
        self._params = scored_parameters(model)
        self._times_weight = settings.score == "grad_x_weight"
        self._snapshot: dict[str, Tensor] | None = None
        self._step_grads: dict[str, dict[str, Tensor]] = {}
        self._scores: dict[str, Scores] = {}
        self.steps = 0

    @torch.no_grad()
    def before_backward(self) -> None:
        # After zero_grad(set_to_none=True) there is nothing to copy: a missing entry means zero.
        self._snapshot = {
            name: p.grad.detach().float().clone()
            for name, p in self._params.items()
            if p.grad is not None
        }

    @torch.no_grad()
    def after_backward(self, task: str) -> None:
        if self._snapshot is None:
            raise RuntimeError("after_backward() called without before_backward()")
        buffers = self._step_grads.setdefault(task, {})
        for name, p in self._params.items():
            if p.grad is None:
                continue
            snapshot = self._snapshot.get(name)
            if snapshot is None:
                delta = p.grad.detach().to(torch.float32, copy=True)
            else:  # reuse the snapshot's memory for the delta
                delta = snapshot.neg_().add_(p.grad.detach())
            if name in buffers:
                buffers[name].add_(delta)
            else:
                buffers[name] = delta
        self._snapshot = None

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        if self._snapshot is not None:
            raise RuntimeError("on_optimizer_step() between before_backward() and after_backward()")
        for task, buffers in self._step_grads.items():
            task_scores = self._scores.setdefault(task, {})
            for name, grad in buffers.items():
                step_score = grad.abs_()
                if self._times_weight:
                    step_score.mul_(self._params[name].detach().abs())
                if name in task_scores:
                    task_scores[name].add_(step_score)
                else:
                    task_scores[name] = step_score
        self._step_grads = {}
        self.steps += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The summed scores so far and the step count, flat ("task/parameter"), on CPU: what a
        checkpoint keeps so that a resumed run goes on summing (call between optimizer steps)."""
        if self._step_grads or self._snapshot is not None:
            raise RuntimeError("state_dict() in the middle of an optimizer step")
        state = {f"{task}/{name}": value.detach().cpu().contiguous()
                 for task, task_scores in self._scores.items()
                 for name, value in task_scores.items()}
        state["steps"] = torch.tensor([self.steps], dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        unknown = [key for key in state if key != "steps"
                   and key.partition("/")[2] not in self._params]
        if unknown:
            raise ValueError(f"recorder state for unknown parameters: {unknown[:3]}")
        self._scores = {}
        for key, value in state.items():
            if key == "steps":
                continue
            task, _, name = key.partition("/")
            device = self._params[name].device
            self._scores.setdefault(task, {})[name] = value.to(device=device, dtype=torch.float32)
        self.steps = int(state["steps"][0]) if "steps" in state else 0

    def scores(self) -> dict[str, Scores]:
        """Summed scores so far (live tensors: clone them to keep a snapshot), every scored
        parameter present (zeros where the task never reached it)."""
        return {
            task: {
                name: task_scores.get(name, torch.zeros_like(p, dtype=torch.float32))
                for name, p in self._params.items()
            }
            for task, task_scores in self._scores.items()
        }


# ---------------------------------------------------------------- top-k and shared sets


def top_k_masks(scores: Scores, fraction: float, ranking: str = "global") -> Masks:
    """The top fraction of scalar parameters (k = max(1, round(fraction * n)), over all tensors for
    "global", inside each tensor for "per_matrix"). Exactly k, ties broken by parameter order then
    position; only positive scores qualify, so a set is smaller when fewer than k are positive."""
    if ranking not in _CHOICES["ranking"]:
        raise ValueError(f"ranking must be global or per_matrix; got {ranking!r}")
    scores = {name: value.float() for name, value in scores.items()}
    not_finite = _total([float((~torch.isfinite(local_part(value))).sum())
                         for value in scores.values()], scores)
    bad = [name for name, count in zip(scores, not_finite, strict=True) if count]
    if bad:
        raise ValueError(f"scores of {bad[:3]} are not finite (a diverged model?)")
    if ranking == "per_matrix":
        return {
            name: _top_count_masks({name: value}, _k_of(fraction, value.numel()))[name]
            for name, value in scores.items()
        }
    return _top_count_masks(scores, _k_of(fraction, sum(v.numel() for v in scores.values())))


def _k_of(fraction: float, n: int) -> int:
    return max(1, math.floor(fraction * n + 0.5))


def _top_count_masks(scores: Scores, k: int) -> Masks:
    if k <= 0:
        return {name: torch.zeros_like(value, dtype=torch.bool) for name, value in scores.items()}
    threshold = _kth_largest(scores, k)
    masks = {name: value > threshold for name, value in scores.items()}
    if threshold > 0.0:
        _fill_ties(masks, scores, threshold, k - mask_count(masks))
    return masks


def _kth_largest(scores: Scores, k: int) -> float:
    """The k-th largest value over all tensors, never sorting them all: the k-th of the per-tensor
    top-k candidates, or a bisection when the candidates would be too many (0.0 if k > n)."""
    sizes = [min(k, value.numel()) for value in scores.values()]
    if sum(sizes) < k:
        return 0.0
    if sum(sizes) > MAX_TOPK_CANDIDATES or _any_sharded(scores) is not None:
        return _kth_largest_by_bisection(scores, k)
    candidates = torch.cat(
        [v.flatten().topk(m).values.cpu() for v, m in zip(scores.values(), sizes, strict=True)]
    )
    return float(candidates.kthvalue(candidates.numel() - k + 1).values)


def _kth_largest_by_bisection(scores: Scores, k: int) -> float:
    """Largest t with count(score >= t) >= k, searched over the int32 bit patterns of non-negative
    float32 (ordered as the values are): 31 counting passes, exact, no sort and no big buffer."""
    low, high = 0, 0x7F800000  # +0.0 ... +inf
    while low < high:
        mid = (low + high + 1) // 2
        if _count_at_least(scores, _float_of_bits(mid)) >= k:
            low = mid
        else:
            high = mid - 1
    return _float_of_bits(low)


def _float_of_bits(bits: int) -> float:
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32)[0])


def _count_at_least(scores: Scores, threshold: float) -> int:
    local = sum(int((local_part(value) >= threshold).sum()) for value in scores.values())
    return int(_total([local], scores)[0])


def _fill_ties(masks: Masks, scores: Scores, threshold: float, missing: int) -> None:
    """Add `missing` elements scoring exactly threshold, in parameter order then position; under
    FSDP2 the processes' ties are taken in rank order (the lower ranks' first)."""
    ties = {name: (local_part(value) == threshold).flatten().nonzero().flatten()
            for name, value in scores.items()}
    like = _any_sharded(scores)
    if like is not None:
        mesh = like.device_mesh
        per_process = torch.zeros(mesh.size(), dtype=torch.float64)
        per_process[mesh.get_local_rank()] = sum(t.numel() for t in ties.values())
        earlier = summed(per_process, like).cpu()[:mesh.get_local_rank()].sum()
        missing -= int(earlier)
    for name, positions in ties.items():
        if missing <= 0:
            return
        chosen = positions[:missing]
        local_part(masks[name]).view(-1)[chosen] = True
        missing -= chosen.numel()


def count_true(mask: Tensor) -> int:
    """True elements of one (possibly sharded) mask, over the whole tensor."""
    return int(_total([float(local_part(mask).sum())], {"mask": mask})[0])


def mask_count(masks: Masks) -> int:
    return int(sum(_total([float(local_part(mask).sum()) for mask in masks.values()], masks)))


def intersect(masks_a: Masks, masks_b: Masks) -> Masks:
    return {name: mask & masks_b[name] for name, mask in masks_a.items()}


def shared_stats(
    scores_bio: Scores, scores_qa: Scores, fraction: float, ranking: str = "global"
) -> dict[str, Any]:
    """Overlap of the BIO and QA top-k sets at one fraction (see shared_stats_from_masks)."""
    return shared_stats_from_masks(
        top_k_masks(scores_bio, fraction, ranking),
        top_k_masks(scores_qa, fraction, ranking),
        ranking,
    )


def shared_stats_from_masks(
    masks_bio: Masks, masks_qa: Masks, ranking: str = "global"
) -> dict[str, Any]:
    """count = |bio & qa|; share_of_k = count / max(k_bio, k_qa) (= count / k unless a task has
    fewer than k positive scores); expected_by_chance = k_bio * k_qa / n for global ranking, the
    same summed per tensor for per_matrix; enrichment = count / expected_by_chance."""
    count = mask_count(intersect(masks_bio, masks_qa))
    k_bio, k_qa = mask_count(masks_bio), mask_count(masks_qa)
    n_parameters = sum(mask.numel() for mask in masks_bio.values())
    if ranking == "per_matrix":
        expected = sum(
            count_true(masks_bio[n]) * count_true(masks_qa[n]) / masks_bio[n].numel()
            for n in masks_bio
        )
    else:
        expected = k_bio * k_qa / n_parameters
    return {
        "count": count,
        "k": {"bio": k_bio, "qa": k_qa},
        "n_parameters": n_parameters,
        "share_of_k": _ratio(count, max(k_bio, k_qa)),
        "jaccard": _ratio(count, k_bio + k_qa - count),
        "overlap_over_smaller": _ratio(count, min(k_bio, k_qa)),
        "expected_by_chance": expected,
        "enrichment": _ratio(count, expected),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


# ---------------------------------------------------------------- where the shared set sits

_KIND_PATTERNS = (
    ("embed", re.compile(r"(^|\.)(embed_tokens|embed_in)\.")),
    ("lm_head", re.compile(r"(^|\.)(lm_head|embed_out)\.")),
    ("qkv", re.compile(r"\.query_key_value\.")),
    ("q", re.compile(r"\.q_proj\.")),
    ("k", re.compile(r"\.k_proj\.")),
    ("v", re.compile(r"\.v_proj\.")),
    ("o", re.compile(r"\.(o_proj|attention\.dense)\.")),
    ("mlp_gate", re.compile(r"\.gate_proj\.")),
    ("mlp_up", re.compile(r"\.(up_proj|dense_h_to_4h)\.")),
    ("mlp_down", re.compile(r"\.(down_proj|dense_4h_to_h)\.")),
    ("norm", re.compile(r"norm\.(weight|bias)$")),
)
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def parameter_kind(name: str) -> str:
    """embed, q, k, v, o, qkv, mlp_gate, mlp_up, mlp_down, norm, lm_head, or other (Llama, NeoX)."""
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(name):
            return kind
    return "other"


def layer_of(name: str) -> int | None:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def locate(masks: Masks, model: nn.Module) -> dict[str, Any]:
    """Counts of masked elements by layer, by module kind, per attention head (layer x head: q, k, v
    rows and o columns of that head; under grouped-query attention a k/v head's count is split
    evenly over the query heads sharing it, and kv_heads keeps it whole) and per MLP neuron (layer x
    neuron: gate/up rows and biases, down columns). Head counts and sizes come from model.config."""
    config: Any = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    by_layer = [0] * n_layers
    by_kind: dict[str, int] = {}
    heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    kv_heads = torch.zeros(n_layers, n_kv_heads, dtype=torch.float64)
    neurons = torch.zeros(n_layers, config.intermediate_size, dtype=torch.int64)
    outside_layers = 0
    for name, mask in masks.items():
        kind, layer = parameter_kind(name), layer_of(name)
        rows = row_counts(mask)
        count = int(rows.sum())
        by_kind[kind] = by_kind.get(kind, 0) + count
        if layer is None:
            outside_layers += count
            continue
        by_layer[layer] += count
        columns = column_counts(mask) if mask.dim() == 2 and kind in ("o", "mlp_down") else None
        _add_head_counts(kind, rows, columns, heads[layer], kv_heads[layer])
        _add_neuron_counts(kind, rows, columns, neurons[layer])
    return {
        "by_layer": by_layer,
        "outside_layers": outside_layers,
        "by_kind": by_kind,
        "heads": heads.tolist(),
        "kv_heads": kv_heads.tolist(),
        "neurons": neurons.tolist(),
    }


def _add_head_counts(kind: str, rows: Tensor, columns: Tensor | None, heads: Tensor,
                     kv_heads: Tensor) -> None:
    """rows / columns: the mask's counts per row / per column (columns only for o)."""
    n_heads, n_kv_heads = heads.numel(), kv_heads.numel()
    if kind in ("q", "qkv"):
        # q rows are [head, head_dim]; NeoX's fused rows are [head, (q, k, v), head_dim].
        heads += rows.reshape(n_heads, -1).sum(1).double()
        if kind == "qkv":
            kv_heads += rows.reshape(n_heads, 3, -1)[:, 1:].sum((1, 2)).double()
    elif kind in ("k", "v"):
        per_kv_head = rows.reshape(n_kv_heads, -1).sum(1).double()
        kv_heads += per_kv_head
        # Query head h reads kv head h // (n_heads / n_kv_heads) (transformers' repeat_kv).
        group = n_heads // n_kv_heads
        heads += (per_kv_head / group).repeat_interleave(group)
    elif kind == "o" and columns is not None:
        heads += columns.reshape(n_heads, -1).sum(1).double()


def _add_neuron_counts(kind: str, rows: Tensor, columns: Tensor | None, neurons: Tensor) -> None:
    if kind in ("mlp_gate", "mlp_up"):
        neurons += rows
    elif kind == "mlp_down" and columns is not None:
        neurons += columns


def gini(values: Sequence[float] | Tensor) -> float:
    """Gini coefficient of non-negative counts: 0 when even, (n - 1) / n when one holds all;
    0 for an all-zero input."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten().sort().values
    n, total = x.numel(), float(x.sum())
    if n == 0 or total <= 0.0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2.0 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def normalized_entropy(values: Sequence[float] | Tensor) -> float:
    """Shannon entropy of the counts' distribution over log(n): 1 when even, 0 when one holds all;
    1 for an all-zero input (nothing is concentrated)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    total = float(x.sum())
    if x.numel() < 2 or total <= 0.0:
        return 1.0
    p = x[x > 0] / total
    return float(-(p * p.log()).sum() / math.log(x.numel()))


def centralization(location: Mapping[str, Any], top_heads: int = 5) -> dict[str, float]:
    """Gini and normalized entropy over heads and over neurons, and the share the top heads hold."""
    heads = torch.tensor(location["heads"], dtype=torch.float64).flatten()
    neurons = torch.tensor(location["neurons"], dtype=torch.float64).flatten()
    top = heads.sort(descending=True).values[:top_heads].sum()
    return {
        "gini_heads": gini(heads),
        "entropy_heads": normalized_entropy(heads),
        f"top{top_heads}_heads_share": _ratio(float(top), float(heads.sum())),
        "gini_neurons": gini(neurons),
        "entropy_neurons": normalized_entropy(neurons),
    }


def heatmap_png(head_counts: Sequence[Sequence[float]], path: str | Path, title: str = "") -> Path:
    """A layer x head heatmap of counts, written as PNG with the Agg canvas (no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_layers, n_heads = len(head_counts), len(head_counts[0]) if head_counts else 0
    figure = Figure(figsize=(max(4.0, 0.35 * n_heads + 2.0), max(3.0, 0.3 * n_layers + 1.5)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(head_counts, aspect="auto", cmap="viridis", interpolation="nearest")
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title or "shared parameters per head")
    figure.colorbar(image, ax=axes, label="count")
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------- gradient consistency


def gradient_consistency(
    model: nn.Module, batches_by_task: Mapping[str, Sequence[Batch]], tasks: Sequence[str] = TASKS
) -> dict[str, Any]:
    """Cosine between the two tasks' summed gradients (sum over batches of the mean-loss gradient),
    over the whole model and per layer (outside_layers: embeddings, final norm, head)."""
    params = scored_parameters(model)
    with _probing(model):
        first = _summed_gradient(model, params, batches_by_task[tasks[0]])
        second = _summed_gradient(model, params, batches_by_task[tasks[1]])
    sums: dict[int | None, list[float]] = {}
    for name in params:
        a, b = local_part(first[name]).double(), local_part(second[name]).double()
        group = sums.setdefault(layer_of(name), [0.0, 0.0, 0.0])
        group[0] += float((a * b).sum())
        group[1] += float(a.square().sum())
        group[2] += float(b.square().sum())
    flat = _total([value for group in sums.values() for value in group], first)
    sums = {key: flat[3 * i:3 * i + 3] for i, key in enumerate(sums)}
    total = [sum(values[i] for values in sums.values()) for i in range(3)]
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", 0)
    return {
        "cosine": _cosine(*total),
        "per_layer": [_cosine(*sums.get(layer, [0.0, 0.0, 0.0])) for layer in range(n_layers)],
        "outside_layers": _cosine(*sums.get(None, [0.0, 0.0, 0.0])),
        f"norm_{tasks[0]}": math.sqrt(total[1]),
        f"norm_{tasks[1]}": math.sqrt(total[2]),
    }


def _summed_gradient(
    model: nn.Module, params: Mapping[str, nn.Parameter], batches: Sequence[Batch]
) -> Scores:
    for batch in batches:
        loss = _batch_loss(model, batch)
        if loss is not None:
            loss.backward()  # backward adds into .grad: the sum over batches
    summed = {
        name: p.grad.detach().float()
        if p.grad is not None
        else torch.zeros_like(p, dtype=torch.float32)
        for name, p in params.items()
    }
    model.zero_grad(set_to_none=True)  # the summed tensors stay alive, detached from the params
    return summed


def _cosine(dot: float, aa: float, bb: float) -> float:
    return dot / math.sqrt(aa * bb) if aa > 0.0 and bb > 0.0 else 0.0


# ---------------------------------------------------------------- ablation


def ablate(
    model: nn.Module,
    masks: Masks,
    reference_state: Mapping[str, Tensor],
    evaluate: Evaluate,
    n_random_draws: int = 3,
    seed: int = 0,
    *,
    bio_only_masks: Masks | None = None,
    baseline: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Reset the masked elements to reference_state (the weights before fact training), evaluate,
    restore; the same for n_random_draws seeded draws of as many random elements (over the masked
    tensors) and, if given, for the BIO-only control. drop = baseline - ablated, per metric. The
    model's weights are restored exactly, also when evaluate raises. Under FSDP2 evaluate must
    leave the model sharded, as evaluate.py's scorers do."""
    params = scored_parameters(model)
    missing = [name for name in masks if name not in reference_state or name not in params]
    if missing:
        raise ValueError(f"ablation: no parameter or reference value for {missing[:3]}")
    base = dict(baseline) if baseline is not None else dict(evaluate(model))
    count = mask_count(masks)
    shared = _evaluate_reset(model, params, masks, reference_state, evaluate)
    draws = [
        _evaluate_reset(
            model, params, random_masks(masks, count, seed + i), reference_state, evaluate
        )
        for i in range(n_random_draws)
    ]
    result: dict[str, Any] = {"count": count, "baseline": base, "shared": shared}
    result["drop"] = _drops(base, shared)
    result["random_drop_draws"] = [_drops(base, draw) for draw in draws]
    result["random_drop_mean"], result["random_drop_sd"] = _mean_sd(result["random_drop_draws"])
    if bio_only_masks is not None:
        bio_only = _evaluate_reset(model, params, bio_only_masks, reference_state, evaluate)
        result["bio_only"], result["bio_only_drop"] = bio_only, _drops(base, bio_only)
    return result


def random_masks(like: Masks, count: int, seed: int) -> Masks:
    """count elements drawn uniformly without replacement over all tensors of like (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    noise = {  # drawn whole on every process (the same draw), each keeping its own rows
        name: _like(_rows_of_whole(torch.rand(mask.shape, generator=generator).add_(1e-6), mask)
                    .to(local_part(mask).device), mask)
        for name, mask in like.items()
    }
    return _top_count_masks(noise, count)


def bio_only_masks(scores_bio: Scores, shared: Masks, ranking: str = "global") -> Masks:
    """The highest-scoring BIO elements outside the shared set, as many as it holds (per tensor
    under per_matrix ranking): the control that tells shared from merely BIO-important."""
    outside = {
        name: value.float().masked_fill(shared[name], 0.0) for name, value in scores_bio.items()
    }
    if ranking == "per_matrix":
        return {
            name: _top_count_masks({name: value}, count_true(shared[name]))[name]
            for name, value in outside.items()
        }
    return _top_count_masks(outside, mask_count(shared))


def _evaluate_reset(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    masks: Masks,
    reference_state: Mapping[str, Tensor],
    evaluate: Evaluate,
) -> dict[str, float]:
    was_training = model.training
    saved = _reset_to_reference(params, masks, reference_state)
    try:
        return {metric: float(value) for metric, value in evaluate(model).items()}
    finally:
        _restore(params, masks, saved)
        model.train(was_training)


@torch.no_grad()
def _reset_to_reference(
    params: Mapping[str, nn.Parameter], masks: Masks, reference_state: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    saved = {}
    for name, mask in masks.items():
        p = local_part(params[name])
        where = local_part(mask).to(p.device)
        reference = _reference_rows(reference_state[name], params[name])
        saved[name] = p[where].clone()
        p[where] = reference.to(device=p.device, dtype=p.dtype)[where]
    return saved


@torch.no_grad()
def _restore(params: Mapping[str, nn.Parameter], masks: Masks, saved: Mapping[str, Tensor]) -> None:
    for name, values in saved.items():
        p = local_part(params[name])
        p[local_part(masks[name]).to(p.device)] = values


def _drops(baseline: Mapping[str, float], ablated: Mapping[str, float]) -> dict[str, float]:
    return {metric: baseline[metric] - ablated[metric] for metric in baseline if metric in ablated}


def _mean_sd(draws: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric mean and sample sd (0.0 with one draw) over the draws."""
    if not draws:
        return {}, {}
    means = {m: sum(d[m] for d in draws) / len(draws) for m in draws[0]}
    sds = {
        m: math.sqrt(sum((d[m] - means[m]) ** 2 for d in draws) / (len(draws) - 1))
        if len(draws) > 1
        else 0.0
        for m in draws[0]
    }
    return means, sds


# ---------------------------------------------------------------- the whole trace


def trace_summary(
    model: nn.Module,
    batches_by_task: Mapping[str, Sequence[Batch]],
    settings: TraceSettings,
    *,
    training_scores: Mapping[str, Scores] | None = None,
    reference_state: Mapping[str, Tensor] | None = None,
    evaluate: Evaluate | None = None,
    heatmap_dir: str | Path | None = None,
    agree_on_scores: Callable[[dict[str, Scores]], dict[str, Scores]] | None = None,
) -> dict[str, Any]:
    """The trace of a trained model as a JSON-able dict for result["trace"]: settings, per_k (shared
    stats, location, centralization), consistency, ablation (when reference_state and evaluate are
    given; at every k), and summary, a flat dict of floats. In training mode the scores come from
    training_scores (TrainingTraceRecorder.scores()); the probe batches still give consistency.
    agree_on_scores, when several processes trace together, makes their scores one process's, so
    that all of them ablate the same parameters."""
    batches = {
        task: limit_examples(batches_by_task[task], settings.probe_examples) for task in TASKS
    }
    scores = _trace_scores(model, batches, settings, training_scores)
    if agree_on_scores is not None:
        scores = agree_on_scores(scores)
    per_k: dict[str, Any] = {}
    shared_by_k: dict[str, Masks] = {}
    for fraction in settings.top_k:
        key = f"{fraction:g}"
        per_k[key], shared_by_k[key] = _trace_at_k(model, scores, fraction, settings, heatmap_dir)
    result: dict[str, Any] = {
        "settings": settings.to_dict(),
        "n_parameters": sum(value.numel() for value in scores["bio"].values()),
        "per_k": per_k,
        "consistency": gradient_consistency(model, batches),
        "ablation": None,
    }
    if reference_state is not None and evaluate is not None:
        result["ablation"] = _ablation_by_k(
            model, scores["bio"], shared_by_k, settings, reference_state, evaluate
        )
    result["summary"] = flat_summary(result)
    return result


def _ablation_by_k(
    model: nn.Module,
    scores_bio: Scores,
    shared_by_k: Mapping[str, Masks],
    settings: TraceSettings,
    reference_state: Mapping[str, Tensor],
    evaluate: Evaluate,
) -> dict[str, Any]:
    baseline = {metric: float(value) for metric, value in evaluate(model).items()}
    return {
        key: ablate(
            model,
            shared,
            reference_state,
            evaluate,
            settings.ablation_random_draws,
            settings.seed,
            bio_only_masks=bio_only_masks(scores_bio, shared, settings.ranking),
            baseline=baseline,
        )
        for key, shared in shared_by_k.items()
    }


def _trace_scores(
    model: nn.Module,
    batches: Mapping[str, Sequence[Batch]],
    settings: TraceSettings,
    training_scores: Mapping[str, Scores] | None,
) -> dict[str, Scores]:
    if settings.mode == "probe":
        return probe_scores(model, batches, settings)
    if training_scores is None or any(task not in training_scores for task in TASKS):
        raise ValueError("trace mode 'training' needs the recorder's scores for 'bio' and 'qa'")
    return {task: dict(training_scores[task]) for task in TASKS}


def _trace_at_k(
    model: nn.Module,
    scores: Mapping[str, Scores],
    fraction: float,
    settings: TraceSettings,
    heatmap_dir: str | Path | None,
) -> tuple[dict[str, Any], Masks]:
    masks_bio = top_k_masks(scores["bio"], fraction, settings.ranking)
    masks_qa = top_k_masks(scores["qa"], fraction, settings.ranking)
    shared = intersect(masks_bio, masks_qa)
    location = locate(shared, model)
    entry: dict[str, Any] = {
        "shared": shared_stats_from_masks(masks_bio, masks_qa, settings.ranking),
        "location": _compact_location(location),
        "centralization": centralization(location),
        "by_kind_bio": locate(masks_bio, model)["by_kind"],
        "by_kind_qa": locate(masks_qa, model)["by_kind"],
        "heatmap": None,
    }
    if settings.heatmap and heatmap_dir is not None:
        path = Path(heatmap_dir) / f"trace-heads@{fraction:g}.png"
        entry["heatmap"] = str(
            heatmap_png(location["heads"], path, f"shared heads, k={fraction:g}")
        )
    return entry, shared


def _compact_location(location: Mapping[str, Any]) -> dict[str, Any]:
    """location with the layer x neuron matrix replaced by touched neurons per layer and the top
    neurons as [layer, neuron, count] (the full matrix is too big for result.json at scale)."""
    neurons = torch.tensor(location["neurons"], dtype=torch.int64)
    compact = {key: value for key, value in location.items() if key != "neurons"}
    compact["neurons_touched_by_layer"] = (neurons > 0).sum(1).tolist()
    counts, flat = neurons.flatten().topk(min(TOP_NEURONS_KEPT, neurons.numel()))
    width = max(neurons.shape[1], 1)
    compact["top_neurons"] = [
        [int(i) // width, int(i) % width, int(c)]
        for c, i in zip(counts, flat, strict=True)
        if c > 0
    ]
    return compact


def flat_summary(trace: Mapping[str, Any]) -> dict[str, float]:
    """The flat float dict for result["trace"]["summary"] and the trace event: per k
    (name@k) shared-set stats, centralization and ablation drops, plus cosine_bio_qa."""
    summary = {"cosine_bio_qa": float(trace["consistency"]["cosine"])}
    for key, entry in trace["per_k"].items():
        stats = entry["shared"]
        summary[f"shared_count@{key}"] = float(stats["count"])
        summary[f"k_bio@{key}"], summary[f"k_qa@{key}"] = map(float, stats["k"].values())
        for name in (
            "share_of_k",
            "jaccard",
            "overlap_over_smaller",
            "expected_by_chance",
            "enrichment",
        ):
            summary[f"{name}@{key}"] = float(stats[name])
        for name, value in entry["centralization"].items():
            summary[f"{name}@{key}"] = float(value)
    for key, ablation in (trace["ablation"] or {}).items():
        summary.update(_ablation_summary(key, ablation))
    return summary


def _ablation_summary(key: str, ablation: Mapping[str, Any]) -> dict[str, float]:
    summary = {f"ablation_count@{key}": float(ablation["count"])}
    for metric, drop in ablation["drop"].items():
        summary[f"ablation_{metric}_drop@{key}"] = drop
        if metric in ablation["random_drop_mean"]:
            summary[f"ablation_random_{metric}_drop@{key}"] = ablation["random_drop_mean"][metric]
            summary[f"ablation_random_{metric}_drop_sd@{key}"] = ablation["random_drop_sd"][metric]
        if "bio_only_drop" in ablation:
            summary[f"ablation_bio_only_{metric}_drop@{key}"] = ablation["bio_only_drop"][metric]
    return summary
