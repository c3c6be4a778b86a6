"""No runner is up: how to start one, and the pool's history from its database."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from . import format as fmt

HOW_TO_START = """\
[b]No aegis-mcp runner is running.[/b]

Start an agent under aegis-mcp in another terminal, for example
    [b]aegis-mcp claude[/b]            (or aider, codex, gemini, cursor)
    [b]aegis-mcp demo[/b]              the stand-in agent, to try it out
    [b]aegis-mcp run -- CMD[/b]        any command
This dashboard attaches as soon as one starts.
"""


class WaitingScreen(Screen):
    """Shown while no runner is up."""

    DEFAULT_CSS = """
    WaitingScreen { layout: vertical; }
    WaitingScreen #how { height: auto; padding: 1 2; }
    WaitingScreen #history-box { height: 1fr; border: round $primary-darken-1; padding: 0 1; }
    WaitingScreen #history-note { height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Static(HOW_TO_START, id="how")
        with Vertical(id="history-box"):
            yield Static(id="history-note")
            yield DataTable(id="history", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#history-box").border_title = "Pool history"
        table = self.query_one(DataTable)
        table.add_columns("id", "type", "status", "ended", "run", "task")

    def show(self, history: list[dict[str, Any]], error: str | None) -> None:
        """Draw the pool's history (newest first), or why it cannot be read."""
        note = self.query_one("#history-note", Static)
        table = self.query_one(DataTable)
        table.clear()
        if error:
            note.update(f"the pool's history cannot be read: {error}")
        elif not history:
            note.update("no background agent has run yet")
        else:
            note.update(f"the last {len(history)} background agents, newest first")
        for agent in history:
            table.add_row(
                agent.get("agent_id", "?"),
                agent.get("agent_type", "?"),
                agent.get("status", "?"),
                fmt.clock(agent.get("ended_at")) if agent.get("ended_at") else "-",
                fmt.duration(agent.get("run_secs")),
                fmt.shorten(agent.get("description", ""), 60),
            )
