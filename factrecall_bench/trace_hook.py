"""Glue between a run and the gradient trace: what `run_one` calls after evaluation."""

from __future__ import annotations

from typing import Any

from factrecall_bench.config import RunConfig
from factrecall_bench.runner import RunHook


def trace_hook_for(config: RunConfig) -> RunHook | None:
    if not config.trace.get("enabled", False):
        return None
    return None
