"""A worker imports this module as it unpickles its task, before `_child_main` runs: there the
module writes the signals the worker has blocked at that moment to $FACTRECALL_TEST_MASK_FILE (the
parent, whose pid is $FACTRECALL_TEST_PARENT_PID, writes nothing)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

if str(os.getpid()) != os.environ["FACTRECALL_TEST_PARENT_PID"]:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    Path(os.environ["FACTRECALL_TEST_MASK_FILE"]).write_text(" ".join(sorted(s.name for s in blocked)))


def same(task: int) -> int:
    return task
