"""A suite's verdicts: its declared claims and the comparison with its stored baseline.

It takes what it judges: the runs' results, the claims, and a `BaselineSubject` (the suite's
name, hash and regression settings); never a suite, and verdicts/ never imports suite.py."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from factrecall_bench.environment import hardware_class
from factrecall_bench.errors import UserError
from factrecall_bench.verdicts.baselines import (
    CPU_CLASS,
    BaselineError,
    baseline_class,
    baseline_path,
    read_baseline,
)
from factrecall_bench.verdicts.claims import (
    Claim,
    definitions_line,
    evaluate_claim,
    evaluate_claim_by_definition,
)
from factrecall_bench.verdicts.decision import Verdict, adjust_verdicts, verdict_status
from factrecall_bench.verdicts.regressions import BaselineSubject, compare_with_baseline


def judge_claims(claims: Sequence[Claim], results: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """Every claim of a suite, Holm-corrected together as one family (report-only claims
    included: they are tested too, and counting them only makes the others stricter)."""
    verdicts = [evaluate_claim(claim, results) for claim in claims]
    adjusted = adjust_verdicts(verdicts, "holm") if verdicts else []
    main = _main_definition(results)
    return [_with_definitions(verdict, evaluate_claim_by_definition(claim, results), main)
            for claim, verdict in zip(claims, adjusted, strict=True)]


def _main_definition(results: Sequence[Mapping[str, Any]]) -> str | None:
    names = {(result.get("trace") or {}).get("definition") for result in results}
    return names.pop() if len(names) == 1 else None


def _with_definitions(verdict: Verdict, rows: list[dict[str, Any]], main: str | None) -> Verdict:
    """A trace claim's verdict (decided under the main definition) with its judgment under every
    definition, and a line saying under how many it holds."""
    if not rows:
        return verdict
    return replace(verdict, definitions=tuple(rows),
                   detail=f"{verdict.detail}; {definitions_line(rows, main)}")


def judge_baseline(subject: BaselineSubject, results: Sequence[Mapping[str, Any]],
                   baselines_dir: Path, baseline_file: Path | None = None) -> list[Verdict]:
    """Regression verdicts against the stored baseline of the runs' hardware class (none if the
    suite declares none); no baseline for that class is one inconclusive verdict saying so."""
    if not subject.settings.enabled:
        return []
    how = f"create one with `factrecall-bench baseline update {subject.command_arguments}`"
    if baseline_file is not None:  # the user's choice: used whatever hardware made it
        if not Path(baseline_file).exists():
            return [_no_baseline(subject, f"no baseline at {baseline_file}: {how}")]
        return _compare(subject, results, _read(baseline_file, None))
    classes = sorted({baseline_class(hardware) for hardware in runs_hardware(results)})
    if len(classes) > 1:
        return [_no_baseline(subject, f"the runs were made on {len(classes)} hardware classes "
                                    f"({', '.join(classes)}), and a baseline holds one")]
    path = baseline_path(baselines_dir, subject.suite_name, classes[0])
    parent_path = (baseline_path(baselines_dir, subject.extends, classes[0])
                   if subject.extends else None)
    if not Path(path).exists() and parent_path is not None and Path(parent_path).exists():
        return _compare_with_extended(subject, results, _read(parent_path, subject.extends))
    if not Path(path).exists():
        if classes[0] == CPU_CLASS:
            return [_no_baseline(subject, f"no baseline at {path}: {how}")]
        return [_no_baseline(subject, f"no baseline for {classes[0]} hardware at {path}"
                                    f"{_others(path, subject.suite_name)}: {how} on {classes[0]} hardware")]
    baseline = _read(path, subject.suite_name)
    stored = baseline_class(baseline["hardware_class"])
    if stored != classes[0]:
        return [_no_baseline(subject, f"no baseline for {classes[0]} hardware: {path} was made on "
                                    f"{baseline['hardware_class']} ({stored}); {how} on "
                                    f"{classes[0]} hardware")]
    return _compare(subject, results, baseline)


def _others(path: Path, suite_name: str) -> str:
    """` (this suite's other baselines: cpu.json)`, or nothing when the folder holds none."""
    found = sorted(p.name for p in Path(path).parent.glob(f"{suite_name}*.json")
                   if p.stem == suite_name or p.stem.startswith(f"{suite_name}@"))
    return f" (this suite's other baselines: {', '.join(found)})" if found else ""


def runs_hardware(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hardware each run recorded (`environment.hardware`); this machine's for a run that
    recorded none, and for no runs at all."""
    recorded = [(result.get("environment") or {}).get("hardware") for result in results]
    return [value if isinstance(value, str) and value else hardware_class()
            for value in recorded] or [hardware_class()]


def _read(path: Path, suite_name: str | None) -> dict[str, Any]:
    try:
        return read_baseline(path, expected_suite=suite_name)
    except BaselineError as error:
        raise UserError(str(error)) from error


def _no_baseline(subject: BaselineSubject, detail: str) -> Verdict:
    """No baseline to read: a doubt for the suite itself (CI must notice), nothing to compare for
    a variation (its settings have no baseline of their own either way)."""
    outcome = "no_baseline" if subject.variation else "undecided"
    if subject.variation:
        detail = f"no baseline for these settings: {detail}"
    return Verdict(name=f"{subject.suite_name} baseline", kind="regression",
                   status=verdict_status("regression", outcome, "no_change"),
                   expect="no_change", outcome=outcome, test="-", metric="-", detail=detail)


def _compare(subject: BaselineSubject, results: Sequence[Mapping[str, Any]],
             baseline: dict[str, Any]) -> list[Verdict]:
    _warn_on_mismatch(subject, baseline, runs_hardware(results))
    settings = subject.settings
    # The stored minimum effect and level decide, so a suite edit cannot loosen its own gate.
    return compare_with_baseline(results, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], settings.test, settings.correction,
                                 per_attribute=settings.per_attribute,
                                 own_identities=subject.own_identities)


def _compare_with_extended(subject: BaselineSubject, results: Sequence[Mapping[str, Any]],
                           baseline: dict[str, Any]) -> list[Verdict]:
    """A suite that extends another and has no baseline of its own: its runs trained as the
    extended suite's are compared with that suite's baseline; the others (its own strategies,
    its changed settings) have none ("no baseline for these settings"), never a regression."""
    print(f"note: suite {subject.suite_name} has no baseline of its own; its runs trained as suite "
          f"{subject.extends}'s are compared with {subject.extends}'s baseline", file=sys.stderr)
    settings = subject.settings
    return compare_with_baseline(results, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], settings.test, settings.correction,
                                 per_attribute=settings.per_attribute,
                                 own_identities=subject.extended_identities)


def _warn_on_mismatch(subject: BaselineSubject, baseline: dict[str, Any], hardware: list[str]
                      ) -> None:
    if not subject.variation and baseline.get("suite_hash") != subject.suite_hash:
        print(f"note: the suite {subject.suite_name} changed since its baseline was stored",
              file=sys.stderr)
    here = ",".join(sorted(set(hardware)))
    if baseline.get("hardware_class") != here:
        print(f"note: baseline made on {baseline.get('hardware_class')}, this is "
              f"{here}: numbers may differ", file=sys.stderr)
