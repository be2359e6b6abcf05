"""Exit codes: how several runs' and verdicts' codes combine, and an unknown one named
(written for a survivor of mutation testing, docs/mutation.md)."""

from __future__ import annotations

import pytest

from factrecall_bench import exit_codes


def test_unknown_exit_codes_are_named():
    with pytest.raises(ValueError, match=r"unknown exit codes \[7, 9\]"):
        exit_codes.combined([9, 7])


def test_a_code_is_described_with_its_meaning_and_an_unknown_one_bare():
    assert exit_codes.described(3) == "exit code 3 (inconclusive: a verdict the data cannot decide)"
    assert exit_codes.described(130) == "exit code 130 (interrupted)"
    assert exit_codes.described(42) == "exit code 42"


@pytest.mark.parametrize(("code", "completed"), [(0, True), (1, True), (3, True), (4, True),
                                                 (2, False), (5, False), (130, False)])
def test_a_command_ran_to_its_end_unless_input_a_bug_or_an_interrupt_cut_it_short(code, completed):
    """What the processes of a launched job wait for each other on (distributed.leave): a failed
    verdict or failed runs still mean every process reached the end of the command."""
    assert (code in exit_codes.COMPLETED) is completed
