"""A suite's verdicts: its declared claims and the comparison with its stored baseline.

It judges what a suite declares (`Judged`: its claims and regression settings, its name and
hash), not the suite file: suite.Suite is one, and verdicts/ never imports suite.py."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

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
from factrecall_bench.verdicts.regressions import RegressionSettings, compare_with_baseline


class Judged(Protocol):
    """What judging reads of a suite (suite.Suite has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def claims(self) -> tuple[Claim, ...]: ...
    @property
    def regression(self) -> RegressionSettings: ...
    @property
    def overrides(self) -> tuple[str, ...]:
        """`--set` overrides: non-empty for a variation (its settings have no baseline)."""
    @property
    def unvaried_identities(self) -> frozenset[str] | None:
        """A variation's: the training identities its baseline speaks for (None: not a
        variation, every run is the suite's own)."""
    @property
    def command_arguments(self) -> str:
        """What names the suite on a command line (`--suite my/low2.toml`), for hints."""
    @property
    def extends(self) -> str:
        """The suite it extends ("" if none), whose baseline judges the runs trained as that
        suite's when it has no baseline of its own."""
    @property
    def extended_identities(self) -> frozenset[str]:
        """The training identities of the extended suite's runs."""
    def suite_hash(self) -> str: ...


def judge_claims(suite: Judged, results: Sequence[Mapping[str, Any]]) -> list[Verdict]:
    """Every claim of the suite, Holm-corrected together as one family (report-only claims
    included: they are tested too, and counting them only makes the others stricter)."""
    verdicts = [evaluate_claim(claim, results) for claim in suite.claims]
    adjusted = adjust_verdicts(verdicts, "holm") if verdicts else []
    main = _main_definition(results)
    return [_with_definitions(verdict, evaluate_claim_by_definition(claim, results), main)
            for claim, verdict in zip(suite.claims, adjusted, strict=True)]


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


def judge_baseline(suite: Judged, results: Sequence[Mapping[str, Any]], baselines_dir: Path,
                   baseline_file: Path | None = None) -> list[Verdict]:
    """Regression verdicts against the stored baseline of the runs' hardware class (none if the
    suite declares none); no baseline for that class is one inconclusive verdict saying so."""
    if not suite.regression.enabled:
        return []
    how = f"create one with `factrecall-bench baseline update {suite.command_arguments}`"
    if baseline_file is not None:  # the user's choice: used whatever hardware made it
        if not Path(baseline_file).exists():
            return [_no_baseline(suite, f"no baseline at {baseline_file}: {how}")]
        return _compare(suite, results, _read(baseline_file, None))
    classes = sorted({baseline_class(hardware) for hardware in runs_hardware(results)})
    if len(classes) > 1:
        return [_no_baseline(suite, f"the runs were made on {len(classes)} hardware classes "
                                    f"({', '.join(classes)}), and a baseline holds one")]
    path = baseline_path(baselines_dir, suite.name, classes[0])
    parent_path = baseline_path(baselines_dir, suite.extends, classes[0]) if suite.extends else None
    if not Path(path).exists() and parent_path is not None and Path(parent_path).exists():
        return _compare_with_extended(suite, results, _read(parent_path, suite.extends))
    if not Path(path).exists():
        if classes[0] == CPU_CLASS:
            return [_no_baseline(suite, f"no baseline at {path}: {how}")]
        return [_no_baseline(suite, f"no baseline for {classes[0]} hardware at {path}"
                                    f"{_others(path, suite.name)}: {how} on {classes[0]} hardware")]
    baseline = _read(path, suite.name)
    stored = baseline_class(baseline["hardware_class"])
    if stored != classes[0]:
        return [_no_baseline(suite, f"no baseline for {classes[0]} hardware: {path} was made on "
                                    f"{baseline['hardware_class']} ({stored}); {how} on "
                                    f"{classes[0]} hardware")]
    return _compare(suite, results, baseline)


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


def _no_baseline(suite: Judged, detail: str) -> Verdict:
    """No baseline to read: a doubt for the suite itself (CI must notice), nothing to compare for
    a variation (its settings have no baseline of their own either way)."""
    outcome = "no_baseline" if suite.overrides else "undecided"
    if suite.overrides:
        detail = f"no baseline for these settings: {detail}"
    return Verdict(name=f"{suite.name} baseline", kind="regression",
                   status=verdict_status("regression", outcome, "no_change"),
                   expect="no_change", outcome=outcome, test="-", metric="-", detail=detail)


def _compare(suite: Judged, results: Sequence[Mapping[str, Any]], baseline: dict[str, Any]
             ) -> list[Verdict]:
    _warn_on_mismatch(suite, baseline, runs_hardware(results))
    settings = suite.regression
    # The stored minimum effect and level decide, so a suite edit cannot loosen its own gate.
    return compare_with_baseline(results, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], settings.test, settings.correction,
                                 per_attribute=settings.per_attribute,
                                 own_identities=suite.unvaried_identities)


def _compare_with_extended(suite: Judged, results: Sequence[Mapping[str, Any]],
                           baseline: dict[str, Any]) -> list[Verdict]:
    """A suite that extends another and has no baseline of its own: its runs trained as the
    extended suite's are compared with that suite's baseline; the others (its own strategies,
    its changed settings) have none ("no baseline for these settings"), never a regression."""
    print(f"note: suite {suite.name} has no baseline of its own; its runs trained as suite "
          f"{suite.extends}'s are compared with {suite.extends}'s baseline", file=sys.stderr)
    settings = suite.regression
    return compare_with_baseline(results, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], settings.test, settings.correction,
                                 per_attribute=settings.per_attribute,
                                 own_identities=suite.extended_identities)


def _warn_on_mismatch(suite: Judged, baseline: dict[str, Any], hardware: list[str]) -> None:
    if not suite.overrides and baseline.get("suite_hash") != suite.suite_hash():
        print(f"note: the suite {suite.name} changed since its baseline was stored",
              file=sys.stderr)
    here = ",".join(sorted(set(hardware)))
    if baseline.get("hardware_class") != here:
        print(f"note: baseline made on {baseline.get('hardware_class')}, this is "
              f"{here}: numbers may differ", file=sys.stderr)
