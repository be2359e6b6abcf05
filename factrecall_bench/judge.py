"""A suite's verdicts: its declared claims and the comparison with its stored baseline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from factrecall_bench.baselines import BaselineError, baseline_path, read_baseline
from factrecall_bench.environment import hardware_class
from factrecall_bench.errors import UserError
from factrecall_bench.suite import Suite
from factrecall_bench.verdicts import (
    Claim,
    Verdict,
    adjust_verdicts,
    check_claim_seeds,
    compare_with_baseline,
    evaluate_claim,
    verdict_status,
)

REGRESSION_DEFAULTS: dict[str, Any] = {
    "metrics": ["id_exact_match", "ood_exact_match"], "min_effect": 0.05, "alpha": 0.01,
    "test": "mcnemar", "correction": "holm", "per_attribute": False,
}


def suite_claims(suite: Suite) -> list[Claim]:
    """The suite's claims, each checked against its number of seeds (a usage error if not)."""
    claims = []
    for raw in suite.claims:
        try:
            claim = Claim.from_dict(raw)
            check_claim_seeds(claim, len(suite.seeds))
        except (ValueError, TypeError) as error:
            raise UserError(f"suite {suite.name}: {error}") from error
        claims.append(claim)
    return claims


def regression_settings(suite: Suite) -> dict[str, Any]:
    unknown = set(suite.regression) - set(REGRESSION_DEFAULTS) - {"enabled"}
    if unknown:
        raise UserError(f"suite {suite.name}: regression: unknown key(s) {sorted(unknown)}")
    return {**REGRESSION_DEFAULTS, **{k: v for k, v in suite.regression.items() if k != "enabled"}}


def judge_claims(suite: Suite, results: list[dict[str, Any]]) -> list[Verdict]:
    """Every claim of the suite, Holm-corrected together as one family (report-only claims
    included: they are tested too, and counting them only makes the others stricter)."""
    verdicts = [evaluate_claim(claim, results) for claim in suite_claims(suite)]
    return adjust_verdicts(verdicts, "holm") if verdicts else []


def judge_baseline(suite: Suite, results: list[dict[str, Any]], baselines_dir: Path,
                   baseline_file: Path | None = None) -> list[Verdict]:
    """Regression verdicts against the stored baseline (none if the suite declares none)."""
    if not suite.regression.get("enabled", bool(suite.regression)):
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
    settings = regression_settings(suite)
    # The stored minimum effect and level decide, so a suite edit cannot loosen its own gate.
    return compare_with_baseline(results, baseline, baseline["metrics"], baseline["min_effect"],
                                 baseline["alpha"], settings["test"], settings["correction"],
                                 per_attribute=settings["per_attribute"])


def _warn_on_mismatch(suite: Suite, baseline: dict[str, Any]) -> None:
    if baseline.get("suite_hash") != suite.suite_hash():
        print(f"note: the suite {suite.name} changed since its baseline was stored",
              file=sys.stderr)
    if baseline.get("hardware_class") != hardware_class():
        print(f"note: baseline made on {baseline.get('hardware_class')}, this is "
              f"{hardware_class()}: numbers may differ", file=sys.stderr)
