"""Claims and regressions: turn result.json dicts into pass / fail / inconclusive / reported
verdicts.

Modules, each importing only those above it: stats (the tests: pure functions of numbers),
vocabulary (claim kinds, tests, corrections, statuses), evidence (reading runs: metric values,
paired per-question outcomes, seed values), decision (Verdict, the one rule from an outcome to a
status, Holm / BH, the suite's exit code, verdicts.json), claims (Claim, its checks, greater and
at_least), regressions (RegressionSettings, BaselineSubject, compare_with_baseline), baselines (baseline
files). judging, a suite's claims and its runs' comparison with the stored baseline (it takes the
claims and a BaselineSubject, never a suite), reads baseline files and so is imported by path:
factrecall_bench.verdicts.judging. Names with a leading underscore are shared among these
modules only.
"""

from factrecall_bench.verdicts.claims import Claim, check_claim_seeds, evaluate_claim
from factrecall_bench.verdicts.decision import (
    DecisionBasis,
    Verdict,
    adjust_verdicts,
    claim_outcome,
    claim_status,
    regression_outcome,
    status_label,
    suite_exit_code,
    verdict_status,
    verdicts_document,
)
from factrecall_bench.verdicts.evidence import (
    PairedOutcomes,
    Run,
    metric_value,
    paired_outcomes,
    question_outcomes,
    run_failure,
    seed_values,
    split_of,
)
from factrecall_bench.verdicts.regressions import (
    BaselineSubject,
    RegressionCheck,
    RegressionSettings,
    compare_with_baseline,
)
from factrecall_bench.verdicts.vocabulary import (
    ANALYSES_PREFIX,
    AT_LEAST_TESTS,
    CLAIM_KINDS,
    CLAIM_TESTS,
    CORRECTIONS,
    EXPECTATIONS,
    PER_QUESTION_SPLITS,
    REGRESSION_STATUS,
    REGRESSION_TESTS,
    REQUIRED_CLAIM_KEYS,
    SEED_TESTS,
    STATUS_EXIT_CODES,
    STATUSES,
    TRACE_PREFIX,
)

__all__ = [
    "ANALYSES_PREFIX",
    "AT_LEAST_TESTS",
    "CLAIM_KINDS",
    "CLAIM_TESTS",
    "CORRECTIONS",
    "EXPECTATIONS",
    "PER_QUESTION_SPLITS",
    "REGRESSION_STATUS",
    "REGRESSION_TESTS",
    "REQUIRED_CLAIM_KEYS",
    "SEED_TESTS",
    "STATUSES",
    "STATUS_EXIT_CODES",
    "TRACE_PREFIX",
    "BaselineSubject",
    "Claim",
    "DecisionBasis",
    "PairedOutcomes",
    "RegressionCheck",
    "RegressionSettings",
    "Run",
    "Verdict",
    "adjust_verdicts",
    "check_claim_seeds",
    "claim_outcome",
    "claim_status",
    "compare_with_baseline",
    "evaluate_claim",
    "metric_value",
    "paired_outcomes",
    "question_outcomes",
    "regression_outcome",
    "run_failure",
    "seed_values",
    "split_of",
    "status_label",
    "suite_exit_code",
    "verdict_status",
    "verdicts_document",
]
