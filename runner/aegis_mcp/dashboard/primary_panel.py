"""Primary Agent: status, PID, uptime, restarts and why, health and why, last activity."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from . import format as fmt
from .panel import Panel, View, put

MARKED = {"Idle": "IDLE", "Unresponsive": "UNRESPONSIVE", "HighResource": "HIGH RESOURCE"}
"""Health states shown as a mark that stands out without colour (reverse video)."""


class PrimaryPanel(Panel, Static, can_focus=True):
    """The primary agent."""

    SECTIONS = frozenset({"agent", "watchdog", "runner"})
    TIMED = True

    def on_mount(self) -> None:
        self.border_title = "Primary Agent"

    def show(self, view: View) -> None:
        agent: dict[str, Any] = view.state.get("agent") or {}
        watchdog: dict[str, Any] = view.state.get("watchdog") or {}
        health = watchdog.get("state", "?")
        for state in MARKED:
            self.set_class(health == state, f"-{state.lower()}")
        text = Text(no_wrap=True, overflow="ellipsis")
        status = agent.get("status", "?")
        text.append(f"{status.capitalize()}", style="bold")
        text.append(f"  pid {agent.get('pid') or '-'}")
        started = agent.get("started_at")
        uptime = view.now - started if started and agent.get("pid") else None
        text.append(f"  up {fmt.duration(uptime)}")
        text.append(f"  {agent.get('profile', '?')}\n", style="dim")
        text.append("health ")
        mark = MARKED.get(health)
        if mark:
            text.append(f" {mark} ", style="reverse bold")
        else:
            text.append(health, style="bold")
        if not watchdog.get("enabled", True):
            text.append(" (watchdog off)", style="dim")
        text.append(f"  {watchdog.get('reason', '')}\n")
        # As of the runner's last word on it: the stream sends the watchdog every second.
        ago = watchdog.get("last_activity_secs_ago")
        kind = watchdog.get("last_activity_kind") or "-"
        text.append(f"last activity {kind} {fmt.duration(ago)} ago\n")
        history = agent.get("restart_history") or []
        text.append(f"restarts {agent.get('restarts', 0)}")
        if history:
            last = history[-1]
            text.append(f", last {fmt.clock(last.get('ts'))} by {last.get('by', '?')}\n")
            text.append(f"  {last.get('reason', '')}", style="italic")
        put(self, text)
