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

Modules, each importing only those above it: settings (TraceSettings, shared types), sharding
(shard-local helpers and sums), scores (probe scores, TrainingTraceRecorder), selection (top-k,
shared sets), location (heads, neurons, layers, centralization), consistency, ablation, summary (the
whole trace, its flat summary, the heatmap). hook, the glue between a run and the trace, imports the
runner and so is not imported here: use factrecall_bench.trace.hook. Tunable module constants (e.g.
selection.MAX_TOPK_CANDIDATES) are read from their own module, so set them there.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, loaded at first use: a suite is checked without torch
    from factrecall_bench.trace.ablation import ablate, bio_only_masks, own_rows_of, random_masks
    from factrecall_bench.trace.consistency import gradient_consistency
    from factrecall_bench.trace.location import (
        centralization,
        gini,
        layer_of,
        locate,
        normalized_entropy,
        parameter_kind,
    )
    from factrecall_bench.trace.scores import (
        TrainingTraceRecorder,
        limit_examples,
        probe_scores,
        scored_parameters,
    )
    from factrecall_bench.trace.selection import (
        count_true,
        intersect,
        mask_count,
        shared_stats,
        shared_stats_from_masks,
        top_k_masks,
    )
    from factrecall_bench.trace.settings import TASKS, Batch, Evaluate, Masks, Scores, TraceSettings
    from factrecall_bench.trace.sharding import (
        column_counts,
        global_rows,
        local_part,
        row_counts,
        summed,
    )
    from factrecall_bench.trace.summary import flat_summary, heatmap_png, trace_summary

__all__ = [
    "TASKS",
    "Batch",
    "Evaluate",
    "Masks",
    "Scores",
    "TraceSettings",
    "TrainingTraceRecorder",
    "ablate",
    "bio_only_masks",
    "centralization",
    "column_counts",
    "count_true",
    "flat_summary",
    "gini",
    "global_rows",
    "gradient_consistency",
    "heatmap_png",
    "intersect",
    "layer_of",
    "limit_examples",
    "local_part",
    "locate",
    "mask_count",
    "normalized_entropy",
    "own_rows_of",
    "parameter_kind",
    "probe_scores",
    "random_masks",
    "row_counts",
    "scored_parameters",
    "shared_stats",
    "shared_stats_from_masks",
    "summed",
    "top_k_masks",
    "trace_summary",
]

_MODULES = ("settings", "sharding", "selection", "location", "scores", "consistency", "ablation",
            "summary")


def __getattr__(name: str) -> Any:
    """A submodule, or a name of `__all__` from the submodule that defines it (PEP 562)."""
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        for module in _MODULES:
            found = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
            if found is not None:
                return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
