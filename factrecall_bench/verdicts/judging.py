"""A suite's verdicts: its declared claims and the comparison with its stored baseline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from factrecall_bench.environment import hardware_class
from factrecall_bench.errors import UserError
from factrecall_bench.suite import Suite
from factrecall_bench.verdicts.baselines import BaselineError, baseline_path, read_baseline
from factrecall_bench.verdicts.claims import Claim, evaluate_claim
from factrecall_bench.verdicts.decision import Verdict, adjust_verdicts, verdict_status
from factrecall_bench.verdicts.regressions import RegressionSettings, compare_with_baseline


def suite_claims(suite: Suite) -> list[Claim]:
    """The suite's claims (parsed and checked against its seeds when the suite was loaded)."""
    return list(suite.claims)


def regression_settings(suite: Suite) -> RegressionSettings:
    return suite.regression


def judge_claims(suite: Suite, results: list[dict[str, Any]]) -> list[Verdict]:
    """Every claim of the suite, Holm-corrected together as one family (report-only claims
    included: they are tested too, and counting them only makes the others stricter)."""
    verdicts = [evaluate_claim(claim, results) for claim in suite_claims(suite)]
    return adjust_verdicts(verdicts, "holm") if verdicts else []


def judge_baseline(suite: Suite, results: list[dict[str, Any]], baselines_dir: Path,
                   baseline_file: Path | None = None) -> list[Verdict]:
    """Regression verdicts against the stored baseline (none if the suite declares none)."""
    if not suite.regression.enabled:
        return []
    path = baseline_file or baseline_path(baselines_dir, suite.name)
    if not Path(path).exists():
        return [Verdict(name=f"{suite.name} baseline", kind="regression",
                        status=verdict_status("regression", "undecided", "no_change"),
                        expect="no_change", outcome="undecided", test="-", metric="-",
                        detail=f"no baseline at {path}: create one with "
                               f"`factrecall-bench baseline update --suite {suite.name}`")]
    try:
        baseline = read_baseline(path, expected_suite=None if baseline_file else suite.name)
    except BaselineError as error:
        raise UserError(str(error)) from error
    _warn_on_mismatch(suite, baseline)
    settings = suite.regression
    # The stored minimum effect and level decide, so a suite edit cannot loosen its own gate.
    return compare_with_baseline(results, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], settings.test, settings.correction,
                                 per_attribute=settings.per_attribute)


def _warn_on_mismatch(suite: Suite, baseline: dict[str, Any]) -> None:
    if baseline.get("suite_hash") != suite.suite_hash():
        print(f"note: the suite {suite.name} changed since its baseline was stored",
              file=sys.stderr)
    if baseline.get("hardware_class") != hardware_class():
        print(f"note: baseline made on {baseline.get('hardware_class')}, this is "
              f"{hardware_class()}: numbers may differ", file=sys.stderr)
