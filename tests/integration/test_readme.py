"""Every `factrecall-bench` command the README shows parses (its subcommand and every flag exist,
a shipped suite it names exists), and every TOML block is valid and, where it is a suite or a
fragment of one, loads. The README's own recipe is run by tests/integration/test_readme_recipe.py; the
set-up commands by .ci/run itself (its command is the README's: checked here)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer

from factrecall_bench.cli import app
from factrecall_bench.suite import load_suite, parse_suite, shipped_suites
from tests.conftest import ROOT

README = "\n".join((ROOT / name).read_text("utf-8")
                   for name in ("README.md", "docs/gpu.md", "docs/cluster.md"))
"""The README and the pages its GPU and cluster sections moved to: their commands and TOML blocks
are checked alike."""
PLACEHOLDERS = re.compile(r"^[A-Z][A-Z_]*$|^[A-Z]\.[A-Z]=[A-Z]$")


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", README, re.S | re.M)


def _command_texts() -> list[str]:
    """The text from `factrecall-bench` on, of every inline code span and shell line that runs
    it; usage patterns (`[--jobs N]`, `NAME|PATH`) are the CLI table's, not commands."""
    spans = re.findall(r"`([^`\n]*factrecall-bench [^`\n]*)`", README)
    lines = [line for block in _code_blocks("bash")
             for line in re.sub(r"\\\n\s*", " ", block).splitlines()
             if "factrecall-bench " in line and not line.lstrip().startswith("#")]
    commands = []
    for text in spans + lines:
        if "[" in text or "|" in text.split("factrecall-bench", 1)[1].split(">")[0]:
            continue
        tail = text.split("factrecall-bench ", 1)[1]
        tail = re.split(r"\s(?:>|&&|\|\||;|2>)\s?|\)", tail)[0]
        commands.append(tail.strip())
    return sorted(set(commands))


COMMANDS = _command_texts()


def test_the_readme_shows_the_commands_a_user_walks():
    for expected in ("run --suite cpu", "run --all", "check --suite cpu", "tui runs",
                     "analyze RUN_DIR", "baseline update --suite cpu"):
        assert expected in COMMANDS


def _without_quiet(command: str) -> str:
    return " ".join(word for word in command.split() if word != "-q")


def test_ci_runs_the_readme_test_command():
    """.ci/run is the README's set-up step 2 (pip's -q aside): what CI passes is what a user runs."""
    (setup,) = [block for block in _code_blocks("bash") if "this is .ci/run" in block]
    readme_command = setup.split("this is .ci/run)\n", 1)[1].splitlines()[0]
    ci_lines = (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
    (ci_command,) = [line for line in ci_lines if "tox -e" in line and not line.startswith("#")]
    assert _without_quiet(ci_command) == _without_quiet(readme_command)
    assert readme_command.endswith("tox -e py,regression")


def _resolve(args: list[str]) -> tuple[Any, list[str]]:
    """The leaf command and its own arguments: subcommand names are taken off the front, group by
    group (the group options the README uses come before them)."""
    command: Any = typer.main.get_command(app)
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])  # typer may bring its own click: no isinstance
        if sub is None:
            raise LookupError(f"no subcommand {rest[0]!r}")
        command, rest = sub, rest[1:]
    return command, rest


def _unknown_flags(command: Any, args: list[str]) -> list[str]:
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return [arg.split("=")[0] for arg in args
            if arg.startswith("-") and arg.split("=")[0] not in known | {"--help"}]


@pytest.mark.parametrize("text", COMMANDS)
def test_each_readme_command_parses(text: str):
    args = shlex.split(text)
    command, own = _resolve(args)
    assert _unknown_flags(command, own) == []
    if "--suite" in args:
        suite = args[args.index("--suite") + 1]
        if not PLACEHOLDERS.match(suite) and not suite.endswith(".toml"):  # a file the user wrote
            assert suite in shipped_suites(), suite


def test_a_misspelled_flag_or_command_would_be_caught():
    command, own = _resolve(["run", "--suit", "cpu", "--jobs", "2"])
    assert _unknown_flags(command, own) == ["--suit"]
    with pytest.raises(LookupError):
        _resolve(["runn", "--suite", "cpu"])


@pytest.mark.parametrize("block", _code_blocks("toml"))
def test_each_readme_toml_block_loads(block: str, tmp_path: Path):
    raw = tomllib.loads(block)
    if "name" in raw:  # a whole suite, loaded from a file as `--suite FILE` loads it
        (tmp_path / "readme.toml").write_text(block)
        load_suite(str(tmp_path / "readme.toml"))
        return
    # A fragment: the cpu suite with it added loads (e.g. the sensitivity suite's variants)
    base = tomllib.loads(Path(shipped_suites()["cpu"]).read_text("utf-8"))
    parse_suite({**base, **raw}, "README fragment")
