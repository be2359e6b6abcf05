"""Baseline files: the reference runs that regressions are judged against, one per suite and
hardware class: `baselines/<suite>.json` for CPUs, `baselines/<suite>@<class>.json` for any other
class (`cpu@cuda-nvidia-h100-80gb-hbm3.json`), since numbers made on a GPU differ from a CPU's.

Written atomically (one run per line, so diffs stay readable); read with strict validation, and
every problem is one `BaselineError` line naming the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from factrecall_bench.io import write_text_atomic
from factrecall_bench.verdicts.evidence import metric_value, run_failure, run_training_identity

SCHEMA_VERSION = 1
TOP_LEVEL_TYPES: dict[str, type] = {
    "schema_version": int, "suite": str, "suite_hash": str, "hardware_class": str,
    "created": str, "git_revision": str, "versions": dict, "alpha": float,
    "min_effect": float, "metrics": list, "runs": list,
}
RUN_TYPES: dict[str, type] = {
    "run_id": str, "strategy": str, "model": str, "seed": int, "config_hash": str,
    "metrics": dict, "per_question": dict,
}
OPTIONAL_RUN_TYPES: dict[str, type] = {"per_attribute": dict, "training_identity": str}
"""`training_identity` (identity.training_identity): what the entry's model was trained with; a
run is compared only with the entry of its own. Entries written before it was stored have none
and are matched by strategy, model and seed, for the suite's own settings only."""
VERSION_KEYS = ("python", "torch", "transformers")


class BaselineError(ValueError):
    """A baseline file is missing or malformed; the message is one line naming the file."""


CPU_CLASS = "cpu"
"""Every CPU is one class (x86_64 and arm64 alike): the class the shipped baselines were made in."""


def baseline_class(hardware: str) -> str:
    """The class baselines are kept by, from the hardware a result records (`environment.hardware`,
    e.g. `cpu:x86_64` or `cuda:NVIDIA H100 80GB HBM3`): `cpu` for any CPU, else `<kind>-<card>`
    in lower case (`cuda-nvidia-h100-80gb-hbm3`). A class maps to itself."""
    kind, _, card = hardware.strip().lower().partition(":")
    if kind in ("", CPU_CLASS):
        return CPU_CLASS
    return re.sub(r"[^a-z0-9]+", "-", f"{kind} {card}").strip("-")


def this_machines_class() -> str:
    from factrecall_bench.environment import hardware_class  # imports torch: only when needed

    return baseline_class(hardware_class())


def baseline_path(baselines_dir: Path | str, suite: str, hardware: str | None = None) -> Path:
    """Where the suite's baseline for `hardware` (as results record it, or its class; None: this
    machine's) lives: `<suite>.json` for CPUs, `<suite>@<class>.json` for another class."""
    klass = baseline_class(hardware) if hardware is not None else this_machines_class()
    name = suite if klass == CPU_CLASS else f"{suite}@{klass}"
    return Path(baselines_dir) / f"{name}.json"


# ---------------------------------------------------------------------------------------------
# Building


def _joined(values: Sequence[str]) -> str:
    """The common value, or all distinct values joined with "," when runs disagree."""
    return ",".join(sorted(set(values))) if values else "unknown"


def _versions(environment: Mapping[str, Any]) -> dict[str, str]:
    nested = environment.get("versions")
    versions = dict(nested) if isinstance(nested, Mapping) else {}
    versions.update({key: environment[key] for key in VERSION_KEYS if key in environment})
    return {str(key): str(value) for key, value in versions.items()}


def _common_versions(results: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    per_run = [_versions(result.get("environment") or {}) for result in results]
    keys = sorted({key for versions in per_run for key in versions})
    return {key: _joined([v[key] for v in per_run if key in v]) for key in keys}


def _baseline_run(result: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    label = f"run {result.get('run_id', '?')}"
    failure = run_failure(result)
    if failure:
        raise BaselineError(f"cannot make a baseline from a failed run: {failure}")
    values = {}
    for metric in metrics:
        value = metric_value(result, metric)
        if value is None:
            raise BaselineError(f"cannot make a baseline: {label} has no value for {metric}")
        values[metric] = value
    run = {key: result.get(key) for key in ("run_id", "strategy", "model", "seed", "config_hash")}
    identity = run_training_identity(result)
    if identity is not None:
        run["training_identity"] = identity
    run.update(metrics=values, per_question=result.get("per_question") or {})
    per_attribute = result.get("per_attribute") or {}
    kept = {metric: per_attribute[metric] for metric in metrics if metric in per_attribute}
    if kept:
        run["per_attribute"] = kept
    return run


def baseline_from_results(
    suite_name: str,
    suite_hash: str,
    results: Sequence[Mapping[str, Any]],
    hardware_class: str,
    alpha: float,
    min_effect: float,
    metrics: Sequence[str],
) -> dict[str, Any]:
    """A baseline document from a suite's result.json dicts (validated before it is returned)."""
    runs = [_baseline_run(result, metrics) for result in results]
    runs.sort(key=lambda run: (str(run["strategy"]), str(run["model"]), str(run["seed"])))
    revisions = [str((r.get("environment") or {}).get("git_revision", "unknown")) for r in results]
    baseline = {
        "schema_version": SCHEMA_VERSION,
        "suite": suite_name,
        "suite_hash": suite_hash,
        "hardware_class": hardware_class,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_revision": _joined(revisions),
        "versions": _common_versions(results),
        "alpha": float(alpha),
        "min_effect": float(min_effect),
        "metrics": list(metrics),
        "runs": runs,
    }
    validate_baseline(baseline, f"new baseline for suite {suite_name!r}")
    return baseline


# ---------------------------------------------------------------------------------------------
# Validating


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _type_problem(value: Any, expected: type, where: str) -> str | None:
    if expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if ok:
        return None
    wanted = "a finite number" if expected is float else expected.__name__
    return f"{where} must be {wanted}, got {_type_name(value)} {json.dumps(value)[:40]}"


def _keys_problem(
    data: Mapping[str, Any], required: Mapping[str, type], optional: Mapping[str, type], where: str
) -> str | None:
    missing = [key for key in required if key not in data]
    if missing:
        return f"{where} is missing {', '.join(missing)}"
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        return f"{where} has unknown key(s) {', '.join(unknown)}"
    types = {**required, **optional}
    problems = (_type_problem(data[key], types[key], f"{where}.{key}") for key in data)
    return next((problem for problem in problems if problem), None)


def _header_problem(baseline: Mapping[str, Any]) -> str | None:
    if baseline.get("schema_version") != SCHEMA_VERSION:
        found = json.dumps(baseline.get("schema_version"))
        return f"schema_version must be {SCHEMA_VERSION}, got {found}"
    problem = _keys_problem(baseline, TOP_LEVEL_TYPES, {}, "baseline")
    if problem:
        return problem
    try:
        datetime.fromisoformat(baseline["created"])
    except ValueError:
        return f"created must be an ISO date-time, got {baseline['created']!r}"
    if not 0.0 < baseline["alpha"] < 1.0 or baseline["min_effect"] < 0:
        limits = f"{baseline['alpha']}, {baseline['min_effect']}"
        return f"need 0 < alpha < 1 and min_effect >= 0, got {limits}"
    if not all(isinstance(value, str) for value in baseline["versions"].values()):
        return "versions must map package names to version strings"
    return _metric_names_problem(baseline["metrics"])


def _metric_names_problem(metrics: list[Any]) -> str | None:
    if not metrics or not all(isinstance(name, str) and name for name in metrics):
        return "metrics must be a non-empty list of metric names"
    if len(set(metrics)) != len(metrics):
        return "metrics lists a metric twice"
    return None


def _per_question_problem(per_question: Mapping[str, Any], where: str) -> str | None:
    for split, block in per_question.items():
        here = f"{where}.per_question.{split}"
        if not isinstance(block, dict) or not isinstance(block.get("question_ids"), list):
            return f"{here} must be an object with a question_ids list"
        ids = block["question_ids"]
        if not all(isinstance(qid, str) for qid in ids) or len(set(ids)) != len(ids):
            return f"{here}.question_ids must be distinct strings"
        for key, values in block.items():
            if key == "question_ids":
                continue
            if not isinstance(values, list) or len(values) != len(ids):
                return f"{here}.{key} must be a list as long as question_ids ({len(ids)})"
            if not all(value in (0, 1) and not isinstance(value, float) for value in values):
                return f"{here}.{key} must hold only 0/1 or true/false"
    return None


def _per_attribute_problem(per_attribute: Mapping[str, Any], where: str) -> str | None:
    for metric, attributes in per_attribute.items():
        if not isinstance(attributes, dict):
            return f"{where}.per_attribute.{metric} must be an object"
        for attribute, entry in attributes.items():
            here = f"{where}.per_attribute.{metric}.{attribute}"
            if not isinstance(entry, dict) or "value" not in entry:
                return f"{here} must be an object with a value"
            problem = _type_problem(entry["value"], float, f"{here}.value")
            if problem:
                return problem
    return None


def _run_problem(run: Any, index: int, metrics: Sequence[str]) -> str | None:
    where = f"runs[{index}]"
    if not isinstance(run, dict):
        return f"{where} must be an object, got {_type_name(run)}"
    problem = _keys_problem(run, RUN_TYPES, OPTIONAL_RUN_TYPES, where)
    if problem:
        return problem
    for metric in metrics:
        if metric not in run["metrics"]:
            return f"{where} ({run['run_id']}) has no value for metric {metric}"
        problem = _type_problem(run["metrics"][metric], float, f"{where}.metrics.{metric}")
        if problem:
            return problem
    problem = _per_question_problem(run["per_question"], where)
    return problem or _per_attribute_problem(run.get("per_attribute", {}), where)


def _runs_problem(runs: list[Any], metrics: Sequence[str]) -> str | None:
    if not runs:
        return "runs is empty"
    problems = (_run_problem(run, index, metrics) for index, run in enumerate(runs))
    problem = next((problem for problem in problems if problem), None)
    if problem:
        return problem
    keys = [(run["strategy"], run["model"], run["seed"]) for run in runs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        strategy, model, seed = duplicates[0]
        return f"two runs for strategy {strategy!r}, model {model!r}, seed {seed}"
    return None


def validate_baseline(baseline: Any, source: str) -> None:
    """Raise BaselineError("<source>: <problem>") unless `baseline` is a valid baseline."""
    if not isinstance(baseline, dict):
        raise BaselineError(f"{source}: must be a JSON object, got {_type_name(baseline)}")
    problem = _header_problem(baseline) or _runs_problem(baseline["runs"], baseline["metrics"])
    if problem:
        raise BaselineError(f"{source}: {problem}")


# ---------------------------------------------------------------------------------------------
# Reading and writing


def baseline_text(baseline: Mapping[str, Any]) -> str:
    """JSON with the header pretty-printed and one run per line."""
    header = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in baseline.items()
              if key != "runs"]
    runs = ",\n".join(f"    {json.dumps(run, allow_nan=False)}" for run in baseline["runs"])
    return "{\n" + ",\n".join([*header, f'  "runs": [\n{runs}\n  ]']) + "\n}\n"


def write_baseline(path: Path | str, baseline: Mapping[str, Any]) -> None:
    """Validate, then write atomically (temp file in the same folder, fsync, os.replace)."""
    validate_baseline(baseline, str(path))
    write_text_atomic(Path(path), baseline_text(baseline))


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{path}: no baseline file (record one first)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineError(f"{path}: cannot read the baseline: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


def read_baseline(path: Path | str, expected_suite: str | None = None) -> dict[str, Any]:
    """Read and strictly validate a baseline file; any problem is one BaselineError line."""
    path = Path(path)
    baseline = _load_json(path)
    validate_baseline(baseline, str(path))
    if expected_suite is not None and baseline["suite"] != expected_suite:
        raise BaselineError(
            f"{path}: baseline is for suite {baseline['suite']!r}, not {expected_suite!r}"
        )
    return baseline
