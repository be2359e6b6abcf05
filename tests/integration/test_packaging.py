"""The wheel: what it holds, and where an installed copy finds its baselines and accelerate configs.

The wheel is built from a copy of the checkout's files (so a stale build/ folder cannot leak into
it), without build isolation (setuptools from this venv; no download). `tox -e wheel` goes further:
a fresh venv, the wheel's own dependencies, a tiny suite run elsewhere (tests/integration/wheel_smoke.py).
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.resources import (
    SHIPPED_DIR,
    accelerate_config,
    check_writable_baselines_dir,
    checkout_root,
    default_baselines_dir,
)
from tests.conftest import ROOT

REPO = ROOT
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "factrecall_bench", "tui",
                "baselines", "configs")
SHIPPED_FOLDERS = {"baselines": "factrecall_bench/shipped/baselines",
                   "configs/accelerate": "factrecall_bench/shipped/configs/accelerate",
                   "tui": "factrecall_bench/tui",
                   "factrecall_bench/suites": "factrecall_bench/suites",
                   "factrecall_bench/data/pools": "factrecall_bench/data/pools"}


def source_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (path,) = out.glob("factrecall_bench-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder


def dist_info(names: set[str]) -> str:
    (folder,) = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
    return folder


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(wheel_names: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names} - {dist_info(wheel_names)}
    assert tops == {"factrecall_bench"}
    assert not any(name.startswith("tui/") for name in wheel_names)


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_package(wheel_names: set[str]) -> None:
    modules = {path.relative_to(REPO).as_posix() for path in source_files(REPO / "factrecall_bench")
               if path.suffix == ".py"}
    assert modules - wheel_names == set()


@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(SHIPPED_FOLDERS))
def test_the_wheel_ships_the_checkouts_files(folder: str, wheel: Path, wheel_names: set[str]) -> None:
    files = source_files(REPO / folder)
    assert files, folder
    with zipfile.ZipFile(wheel) as archive:
        for path in files:
            name = f"{SHIPPED_FOLDERS[folder]}/{path.relative_to(REPO / folder).as_posix()}"
            assert name in wheel_names, name
            assert archive.read(name) == path.read_bytes(), name


@pytest.mark.slow
def test_the_wheel_carries_the_mit_license(wheel: Path, wheel_names: set[str]) -> None:
    info = dist_info(wheel_names)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
    assert metadata["License-Expression"] == "MIT"
    assert "MIT License" in (REPO / "LICENSE").read_text()


def run_installed(unpacked: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python *args` with the unpacked wheel first on the path, as an installed copy runs."""
    env = {**os.environ, "PYTHONPATH": str(unpacked), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.mark.slow
def test_an_installed_copy_uses_its_shipped_baselines_and_configs(unpacked: Path, tmp_path: Path) -> None:
    shipped = unpacked / "factrecall_bench" / "shipped"
    code = ("from factrecall_bench.resources import checkout_root, default_baselines_dir\n"
            "print(checkout_root(), default_baselines_dir())")
    printed = run_installed(unpacked, tmp_path, "-c", code)
    assert printed.stdout.split() == ["None", str(shipped / "baselines")], printed.stderr
    config = run_installed(unpacked, tmp_path, "-m", "factrecall_bench", "accelerate-config", "fsdp2")
    assert config.returncode == 0, config.stderr
    assert config.stdout.strip() == str(shipped / "configs" / "accelerate" / "fsdp2.yaml")
    assert Path(config.stdout.strip()).is_file()


@pytest.mark.slow
def test_an_installed_copy_never_writes_into_its_shipped_baselines(unpacked: Path, tmp_path: Path) -> None:
    refused = run_installed(unpacked, tmp_path, "-m", "factrecall_bench", "baseline", "update",
                            "--suite", "cpu", "--runs-dir", str(tmp_path / "runs"))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--baselines-dir" in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_a_checkout_uses_its_own_baselines_and_configs_wherever_it_runs_from() -> None:
    assert checkout_root() == REPO
    assert default_baselines_dir() == REPO / "baselines"
    assert accelerate_config("ddp") == REPO / "configs" / "accelerate" / "ddp.yaml"
    check_writable_baselines_dir(REPO / "baselines")  # a developer's update writes here


def test_the_shipped_baselines_are_read_only_and_unknown_configs_are_one_line() -> None:
    with pytest.raises(UserError, match="--baselines-dir"):
        check_writable_baselines_dir(SHIPPED_DIR / "baselines")
    with pytest.raises(UserError, match="ddp, fsdp2"):
        accelerate_config("deepspeed")
