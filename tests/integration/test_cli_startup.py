"""What the CLI's own process loads before it answers: input it refuses, a dry run and a suite's
settings are checked without torch, transformers, datasets or scipy (seconds of start-up each), so
bad input is one line in under a second and a finished suite's rerun starts no worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import TINY_SUITE

HEAVY = ("torch", "transformers", "datasets", "scipy")
# The CLI as `factrecall-bench` runs it, then the heavy packages its process had loaded.
PROBE = """
import sys
from factrecall_bench.cli import main
sys.argv = ["factrecall-bench", *sys.argv[1:]]
try:
    main()
except SystemExit as end:
    code = end.code
print("EXIT", code, "LOADED", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def loaded_by(*args: str, cwd) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)
    last = done.stdout.strip().splitlines()[-1].split()
    return int(last[1]), last[3] if len(last) > 3 else ""


@pytest.mark.parametrize("args, exit_code", [
    (["run", "--suite", "no-such-suite"], 2),
    (["run", "--suite", "cpu", "--set", "train.lr=abc"], 2),
    (["run", "--suite", "cpu", "--set", "trace.analyses.what=['magic']"], 2),
    (["run", "--suite", "cpu", "--dry-run"], 0),
    (["run", "--suite", str(TINY_SUITE), "--dry-run", "--json"], 0),
])
def test_refused_input_and_dry_runs_load_no_heavy_package(args, exit_code, tmp_path):
    code, loaded = loaded_by(*args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert (code, loaded) == (exit_code, "")
