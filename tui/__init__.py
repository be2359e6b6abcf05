"""The factrecall-bench terminal UI: follows a runs folder; it only reads the runs' files."""

from factrecall_bench.tui.app import FactRecallApp, run_app

__all__ = ["FactRecallApp", "run_app"]
