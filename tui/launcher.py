"""Start and stop the suite the TUI was asked to launch, as a detached subprocess.

The suite writes its output to a file (never the terminal the TUI draws on) and lives in its own
session, so quitting the TUI leaves it running, by design: whatever ends the TUI (q, Ctrl-C, a
SIGTERM or SIGHUP to it, a closed terminal) never reaches the suite, and a reopened TUI reattaches.
Only an explicit stop ends it: `stop` (the TUI's `s`), or SIGTERM/SIGINT to the pid it shows. The
suite then stops its workers itself and exits 130 (see orchestrate), leaving no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class SuiteLauncher:
    """One launch command; `start`/`stop` toggled by the user."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.command = list(command)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped_by_user = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our terminal's signals and our exit do not reach it
            )
        self.stopped_by_user = False

    def stop(self) -> None:
        """SIGTERM the suite's process group (the runner may have children); does not wait."""
        if self.process is None or not self.running:
            return
        self.stopped_by_user = True
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError, AttributeError):
            self.process.terminate()

    def describe(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is None:
            state = "stopping" if self.stopped_by_user else "running"
            return f"{state} (pid {self.process.pid})"
        return "stopped" if self.stopped_by_user else f"exited (code {code})"
