"""Log: the runner's events with their times, newest last, scrollable and filterable."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import RichLog

from . import format as fmt
from .panel import Panel, View

LEVEL_STYLES = {"warning": "yellow", "error": "bold red"}
LEVEL_MARKS = {"info": "", "warning": "! ", "error": "✗ "}
"""A mark per level, so that warnings and errors stand out without colour too."""
HIDDEN_KINDS = frozenset({"control.request"})
"""Every allowed control request is an event (the audit): too many to read here; the
refused ones (``control.refused``) are shown."""


def line(event: dict[str, Any]) -> Text:
    """One event as a log line."""
    level = event.get("level", "info")
    text = Text(no_wrap=True, overflow="ellipsis", style=LEVEL_STYLES.get(level, ""))
    text.append(f"{fmt.clock(event.get('ts'))} {LEVEL_MARKS.get(level, '? ')}")
    text.append(f"{event.get('kind', '?')} ", style="bold")
    text.append(str(event.get("message", "")))
    return text


class LogPanel(Panel, RichLog):
    """The event log; ``j``/``k`` and the arrows scroll it."""

    SECTIONS = frozenset({"events"})
    BINDINGS: ClassVar = [
        Binding("j", "scroll_down", "Down", show=False),
        Binding("k", "scroll_up", "Up", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=2000, wrap=False, markup=False, highlight=False, **kwargs)
        self._drawn: tuple[int, str] = (-1, "")
        """The log generation and filter that the lines written belong to."""
        self._written = 0
        """How many of the model's log entries have been looked at."""

    def on_mount(self) -> None:
        self.border_title = "Log"

    def show(self, view: View) -> None:
        model = view.model
        if (model.log_generation, view.filter) != self._drawn:
            self.clear()
            self._drawn = (model.log_generation, view.filter)
            self._written = model.log_total - len(model.log)
        new = min(model.log_total - self._written, len(model.log))
        if new > 0:
            for event in list(model.log)[-new:]:
                if event.get("kind") in HIDDEN_KINDS:
                    continue
                if view.matches(event.get("kind"), event.get("message"), event.get("level")):
                    self.write(line(event))
        self._written = model.log_total
