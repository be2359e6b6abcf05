"""A suite file as a table: where a suite's name or path points (the shipped suites, or a .toml
file), its TOML read, and what it `extends` merged in. suite.py turns the table into a Suite."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from factrecall_bench.errors import UserError


def shipped_suites() -> dict[str, Path]:
    folder = resources.files("factrecall_bench").joinpath("suites")
    return {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir()
            if str(entry).endswith(".toml")}


def find_suite(name_or_path: str) -> Path:
    shipped = shipped_suites()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    if path.suffix == ".toml":
        why = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"suite file {name_or_path} {why}")
    raise UserError(f"unknown suite {name_or_path!r} (shipped: {', '.join(sorted(shipped))}; "
                    "or a path to a .toml file)")


def suite_table(path: Path, extending: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The suite file's table, with what it `extends` merged in (see `extended`)."""
    raw = read_suite_toml(path)
    if "extends" not in raw:
        return raw
    parent_path = parent_suite_path(raw.pop("extends"), path)
    chain = (*extending, path.resolve())
    if parent_path.resolve() in chain:
        raise UserError(f"{path}: extends {parent_path} which extends it back (a cycle: "
                        f"{' -> '.join(p.name for p in (*chain, parent_path))})")
    return extended(suite_table(parent_path, chain), raw)


NOT_INHERITED = ("name", "description", "ci", "claims")
"""What a suite never takes from the suite it extends: its name and description, being run by
`run --all` (`ci`), and the claims (a suite's claims are its own question)."""


def extended(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`extends = "cpu"`: the parent's keys (less NOT_INHERITED) with the child's over them; a
    table (`[data]`, `[train]`, `[custom_strategies]`, ...) is merged key by key, anything else
    (`strategies`, `seeds`, `[[claims]]`, `[[variants]]`) is replaced whole."""
    merged = {key: copy.deepcopy(value) for key, value in parent.items()
              if key not in NOT_INHERITED}
    for key, value in child.items():
        table = merged.get(key)
        merged[key] = {**table, **value} if isinstance(table, dict) and isinstance(
            value, dict) else value
    return merged


def parent_suite_path(parent: Any, child: Path) -> Path:
    """A shipped suite's name, or a .toml path relative to the extending file's folder."""
    if not isinstance(parent, str) or not parent:
        raise UserError(f"{child}: extends must name a suite (\"cpu\") or a .toml file, got "
                        f"{parent!r}")
    if parent in shipped_suites():
        return shipped_suites()[parent]
    path = child.parent / parent
    if path.suffix == ".toml" and path.is_file():
        return path
    raise UserError(f"{child}: extends {parent!r}, which is neither a shipped suite "
                    f"({', '.join(sorted(shipped_suites()))}) nor a .toml file in {child.parent}")


def read_suite_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read suite {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"suite {path} is not valid TOML: {error}") from error
