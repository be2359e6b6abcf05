"""A suite file as a table: where a suite's name or path points (the shipped suites, or a .toml
file), its TOML read, what it `extends` merged in, and `--set` overrides applied (with the
variation's name). suite.py turns the table into a Suite."""

from __future__ import annotations

import copy
import hashlib
import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from factrecall_bench.errors import UserError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,63}$")
"""Suite and variant names become folder names: no separators, no `..`, nothing hidden."""



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


# --- `--set` overrides: a variation of the suite ----------------------------------------------


OVERRIDABLE_TABLES = ("data", "model", "train", "eval", "trace", "regression")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`TABLE.KEY=VALUE` sets a key of a base table, `KEY=VALUE` a top-level key (`seeds=[0,1]`);
    VALUE is read as TOML (`3e-4`, `true`, `[0, 1]`), a bare word as a string. The result is
    validated like the suite file itself. A key that a variant also sets is refused: the
    variant's value would silently win."""
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path) or len(path) > 2 or (
                len(path) == 2 and path[0] not in OVERRIDABLE_TABLES):
            raise UserError(f"--set {item!r}: expected TABLE.KEY=VALUE (TABLE one of "
                            f"{', '.join(OVERRIDABLE_TABLES)}) or KEY=VALUE, e.g. "
                            "train.stage2_lr=3e-4")
        if len(path) == 1:
            result[path[0]] = _toml_value(text)
            continue
        table, name = path
        if not isinstance(result.setdefault(table, {}), dict):
            raise UserError(f"--set {item!r}: {table} is not a table in this suite")
        _refuse_shadowed_override(result, table, name, item)
        result[table][name] = _toml_value(text)
    return result


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def _refuse_shadowed_override(raw: dict[str, Any], table: str, name: str, item: str) -> None:
    grid = raw.get("grid")
    if isinstance(grid, dict) and f"{table}.{name}" in grid:
        raise UserError(f"--set {item!r}: every variant of the suite's grid sets {table}.{name} "
                        "itself (the grid crosses it), so the override would not reach its runs")
    for variant in raw.get("variants", []):
        if isinstance(variant, dict) and name in (variant.get(table) or {}):
            raise UserError(f"--set {item!r}: variant {variant.get('name')!r} sets {table}.{name} "
                            "itself, so the override would not reach its runs")


def default_variation_name(suite_name: str, overrides: Sequence[str]) -> str:
    """`cpu+train.stage2_lr=3e-4`: the suite's name and its overrides, other characters as `_`;
    a name too long for a folder is cut and ends in a digest of the overrides."""
    text = "+".join([suite_name, *(item.replace(" ", "") for item in overrides)])
    name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", text).replace("..", "_")
    if len(name) <= 64:
        return name
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return f"{name[:55]}-{digest}"


RESERVED_FOLDERS = ("data",)
"""Names under the runs folder that are not a suite's (the cached datasets)."""


def check_variation_name(name: str, suite_name: str) -> None:
    """A variation's name becomes a folder beside the suite's: safe, and never the suite's own or
    another shipped suite's (its report would be overwritten)."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise UserError(f"--name {name!r}: must be 1 to 64 letters, digits and _.=+- (it names a "
                        "folder inside the runs folder)")
    if name == suite_name or name in shipped_suites() or name in RESERVED_FOLDERS:
        raise UserError(f"--name {name!r} is a suite's own folder: a variation's report never "
                        "replaces a suite's; choose another name")
