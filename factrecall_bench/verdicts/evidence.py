"""Reading runs: a metric's value, per-question outcomes paired by model, seed and question, one
value per seed, and why a run failed. Knows result.json's keys; decides nothing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factrecall_bench.identity import training_identity
from factrecall_bench.verdicts.vocabulary import ANALYSES_PREFIX, PER_QUESTION_SPLITS, TRACE_PREFIX

Run = Mapping[str, Any]
"""A result.json dict, or a baseline run (same keys, metrics as plain floats)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_of(metric: str) -> tuple[str, str] | None:
    """("ood", "exact_match") for "ood_exact_match"; None for metrics without per-question data."""
    split, _, key = metric.partition("_")
    return (split, key) if split in PER_QUESTION_SPLITS and key else None


def _as_float(value: object) -> float | None:
    if _is_number(value) and math.isfinite(value):  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    return None


def metric_value(run: Run, metric: str, attribute: str | None = None) -> float | None:
    """A metric's value in a result.json dict ({"value": ...}) or a baseline run (a float);
    "trace.<key>" reads run["trace"]["summary"], "analyses.<key>" run["analyses"]["summary"].
    None when missing or not finite."""
    if attribute is not None:
        per_metric = (run.get("per_attribute") or {}).get(metric) or {}
        return _as_float((per_metric.get(attribute) or {}).get("value"))
    value = (run.get("metrics") or {}).get(metric)
    if value is None and metric.startswith(TRACE_PREFIX):
        summary = (run.get("trace") or {}).get("summary") or {}
        value = summary.get(metric.removeprefix(TRACE_PREFIX))
    if value is None and metric.startswith(ANALYSES_PREFIX):
        summary = (run.get("analyses") or {}).get("summary") or {}
        value = summary.get(metric.removeprefix(ANALYSES_PREFIX))
    if isinstance(value, Mapping):
        value = value.get("value")
    return _as_float(value)


def question_outcomes(
    run: Run, metric: str, attribute: str | None = None
) -> dict[str, bool] | None:
    """{question_id: correct} from run["per_question"] for an id_*/ood_* metric, optionally only
    the questions of one attribute ("p17/birth_city" -> "birth_city"); None when missing."""
    location = split_of(metric)
    if location is None:
        return None
    block = (run.get("per_question") or {}).get(location[0]) or {}
    question_ids, values = block.get("question_ids"), block.get(location[1])
    if not isinstance(question_ids, list) or not isinstance(values, list):
        return None
    if len(question_ids) != len(values):
        return None
    return {
        str(qid): bool(value)
        for qid, value in zip(question_ids, values, strict=True)
        if attribute is None or str(qid).rsplit("/", 1)[-1] == attribute
    }


def run_training_identity(run: Run) -> str | None:
    """What the run's model was trained with (identity.training_identity): a baseline entry's
    stored `training_identity`, else computed from a result's `config`; None with neither (a
    baseline entry written before entries stored it)."""
    stored = run.get("training_identity")
    if isinstance(stored, str):
        return stored
    config = run.get("config")
    return training_identity(config) if isinstance(config, Mapping) else None


def run_failure(run: Run) -> str | None:
    """Why a run counts as failed (status "failed" or an error recorded), else None."""
    if run.get("status") == "failed" or run.get("error"):
        reason = run.get("reason") or run.get("error") or "run failed"
        return f"run {run.get('run_id', '?')} failed: {reason}"
    return None


def _group_by(runs: Iterable[Run], key: Callable[[Run], Any]) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def _runs_problem(label: str, runs: Sequence[Run]) -> str | None:
    """Why these runs cannot be used (none, or one failed), else None."""
    if not runs:
        return f"no results for {label}"
    failures = [reason for reason in map(run_failure, runs) if reason]
    if failures:
        return f"{label}: {failures[0]}"
    keys = [_seed_key(run) for run in runs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    return f"{label}: two results for model {twice[0]}, seed {twice[1]}" if twice else None


def _seed_key(run: Run) -> tuple[str, Any]:
    return (str(run.get("model")), run.get("seed"))


@dataclass(frozen=True)
class PairedOutcomes:
    """Per-question correctness of a and b on the same questions, pooled over matched seeds."""

    a: list[bool]
    b: list[bool]
    n_runs: int
    """Matched (model, seed) pairs of runs."""
    unmatched_questions: int


def _pair_two_runs(
    run_a: Run, run_b: Run, metric: str, attribute: str | None
) -> tuple[list[bool], list[bool], int] | str:
    outcomes_a = question_outcomes(run_a, metric, attribute)
    outcomes_b = question_outcomes(run_b, metric, attribute)
    if outcomes_a is None or outcomes_b is None:
        return f"no per-question data for {metric} in run {run_a.get('run_id', '?')}"
    common = [qid for qid in outcomes_a if qid in outcomes_b]
    unmatched = len(outcomes_a) + len(outcomes_b) - 2 * len(common)
    return [outcomes_a[q] for q in common], [outcomes_b[q] for q in common], unmatched


def paired_outcomes(
    runs_a: Sequence[Run], runs_b: Sequence[Run], metric: str, attribute: str | None = None
) -> PairedOutcomes | str:
    """Pair runs of a and b by (model, seed), then answers by question id; a string says why
    no pairs could be formed."""
    by_seed_b = {_seed_key(run): run for run in runs_b}
    a: list[bool] = []
    b: list[bool] = []
    n_runs = unmatched = 0
    for run_a in runs_a:
        run_b = by_seed_b.get(_seed_key(run_a))
        if run_b is None:
            continue
        paired = _pair_two_runs(run_a, run_b, metric, attribute)
        if isinstance(paired, str):
            return paired
        a.extend(paired[0])
        b.extend(paired[1])
        n_runs, unmatched = n_runs + 1, unmatched + paired[2]
    if not a:
        return f"no questions of {metric} answered in runs with matching model and seed"
    return PairedOutcomes(a, b, n_runs, unmatched)


def seed_values(
    runs: Sequence[Run], metric: str, attribute: str | None = None
) -> list[float] | str:
    """One metric value per run; a string names the first run that lacks it."""
    values = []
    for run in runs:
        value = metric_value(run, metric, attribute)
        if value is None:
            return f"run {run.get('run_id', '?')} has no value for {metric}"
        values.append(value)
    return values
