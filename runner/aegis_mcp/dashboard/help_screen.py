"""The keys, on ``h`` or ``?``."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = """\
[b]aegis-mcp dashboard[/b]: the runner's state, pushed as it changes.

  q, Esc        quit (Esc first closes a dialog or the filter)
  h, ?          this help
  Tab, S-Tab    next / previous panel
  j, k, ↑, ↓    scroll the log; move in a table
  z             show the focused panel alone (again: all panels)
  /             filter the log, the pool, the locks and the network lists
  r             restart the primary agent (asks first; keeps its conversation)
  s             stop the pool agent under the cursor (asks first)
  w             turn the watchdog off or on
  p             pause the live view (the state keeps arriving)

When the agent becomes [reverse] IDLE [/reverse] (waiting for you) or
[reverse] UNRESPONSIVE [/reverse], the Primary Agent panel is marked and the
terminal bell rings: set [b]\\[dashboard] notify[/b] to "bell", "none" or
"command" (with notify_command) in the config file.
"""


class HelpScreen(ModalScreen[None]):
    """Any of Esc, q, h or ? closes it."""

    BINDINGS: ClassVar = [Binding("escape,q,h,question_mark", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 84; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; padding: 0 1; background: $surface;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(KEYS)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).border_title = "Help"
