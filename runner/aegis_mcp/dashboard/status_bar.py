"""The top line: which runner, whether the view is live, paused or waiting, the filter, the time."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from . import format as fmt
from .panel import View, put


class StatusBar(Static):
    """One line across the top of the main screen."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; }
    """

    def show(self, view: View, connection: str, paused: bool) -> None:
        """Draw the bar; ``connection`` says how the runner is reached (or why not)."""
        state = view.state
        runner = state.get("runner") or {}
        agent = state.get("agent") or {}
        left = Text(no_wrap=True, overflow="ellipsis")
        left.append(" aegis-mcp ", style="bold reverse")
        if runner:
            left.append(f" runner {runner.get('pid')} · {agent.get('profile', '?')} · ")
            left.append(fmt.shorten(agent.get("cwd", ""), 40))
        left.append("  ")
        live = connection == "live"
        left.append(
            f" {'● live' if live else connection} ",
            style="bold" if live else "bold reverse",
        )
        if paused:
            left.append("  ")
            left.append(" PAUSED (p) ", style="bold reverse")
        refused = (state.get("authority") or {}).get("refused")
        if refused:
            # Requests the runner refused for who made them (see the log's control.refused).
            left.append("  ")
            left.append(f" {refused} refused ", style="bold reverse")
        if view.filter:
            left.append(f"  filter /{view.filter}", style="italic")
        right = f" {fmt.clock(view.now)} "
        width = self.content_region.width or 80
        pad = max(1, width - left.cell_len - len(right))
        left.append(" " * pad + right)
        put(self, left)
