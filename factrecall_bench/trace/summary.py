"""The whole trace of a trained model: scores, per k the shared set, its location and
centralization, consistency and ablation, as the JSON-able dict stored in result["trace"], with its
flat summary of floats and the optional layer x head heatmap.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from factrecall_bench.io import write_bytes_atomic
from factrecall_bench.trace.ablation import ablate, bio_only_masks
from factrecall_bench.trace.consistency import gradient_consistency
from factrecall_bench.trace.location import centralization, locate
from factrecall_bench.trace.scores import limit_examples, probe_scores_by_score
from factrecall_bench.trace.selection import intersect, shared_stats_from_masks, top_k_masks
from factrecall_bench.trace.settings import (
    TASKS,
    Batch,
    Evaluate,
    Masks,
    Scores,
    TraceDefinition,
    TraceSettings,
)

TOP_NEURONS_KEPT = 20


def trace_summary(
    model: nn.Module,
    batches_by_task: Mapping[str, Sequence[Batch]],
    settings: TraceSettings,
    *,
    training_scores: Mapping[str, Scores] | None = None,
    training_scores_by_score: Mapping[str, Mapping[str, Scores]] | None = None,
    reference_state: Mapping[str, Tensor] | None = None,
    evaluate: Evaluate | None = None,
    heatmap_dir: str | Path | None = None,
    agree_on_scores: Callable[[dict[str, Scores]], dict[str, Scores]] | None = None,
) -> dict[str, Any]:
    """The trace of a trained model as a JSON-able dict for result["trace"]: settings, per_k (shared
    stats, location, centralization), consistency, ablation (when reference_state and evaluate are
    given; at every k), summary (a flat dict of floats), definition (the main definition's name)
    and definitions (per definition, its shared stats, centralization and flat summary). In
    training mode the scores come from training_scores_by_score (TrainingTraceRecorder.
    scores_by_score()) or, for the settings' score alone, training_scores (.scores()); the probe
    batches still give consistency.
    agree_on_scores, when several processes trace together, makes their scores one process's, so
    that all of them ablate the same parameters."""
    batches = {
        task: limit_examples(batches_by_task[task], settings.probe_examples) for task in TASKS
    }
    by_score = dict(training_scores_by_score or {})
    if training_scores is not None:
        by_score.setdefault(settings.score, training_scores)
    scores_by_definition = _scores_by_definition(model, batches, settings, by_score)
    main = settings.main_definition
    scores = scores_by_definition[main.name]
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
        "definition": main.name,
        "definitions": {main.name: _definition_entry(main, per_k)},
    }
    for definition in settings.all_definitions()[1:]:
        definition_scores = scores_by_definition[definition.name]
        if agree_on_scores is not None:
            definition_scores = agree_on_scores(definition_scores)
        result["definitions"][definition.name] = _definition_entry(
            definition, _per_k_of_definition(model, definition_scores, definition, settings))
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


def _scores_by_definition(
    model: nn.Module,
    batches: Mapping[str, Sequence[Batch]],
    settings: TraceSettings,
    training_by_score: Mapping[str, Mapping[str, Scores]],
) -> dict[str, dict[str, Scores]]:
    """Per definition name, the per-task scores: probe ones from one set of backward passes
    after training, training ones from the recorder's sums."""
    definitions = settings.all_definitions()
    probe_names = tuple(dict.fromkeys(d.score for d in definitions if d.mode == "probe"))
    probe = probe_scores_by_score(model, batches, settings, probe_names) if probe_names else {}
    by_definition = {}
    for definition in definitions:
        if definition.mode == "probe":
            by_definition[definition.name] = probe[definition.score]
        else:
            by_definition[definition.name] = _training_scores(definition, training_by_score)
    return by_definition


def _training_scores(definition: TraceDefinition,
                     training_by_score: Mapping[str, Mapping[str, Scores]]) -> dict[str, Scores]:
    scores = training_by_score.get(definition.score)
    if scores is None or any(task not in scores for task in TASKS):
        raise ValueError(f"trace definition {definition.name} needs the recorder's "
                         f"{definition.score!r} scores for 'bio' and 'qa'")
    return {task: dict(scores[task]) for task in TASKS}


def _per_k_of_definition(model: nn.Module, scores: Mapping[str, Scores],
                         definition: TraceDefinition, settings: TraceSettings) -> dict[str, Any]:
    """Per k, the shared set's stats and centralization under one definition."""
    per_k = {}
    for fraction in settings.top_k:
        masks_bio = top_k_masks(scores["bio"], fraction, definition.ranking)
        masks_qa = top_k_masks(scores["qa"], fraction, definition.ranking)
        location = locate(intersect(masks_bio, masks_qa), model)
        per_k[f"{fraction:g}"] = {
            "shared": shared_stats_from_masks(masks_bio, masks_qa, definition.ranking),
            "centralization": centralization(location),
        }
    return per_k


def _definition_entry(definition: TraceDefinition, per_k: Mapping[str, Any]) -> dict[str, Any]:
    """result["trace"]["definitions"][name]: the definition, its per-k shared stats and
    centralization, and their flat summary (the keys claims name, e.g. shared_count@0.01)."""
    return {
        "mode": definition.mode,
        "score": definition.score,
        "ranking": definition.ranking,
        "per_k": {key: {"shared": entry["shared"], "centralization": entry["centralization"]}
                  for key, entry in per_k.items()},
        "summary": _per_k_summary(per_k),
    }


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
    summary = {"cosine_bio_qa": float(trace["consistency"]["cosine"]),
               **_per_k_summary(trace["per_k"])}
    for key, ablation in (trace["ablation"] or {}).items():
        summary.update(_ablation_summary(key, ablation))
    return summary


def _per_k_summary(per_k: Mapping[str, Any]) -> dict[str, float]:
    """Per k (name@k): the shared set's stats and its centralization."""
    summary: dict[str, float] = {}
    for key, entry in per_k.items():
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
            if value is not None:  # no head (neuron) in the set: nothing to measure
                summary[f"{name}@{key}"] = float(value)
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
