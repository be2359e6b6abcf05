"""The metrics, declared once (the registry): what each is computed from and where it shows.

Evaluation (`runner.evaluate_recall`), the trace's ablation, the report's summary table, the TUI's
tables and curves and the default `[regression]` metrics all read METRICS, so a new metric is one
`register_metric(Metric(...))` (or one row below); a new kind of per-item score also needs the
function computing it (`evaluate.SCORERS`). Light on purpose: the TUI imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric: the proportion of items of one source that score 1, with its 95% Wilson
    interval (see `evaluate.proportion`)."""

    name: str
    """Its key in result.json's `metrics`, and what claims and `[regression]` name."""
    source: str
    """The items it scores, a key of `evaluate.SCORERS`: "id" / "ood" (the questions of P_train
    / P_test), "bio_train" / "bio_test" (the biographies of P_train / P_test)."""
    score: str
    """The per-item 0/1 score it is the share of: "exact_match" or "first_token" (QA),
    "first_token" (BIO: each attribute value's first token after its true prefix)."""
    label: str
    """Its name in tables: the report's summary, the TUI's per-attribute and trace tables."""
    column: str
    """Its header in the TUI's narrow results table."""
    higher_is_better: bool = True
    """The trace's ablation reports a drop as the change for the worse."""
    with_interval: bool = False
    """The TUI's results table shows its 95% Wilson interval (else its value, 2 digits)."""
    per_attribute: bool = False
    """result.json's `per_attribute` holds it per attribute."""
    ablated: bool = False
    """The trace's ablation re-measures it on the ablated model."""
    summarized: bool = False
    """A column of the report's summary table (mean ± sd over seeds)."""
    shown: bool = False
    """A column of the TUI's results table."""
    curve: str = ""
    """Its row label (at most 5 characters) in the TUI's curves, from the eval events;
    "" = not plotted."""
    regression_checked: bool = False
    """Among `[regression]`'s default metrics."""

    def __post_init__(self) -> None:
        if not self.name or not self.source or not self.score:
            raise ValueError("a metric needs a name, a source and a score")
        if len(self.curve) > 5:
            raise ValueError(f"metric {self.name}: curve label {self.curve!r} is over 5 characters")


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("id_exact_match", "id", "exact_match", "ID exact match", "ID EM [95%]",
           with_interval=True, per_attribute=True, ablated=True, summarized=True, shown=True,
           curve="ID", regression_checked=True),
    Metric("ood_exact_match", "ood", "exact_match", "OOD exact match", "OOD EM [95%]",
           with_interval=True, per_attribute=True, ablated=True, summarized=True, shown=True,
           curve="OOD", regression_checked=True),
    Metric("id_first_token", "id", "first_token", "ID first token", "ID FT"),
    Metric("ood_first_token", "ood", "first_token", "OOD first token", "OOD FT"),
    Metric("bio_first_token_train", "bio_train", "first_token", "BIO recall P_train", "BIO train",
           shown=True),
    Metric("bio_first_token_test", "bio_test", "first_token", "BIO recall P_test", "BIO test",
           per_attribute=True, ablated=True, summarized=True, shown=True),
)}
"""The registry, in result.json's order (evaluation scores the sources in this order too)."""


def register_metric(metric: Metric) -> Metric:
    """Add a metric; a name already taken is refused (change the row instead)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    return metric


def metric_named(name: str) -> Metric | None:
    return METRICS.get(name)


def all_metrics() -> list[Metric]:
    return list(METRICS.values())


def ablated_metrics() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.ablated]


def summarized_metrics() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.summarized]


def shown_metrics() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.shown]


def plotted_metrics() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.curve]


def regression_metric_names() -> tuple[str, ...]:
    return tuple(metric.name for metric in METRICS.values() if metric.regression_checked)


def sources_of(metrics: list[Metric]) -> list[str]:
    """The sources these metrics read, each once, in the metrics' order."""
    return list(dict.fromkeys(metric.source for metric in metrics))


def higher_is_better(name: str) -> bool:
    """A registered metric's direction; True for any other name (an evaluator's own key)."""
    metric = METRICS.get(name)
    return True if metric is None else metric.higher_is_better


class _Labels(Mapping[str, str]):
    """name -> label of every registered metric, read live (a metric registered later is in)."""

    def __getitem__(self, name: str) -> str:
        return METRICS[name].label

    def __iter__(self) -> Iterator[str]:
        return iter(list(METRICS))

    def __len__(self) -> int:
        return len(METRICS)


METRIC_LABELS: Mapping[str, str] = _Labels()
