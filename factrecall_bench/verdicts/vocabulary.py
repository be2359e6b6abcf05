"""The words suite files and verdicts.json use: claim kinds and tests, expectations, corrections,
statuses and the exit code of each. The modules of verdicts/ read them from here."""

from __future__ import annotations

from factrecall_bench import exit_codes

CLAIM_KINDS = ("greater", "at_least", "at_most")
THRESHOLD_KINDS = ("at_least", "at_most")
"""Claims about every listed strategy against a threshold (the paper's number)."""
CLAIM_TESTS = ("welch", "mannwhitney", "mcnemar", "wilson", "t")
SEED_TESTS = ("welch", "mannwhitney")
# at_least: "wilson" pools the answers of one trained model (one seed); "t" tests the seed-level
# values of several. Neither pools seeds: a claim about a recipe has the seed as its unit.
AT_LEAST_TESTS = ("wilson", "t")
REGRESSION_TESTS = ("mcnemar", "welch", "mannwhitney")
EXPECTATIONS = ("holds", "does_not_hold", "report", "fails")
""""fails": a known deviation from the paper, as pytest's xfail: the claim keeps the paper's
number and is expected not to hold here (the why says why); "does not hold" is then an expected
failure ("xfail"), "holds" an unexpected pass ("xpass", a failure when the claim is strict)."""
CORRECTIONS = ("holm", "bh", "none")
STATUSES = ("pass", "fail", "inconclusive", "reported", "xfail", "xpass", "no_baseline")
"""A verdict's status. "reported": a claim the suite only reports (expect "report"), neither
passed nor failed; its outcome and effect say what the data showed. "xfail" / "xpass": a claim
expected to fail (expect "fails") that failed / held (a strict one that holds is "fail").
"no_baseline": a regression check of runs trained with other settings than any the baseline
holds (a `--set` variation): nothing to compare with, which is neither a regression nor a doubt
about one, so it exits 0."""
STATUS_EXIT_CODES = {"pass": exit_codes.OK, "reported": exit_codes.OK, "xfail": exit_codes.OK,
                     "xpass": exit_codes.OK, "fail": exit_codes.FAILED,
                     "inconclusive": exit_codes.INCONCLUSIVE, "no_baseline": exit_codes.OK}
TRACE_PREFIX = "trace."
ANALYSES_PREFIX = "analyses."
"""A claim's metric "analyses.<key>": result["analyses"]["summary"][<key>] (analyses/summary.py)."""


def is_proportion_metric(metric: str) -> bool:
    """A key of result["metrics"] (a proportion), not a trace or analysis number."""
    return not metric.startswith((TRACE_PREFIX, ANALYSES_PREFIX))
PER_QUESTION_SPLITS = ("id", "ood")
REQUIRED_CLAIM_KEYS = ("name", "metric", "kind", "test", "why")
# Outcomes of a regression check, mapped to the verdict status. "no_baseline": the runs were
# trained with settings no baseline entry was made with (a variation), so nothing was compared.
REGRESSION_STATUS = {"no_change": "pass", "changed": "fail", "undecided": "inconclusive",
                     "no_baseline": "no_baseline"}
