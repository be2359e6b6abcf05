"""A run's cross-task gradient trace (result["trace"], docs/formats.md "result.json: trace") as
labelled tables: the shared parameters against chance, where they sit, how centralized they are,
the ablation beside its controls, and the shared count under every trace definition. Pure: it
reads what the trace wrote, trusting no value's type, and decides nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from factrecall_bench.tui.format import DASH, METRIC_LABELS, fmt_count, fmt_num, metric_label
from factrecall_bench.tui.tables import LabelledTable
from factrecall_bench.tui.values import as_float, grid

KINDS = ("q", "k", "v", "o", "mlp_gate", "mlp_up", "mlp_down", "norm", "embed", "lm_head")
"""Module kinds in the order of a layer (factrecall_bench.trace's names)."""
HEADS_PER_TABLE = 12
"""A layer x head table is split into tables of this many heads, so it fits 80 columns."""
CENTRALIZATION = (("gini_heads", "Gini heads"), ("entropy_heads", "entropy heads"),
                  ("top5_heads_share", "top-5 heads"), ("gini_neurons", "Gini neurons"),
                  ("entropy_neurons", "entropy neurons"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _k_order(k: str) -> tuple[float, str]:
    number = _to_number(k)
    return (number if number is not None else float("inf"), k)


def _to_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def per_k(entries: Any) -> dict[str, dict[str, Any]]:
    """`per_k`'s entries that are tables, smallest k first."""
    table = _dict(entries)
    return {str(k): table[k] for k in sorted(table, key=lambda k: _k_order(str(k)))
            if isinstance(table[k], dict)}


def _num(table: Mapping[str, Any], key: str, digits: int = 3) -> str:
    return fmt_num(as_float(table.get(key)), digits)


def _count(table: Mapping[str, Any], key: str) -> str:
    return fmt_count(as_float(table.get(key)))


def shared_table(by_k: Mapping[str, dict[str, Any]]) -> LabelledTable:
    rows = []
    for k, entry in by_k.items():
        shared = _dict(entry.get("shared"))
        sizes = _dict(shared.get("k"))
        enrichment = as_float(shared.get("enrichment"))
        rows.append((k, _count(shared, "count"), _count(sizes, "bio"), _count(sizes, "qa"),
                     _num(shared, "share_of_k"), _num(shared, "jaccard"),
                     _num(shared, "expected_by_chance", 1),
                     DASH if enrichment is None else f"{enrichment:.1f}x"))
    return LabelledTable(
        "shared parameters (top k for BIO and for QA) against chance",
        ("k", "shared", "BIO k", "QA k", "share of k", "Jaccard", "by chance", "enrichment"),
        tuple(rows), "by chance: the overlap of two random sets of those sizes")


def kind_table(by_k: Mapping[str, dict[str, Any]]) -> LabelledTable:
    counts = {k: _dict(_dict(entry.get("location")).get("by_kind")) for k, entry in by_k.items()}
    seen = {kind for by_kind in counts.values() for kind in by_kind}
    kinds = [kind for kind in KINDS if kind in seen] + sorted(seen - set(KINDS))
    rows = tuple((kind, *(_count(by_kind, kind) for by_kind in counts.values())) for kind in kinds)
    return LabelledTable("where they sit: per module kind", ("module kind", *_k_columns(by_k)),
                         rows)


def _k_columns(by_k: Mapping[str, Any], what: str = "") -> tuple[str, ...]:
    return tuple(f"{what}k={k}".strip() for k in by_k)


def layer_table(by_k: Mapping[str, dict[str, Any]]) -> LabelledTable:
    locations = [_dict(entry.get("location")) for entry in by_k.values()]
    shared = [_list(location.get("by_layer")) for location in locations]
    neurons = [_list(location.get("neurons_touched_by_layer")) for location in locations]
    layers = max((len(column) for column in shared + neurons), default=0)
    rows = [(f"L{layer}", *(_at(column, layer) for column in shared),
             *(_at(column, layer) for column in neurons)) for layer in range(layers)]
    rows.append(("outside layers", *(_count(loc, "outside_layers") for loc in locations),
                 *(DASH for _ in locations)))
    return LabelledTable(
        "where they sit: per layer", ("layer", *_k_columns(by_k), *_k_columns(by_k, "neurons ")),
        tuple(rows), "neurons: MLP neurons with a shared parameter")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _at(column: list[Any], index: int) -> str:
    return fmt_count(as_float(column[index])) if index < len(column) else DASH


def head_tables(k: str, heads: Any, what: str = "query/output heads") -> list[LabelledTable]:
    """The layer x head matrix of shared counts, in tables of HEADS_PER_TABLE heads."""
    matrix = grid(heads)
    if matrix is None:
        return []
    width = max(len(row) for row in matrix)
    tables = []
    for first in range(0, width, HEADS_PER_TABLE):
        last = min(width, first + HEADS_PER_TABLE)
        span = "" if width <= HEADS_PER_TABLE else f", heads {first}-{last - 1}"
        rows = tuple((f"L{layer}", *(_at(row, h) for h in range(first, last)))
                     for layer, row in enumerate(matrix))
        tables.append(LabelledTable(f"shared per {what}, layer x head (k={k}{span})",
                                    ("layer", *(f"h{h}" for h in range(first, last))), rows))
    return tables


def location_head_tables(k: str, location: Mapping[str, Any]) -> list[LabelledTable]:
    """Query/output heads, and key/value heads where they differ (grouped-query attention)."""
    tables = head_tables(k, location.get("heads"))
    if grid(location.get("kv_heads")) not in (None, grid(location.get("heads"))):
        tables += head_tables(k, location.get("kv_heads"), "key/value heads")
    return tables


def centralization_table(by_k: Mapping[str, dict[str, Any]]) -> LabelledTable:
    rows = []
    headless = []
    for k, entry in by_k.items():
        values = _dict(entry.get("centralization"))
        rows.append((k, *(_num(values, key, 2) for key, _ in CENTRALIZATION)))
        heads = grid(_dict(entry.get("location")).get("heads"))
        if heads is not None and not any(v for row in heads for v in row):
            headless.append(k)
    note = "Gini 1: held by few; normalized entropy 1: spread evenly"
    if headless:
        note += f"; no head holds a shared parameter at k={', '.join(headless)} (Gini 0 is none)"
    return LabelledTable("how centralized they are", ("k", *(label for _, label in CENTRALIZATION)),
                         tuple(rows), note)


def ablation_table(k: str, ablation: Mapping[str, Any]) -> LabelledTable:
    """Recall before and after resetting the shared set, beside the random and BIO-only controls."""
    before, after, drop, random_mean, random_sd, bio_only = (_dict(ablation.get(key)) for key in (
        "baseline", "shared", "drop", "random_drop_mean", "random_drop_sd", "bio_only_drop"))
    rows = tuple(
        (metric_label(metric), _num(before, metric, 2), _num(after, metric, 2),
         _signed(drop, metric), _mean_sd(random_mean, random_sd, metric), _signed(bio_only, metric))
        for metric in _metrics(before, after, drop, random_mean, bio_only))
    draws = len(_list(ablation.get("random_drop_draws")))
    return LabelledTable(
        f"ablation (k={k}): {_count(ablation, 'count')} shared parameters reset to before fact "
        "training",
        ("recall", "before", "after", "drop", "random drop", "BIO-only drop"), rows,
        f"random: {draws} random sets of as many parameters (mean ± sd); BIO-only: as many of "
        "the top BIO-only parameters")


def _metrics(*tables: Mapping[str, Any]) -> list[str]:
    """The metrics the tables name: the known ones in METRIC_LABELS's order, then the others."""
    named = {metric for table in tables for metric in table}
    return [m for m in METRIC_LABELS if m in named] + sorted(named - set(METRIC_LABELS))


def _signed(table: Mapping[str, Any], key: str) -> str:
    value = as_float(table.get(key))
    return DASH if value is None else f"{value:+.2f}"


def _mean_sd(means: Mapping[str, Any], sds: Mapping[str, Any], key: str) -> str:
    mean, sd = as_float(means.get(key)), as_float(sds.get(key))
    if mean is None:
        return DASH
    return f"{mean:+.2f}" if sd is None else f"{mean:+.2f} ± {sd:.2f}"


def consistency_table(consistency: Mapping[str, Any]) -> LabelledTable:
    rows = [("whole model", _num(consistency, "cosine"))]
    rows += [(f"L{layer}", fmt_num(as_float(value)))
             for layer, value in enumerate(_list(consistency.get("per_layer")))]
    if "outside_layers" in consistency:
        rows.append(("outside layers", _num(consistency, "outside_layers")))
    return LabelledTable("cosine of the BIO and QA probe gradients", ("where", "cosine"),
                         tuple(rows))


def definitions_table(trace: Mapping[str, Any]) -> LabelledTable | None:
    """Shared count and Gini over heads per k under every trace definition, the main one first;
    None for a trace written before definitions existed."""
    definitions = {str(name): entry for name, entry in _dict(trace.get("definitions")).items()
                   if isinstance(entry, dict)}
    if not definitions:
        return None
    main = str(trace.get("definition") or "")
    rows = []
    for name in sorted(definitions, key=lambda name: name != main):
        label = f"{name} (main)" if name == main else name
        for index, (k, entry) in enumerate(per_k(definitions[name].get("per_k")).items()):
            rows.append((label if index == 0 else "", k,
                         _count(_dict(entry.get("shared")), "count"),
                         _num(_dict(entry.get("centralization")), "gini_heads", 2)))
    return LabelledTable("shared count / Gini heads per trace definition",
                         ("definition", "k", "shared", "Gini heads"), tuple(rows))


def trace_heading(trace: Mapping[str, Any]) -> str:
    """What the tables below are computed under."""
    parts = []
    if trace.get("definition"):
        parts.append(f"trace definition {trace['definition']}")
    parameters = as_float(trace.get("n_parameters"))
    if parameters is not None:
        parts.append(f"{parameters:.0f} parameters")
    return " · ".join(parts) or "trace"


def trace_tables(trace: Mapping[str, Any]) -> list[LabelledTable]:
    """Every table of the trace view, in reading order."""
    return list(_trace_tables(trace))


def _trace_tables(trace: Mapping[str, Any]) -> Iterator[LabelledTable]:
    by_k = per_k(trace.get("per_k"))
    if by_k:
        yield shared_table(by_k)
        yield kind_table(by_k)
        yield layer_table(by_k)
        for k, entry in by_k.items():
            yield from location_head_tables(k, _dict(entry.get("location")))
        yield centralization_table(by_k)
    for k, ablation in per_k(trace.get("ablation")).items():
        yield ablation_table(k, ablation)
    if isinstance(trace.get("consistency"), dict):
        yield consistency_table(trace["consistency"])
    definitions = definitions_table(trace)
    if definitions is not None:
        yield definitions


ANALYSES_TITLES = {"representation": "representation consistency: storage (biography) vs query "
                                     "(question) hidden states",
                   "reads": "what the model reads: share of a value's attribution",
                   "grafting": "grafting: the smallest grafted set meeting the target"}
QUANTITY_LABELS = {
    "representation_cosine": "cosine", "representation_cosine_gap": "cosine - another person's",
    "representation_cka": "linear CKA", "reads_subject_relation": "subject + relation",
    "reads_subject": "subject", "grafting_fraction": "share of parameters",
    "grafting_id_recovered": "ID recall recovered",
    "grafting_random_id_recovered": "random set: ID recovered",
    "grafting_shared_enrichment": "shared set x chance"}
"""The analyses' summary quantities (factrecall_bench.analyses.summary), as the tables name them."""


def analyses_tables(analyses: Mapping[str, Any]) -> list[LabelledTable]:
    """One table per analysis in result["analyses"]["summary"]: a row per quantity, a column per
    place ("quantity@where" keys: p_train / p_test, bio / qa_id / qa_ood, a grafting method)."""
    cells: dict[str, dict[str, dict[str, str]]] = {}
    for key, value in _dict(analyses.get("summary")).items():
        quantity, _, where = str(key).partition("@")
        analysis = quantity.split("_", 1)[0]
        cells.setdefault(analysis, {}).setdefault(quantity, {})[where] = \
            fmt_num(as_float(value), 3)
    timings = _dict(analyses.get("timings"))
    tables = []
    for analysis, by_quantity in cells.items():
        places = list(dict.fromkeys(where for row in by_quantity.values() for where in row))
        rows = tuple((QUANTITY_LABELS.get(quantity, quantity),
                      *(row.get(where, DASH) for where in places))
                     for quantity, row in by_quantity.items())
        seconds = as_float(timings.get(analysis))
        tables.append(LabelledTable(
            ANALYSES_TITLES.get(analysis, analysis), ("quantity", *places), rows,
            f"at the end of training in {seconds:.1f} s; docs/analyses.md" if seconds is not None
            else "docs/analyses.md"))
    return tables
