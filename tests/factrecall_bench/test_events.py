"""events.py: the log tail the TUI and the CLI's progress read an events.jsonl through."""

from __future__ import annotations

from pathlib import Path

from factrecall_bench.events import LogTail


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_log_tail_keeps_a_partial_line_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    tail = LogTail(path)
    assert tail.read_lines() == ([(1, '{"a": 1}')], False)
    assert tail.read_lines() == ([], False)
    append(path, '2}\n{"c": 3}\n')
    assert tail.read_lines() == ([(2, '{"b": 2}'), (3, '{"c": 3}')], False)


def test_log_tail_starts_over_when_the_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n')
    tail = LogTail(path)
    tail.read_lines()
    path.write_text('{"c": 3}\n')
    assert tail.read_lines() == ([(1, '{"c": 3}')], True)
