"""How a process of a launched job leaves (`distributed.leave`): the processes whose command
completed meet and close their process group together; one cut short does not wait."""

from __future__ import annotations

import pytest

from factrecall_bench import distributed


class Left(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FakeState:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def destroy_process_group(self) -> None:
        self.calls.append("destroy")


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """What `leave` did, in order; its os._exit raises `Left` instead of ending pytest."""
    done: list[str] = []

    def exit_(code: int) -> None:
        done.append(f"exit {code}")
        raise Left(code)

    monkeypatch.setattr(distributed, "_has_process_group", lambda: True)
    monkeypatch.setattr(distributed, "_state", lambda: FakeState(done))
    monkeypatch.setattr(distributed, "barrier", lambda: done.append("barrier"))
    monkeypatch.setattr(distributed.os, "_exit", exit_)
    return done


def test_a_completed_command_waits_for_the_others_then_closes_the_group(calls):
    with pytest.raises(Left):
        distributed.leave(3, command_completed=True)
    assert calls == ["barrier", "destroy", "exit 3"]


def test_a_command_cut_short_closes_its_group_without_waiting(calls):
    with pytest.raises(Left):
        distributed.leave(130, command_completed=False)
    assert calls == ["destroy", "exit 130"]


def test_a_peer_that_left_already_does_not_change_the_exit_code(calls, monkeypatch):
    def peer_gone() -> None:
        calls.append("barrier")
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(distributed, "barrier", peer_gone)
    with pytest.raises(Left):
        distributed.leave(0, command_completed=True)
    assert calls == ["barrier", "exit 0"]


def test_without_a_process_group_it_only_exits(calls, monkeypatch):
    monkeypatch.setattr(distributed, "_has_process_group", lambda: False)
    with pytest.raises(Left):
        distributed.leave(2, command_completed=False)
    assert calls == ["exit 2"]
