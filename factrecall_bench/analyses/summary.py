"""The analyses' per-run scalars (what claims name as "analyses.<key>", what report.md and the TUI
show) and the paper's stated direction for each. Pure functions of result dicts: no torch.

Keys are "<analysis>_<quantity>@<where>": representation at p_train / p_test, reads at bio / qa_id
/ qa_ood, grafting at a method (and, for the shared set, "<method>/<k>").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

REPRESENTATION_GROUPS = ("p_train", "p_test")
READS_FORMATS = ("bio", "qa_id", "qa_ood")

PAPER_DIRECTIONS = {
    "representation_cosine": "higher under mixed (v2: format-invariant retrieval)",
    "representation_cosine_gap": "higher under mixed (v2: format-invariant retrieval)",
    "representation_cka": "higher under mixed (v2: format-invariant retrieval)",
    "reads_subject_relation@bio": "higher under mixed (v2: mixed reads subject-relation tokens, "
                                  "two-stage the full context)",
    "reads_subject_relation": "not stated (the paper speaks of the storage format)",
    "grafting_fraction": "not stated (v1: a small set localizes recall)",
    "grafting_id_recovered": "at least the target share, by construction",
    "grafting_random_id_recovered": "far below the grafted set's (chance control)",
    "grafting_shared_enrichment": "above 1 (v1: shared parameters are a large part of the set)",
}
"""The paper's direction beside each quantity (a key with its "@where" overrides the quantity)."""


def paper_direction(key: str) -> str:
    """What the paper says about a summary key, or "not stated"."""
    quantity = key.split("@", 1)[0]
    return PAPER_DIRECTIONS.get(key, PAPER_DIRECTIONS.get(quantity, "not stated"))


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def representation_scalars(result: Mapping[str, Any]) -> dict[str, float | None]:
    """Per group: matched cosine, cosine minus the mismatched (another person's) cosine, and CKA,
    each the mean over the blocks' outputs (layers 1..L; layer 0, the embeddings, left out)."""
    scalars: dict[str, float | None] = {}
    for group in REPRESENTATION_GROUPS:
        entry = (result.get("groups") or {}).get(group) or {}
        if not entry.get("n_pairs"):
            continue
        cosine, other = entry["cosine"][1:], entry["cosine_mismatched"][1:]
        scalars[f"representation_cosine@{group}"] = _mean(cosine)
        scalars[f"representation_cosine_gap@{group}"] = _mean(
            [a - b for a, b in zip(cosine, other, strict=True)])
        scalars[f"representation_cka@{group}"] = _mean(entry["cka"][1:])
    return scalars


def reads_scalars(result: Mapping[str, Any]) -> dict[str, float | None]:
    """Per format: the share of attribution on subject and relation tokens together (1 - the
    share on the rest of the context), and on the subject alone."""
    scalars: dict[str, float | None] = {}
    for name in READS_FORMATS:
        share = ((result.get("formats") or {}).get(name) or {}).get("share") or {}
        if share.get("subject") is None or share.get("relation") is None:
            continue
        scalars[f"reads_subject_relation@{name}"] = share["subject"] + share["relation"]
        scalars[f"reads_subject@{name}"] = share["subject"]
    return scalars


def grafting_scalars(result: Mapping[str, Any]) -> dict[str, float | None]:
    """Per method whose search met its target: the set's fraction of the parameters, the ID exact
    match it recovers, what random sets of its size recover (mean), and per trace k how
    over-represented the shared set is in it (overlap / the overlap chance predicts)."""
    scalars: dict[str, float | None] = {}
    for method, entry in (result.get("methods") or {}).items():
        if entry.get("k") is None:
            continue
        scalars[f"grafting_fraction@{method}"] = entry["fraction"]
        scalars[f"grafting_id_recovered@{method}"] = entry["recovered"].get("id_exact_match")
        scalars[f"grafting_random_id_recovered@{method}"] = _mean(
            [draw["recovered"].get("id_exact_match") for draw in entry.get("random") or []])
        for k, overlap in (entry.get("overlap_with_shared") or {}).items():
            scalars[f"grafting_shared_enrichment@{method}/{k}"] = overlap.get("enrichment")
    return scalars


SCALARS = {"grafting": grafting_scalars, "representation": representation_scalars,
           "reads": reads_scalars}


def analyses_summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """The per-run scalars of every analysis in `results` (an analysis name -> its result)."""
    summary: dict[str, float | None] = {}
    for name, result in results.items():
        summary.update(SCALARS[name](result))
    return summary


def analyses_rows(grouped: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per group of runs (e.g. "mixed / tiny-llama") and summary key: mean and sample sd over the
    runs (seeds) that have a value, and how many do; groups without analyses are left out."""
    rows = []
    for group, results in grouped.items():
        summaries = [((r.get("analyses") or {}).get("summary") or {}) for r in results]
        keys = dict.fromkeys(key for summary in summaries for key in summary)
        for key in keys:
            values = [s[key] for s in summaries
                      if isinstance(s.get(key), int | float) and math.isfinite(s[key])]
            if values:
                rows.append({"group": group, "key": key, "n": len(values), **_mean_sd(values)})
    return rows


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    variance = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 \
        else 0.0
    return {"mean": mean, "sd": math.sqrt(variance)}


def analyses_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """report.md's "Mechanism analyses": one row per summary key, the groups side by side
    (mean ± sd over seeds, n), the paper's stated direction beside each."""
    if not rows:
        return []
    groups = list(dict.fromkeys(row["group"] for row in rows))
    cells = {(row["key"], row["group"]): row for row in rows}
    lines = ["", "## Mechanism analyses", "",
             "Per run, at the end of training ([trace.analyses]; docs/analyses.md): mean ± sd over "
             "seeds (n runs). representation_*: storage (biography) vs query (question) hidden "
             "states at the position before the value, mean over the blocks' outputs "
             "(cosine_gap: minus another person's question); reads_*: share of the value's "
             "attribution (occlusion) on subject and relation tokens; grafting_*: the smallest "
             "grafted set meeting the target.", "",
             "| quantity | " + " | ".join(groups) + " | paper's direction |",
             "|---|" + "---|" * (len(groups) + 1)]
    for key in dict.fromkeys(row["key"] for row in rows):
        shown = [_cell(cells.get((key, group))) for group in groups]
        lines.append(f"| {key} | " + " | ".join(shown) + f" | {paper_direction(key)} |")
    return lines


def _cell(row: Mapping[str, Any] | None) -> str:
    return "-" if row is None else f"{row['mean']:.3f} ± {row['sd']:.3f} ({row['n']})"
