"""The installed wheel, used outside the checkout (`tox -e wheel` runs this in a fresh venv).

Usage: python tests/integration/wheel_smoke.py CHECKOUT [SUITE.toml]

Checks that the package is imported from the venv, not the checkout; that it installs no generic
top-level `tui`; that its default baselines are the copies shipped in the wheel (equal to the
checkout's and valid) and `baseline update` refuses to write there; that `accelerate-config`
prints a shipped file; and that a tiny suite runs from an empty folder elsewhere (exit 3: the
suite has no baseline, and the verdict names where it looked: the shipped copy).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import factrecall_bench
from factrecall_bench.resources import SHIPPED_DIR, checkout_root, default_baselines_dir
from factrecall_bench.verdicts.baselines import read_baseline

CLI = [sys.executable, "-m", "factrecall_bench"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                               timeout=900)
    print(f"$ factrecall-bench {' '.join(args)}: exit {completed.returncode}", flush=True)
    return completed


def check_installed_package() -> None:
    package = Path(factrecall_bench.__file__).resolve().parent
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert package == site_packages / "factrecall_bench", f"not imported from the venv: {package}"
    assert checkout_root() is None, checkout_root()
    assert importlib.util.find_spec("tui") is None, "a top-level `tui` module is installed"
    assert importlib.util.find_spec("factrecall_bench.tui") is not None


def check_shipped_baselines(checkout: Path) -> None:
    shipped = default_baselines_dir()
    assert shipped == SHIPPED_DIR / "baselines", shipped
    sources = sorted((checkout / "baselines").glob("*.json"))
    assert sources, "the checkout has no baselines/*.json"
    for source in sources:
        copy = shipped / source.name
        assert copy.read_bytes() == source.read_bytes(), f"{copy} differs from {source}"
        read_baseline(copy, expected_suite=source.stem)


def check_commands(work: Path) -> None:
    printed = cli("accelerate-config", "ddp", cwd=work)
    assert printed.returncode == 0, printed.stderr
    config = Path(printed.stdout.strip())
    assert config.is_file() and config.is_relative_to(SHIPPED_DIR), config
    refused = cli("baseline", "update", "--suite", "cpu", "--runs-dir", str(work / "runs"), cwd=work)
    assert refused.returncode == 2 and "--baselines-dir" in refused.stderr, refused.stderr


def check_tiny_suite(suite: Path, work: Path) -> None:
    completed = cli("run", "--suite", str(suite), "--runs-dir", str(work / "runs"), cwd=work)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert f"no baseline at {SHIPPED_DIR / 'baselines'}" in completed.stdout, completed.stdout
    assert not (work / "baselines").exists()


def main() -> None:
    checkout = Path(sys.argv[1]).resolve()
    suite = Path(sys.argv[2]) if len(sys.argv) > 2 else checkout / "tests/data/suites/tiny.toml"
    check_installed_package()
    check_shipped_baselines(checkout)
    with tempfile.TemporaryDirectory(prefix="factrecall-wheel-") as folder:
        work = Path(folder)
        check_commands(work)
        check_tiny_suite(suite.resolve(), work)
    print("wheel smoke: all checks passed")


if __name__ == "__main__":
    main()
