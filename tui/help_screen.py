"""The help screen: the keys, and that the TUI only reads the runs folder."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
The TUI only reads the runs folder: quitting never stops a run.

 q         quit (a suite started with s keeps running)
 1-6, tab  switch view: runs curves results verdicts trace details
 up/down   select a run (in runs, curves, trace and details);
           scroll the results; move through the verdicts
 pgup/pgdn scroll the view; home/end: its top/bottom
 enter     open the selected run's details
 /         filter runs by strategy, model or status (esc clears)
 s         start/stop the suite given with --suite
 r         re-read the runs folder now
 ?, esc    close this help
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static(HELP_TEXT, id="help-text", markup=False)
