"""The process's exit codes: the one place that says what each means and which one wins.

CI reads these, so they are a contract (documented in the README's CLI section):

| code | meaning |
|---|---|
| 0 | every verdict passed (report-only claims and `no baseline` checks never fail) |
| 1 | a regression against the baseline, or a claim that failed |
| 2 | bad input or usage: nothing was started |
| 3 | inconclusive: a verdict the data cannot decide |
| 4 | some runs failed (each with a one-line reason); the others finished |
| 5 | an internal error (a bug): rerun with `--debug` for the traceback |
| 130 | interrupted (Ctrl-C, SIGINT or SIGTERM): finished runs are kept |

`no baseline`: a regression check of a `--set` variation's runs, trained with settings no baseline
entry was made with. Nothing was compared, so it is no regression (not 1); it is not a doubt
about one either (not 3): a variation without a baseline of its own is a researcher's usual case.
The suite's own runs missing from its baseline stay inconclusive (3), so CI notices.
"""

from __future__ import annotations

from collections.abc import Iterable

OK = 0
FAILED = 1
USAGE = 2
INCONCLUSIVE = 3
RUNS_FAILED = 4
INTERNAL = 5
INTERRUPTED = 130

# The codes of a command that ran to its end (the others cut it short).
COMPLETED = frozenset({OK, FAILED, INCONCLUSIVE, RUNS_FAILED})

# When several outcomes meet (verdicts of a suite, suites of `run --all`), the first of these that
# occurs is the process's code: a failed verdict outranks failed runs, which outrank an
# inconclusive verdict, which outranks a pass.
_PRECEDENCE = (INTERRUPTED, INTERNAL, USAGE, FAILED, RUNS_FAILED, INCONCLUSIVE, OK)


MEANINGS = {
    OK: "every verdict passed", FAILED: "a regression or a failed claim",
    USAGE: "bad input or usage", INCONCLUSIVE: "inconclusive: a verdict the data cannot decide",
    RUNS_FAILED: "some runs failed", INTERNAL: "an internal error", INTERRUPTED: "interrupted",
}
"""Each code in a few words, as the last line of a suite's summary says it (the table above)."""


def described(code: int) -> str:
    """`exit code 3 (inconclusive: a verdict the data cannot decide)`."""
    meaning = MEANINGS.get(code)
    return f"exit code {code}" + (f" ({meaning})" if meaning else "")


def combined(codes: Iterable[int]) -> int:
    """The one code that stands for several outcomes (0 for none)."""
    present = set(codes) or {OK}
    for code in _PRECEDENCE:
        if code in present:
            return code
    unknown = sorted(present - set(_PRECEDENCE))
    raise ValueError(f"unknown exit codes {unknown}")
