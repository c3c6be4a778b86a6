"""Agent Pool: the background agents in a table; the selected one's output, result, worktree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from . import format as fmt
from .panel import KeyedTable, Panel, View, put

COLUMNS = (
    ("id", "id", 9),
    ("type", "type", 6),
    ("status", "status", 12),
    ("run", "run", 6),
    ("task", "task", None),
)
TASK_CHARS = 200
STATUS_MARKS = {"running": "▶", "queued": "…", "completed": "✓", "failed": "✗", "stopped": "■"}


def runtime(agent: dict[str, Any], now: float) -> float | None:
    """Seconds the agent has run (so far, while running)."""
    started = agent.get("started_at")
    if started is None:
        return None
    ended = agent.get("ended_at")
    return (ended if ended is not None else now) - started


class AgentDetail(Static):
    """One pool agent: its status, worktree and branch, result, and the tail of its output."""

    def show(self, agent: dict[str, Any] | None, detail: dict[str, Any] | None) -> None:
        """Draw ``agent`` (the state's entry) with ``detail`` (its ``agent_status``)."""
        if agent is None:
            put(self, Text("select an agent (↑/↓) to see its output", style="dim"), layout=True)
            return
        detail = detail or {}
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{agent.get('agent_id')} ", style="bold")
        text.append(f"{agent.get('status', '?')}  exit {agent.get('exit_code', '-')}")
        if detail.get("worktree"):
            text.append(f"  worktree {detail['worktree']}  branch {detail.get('branch', '-')}")
        elif detail.get("working_directory"):
            text.append(f"  in {detail['working_directory']}")
        text.append("\n")
        outcome = detail.get("result") or detail.get("error") or detail.get("note")
        if outcome:
            text.append("result ", style="bold")
            text.append(fmt.shorten(outcome, 500) + "\n")
        lines = agent.get("last_output") or detail.get("last_output") or []
        if not lines:
            text.append("(no output yet)", style="dim")
        for line in lines:
            text.append(f"│ {line}\n")
        put(self, text, layout=True)


class PoolPanel(Panel, Vertical):
    """The pool: a row per agent, the detail of the selected one below."""

    SECTIONS = frozenset({"pool_agents", "pool"})
    MIN_INTERVAL = 0.5
    TIMED = True

    @dataclass
    class Selected(Message):
        """The user moved to agent ``agent_id``: its detail is worth fetching."""

        agent_id: str

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.details: dict[str, dict[str, Any]] = {}
        """``agent_status`` of agents the user looked at, by id (filled by the app)."""
        self._agents: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="pool-table")
        yield AgentDetail(id="pool-detail")

    def on_mount(self) -> None:
        self.border_title = "Agent Pool"

    @property
    def table(self) -> KeyedTable:
        """The table of agents."""
        return self.query_one(KeyedTable)

    @property
    def selected(self) -> str | None:
        """The id of the agent under the cursor."""
        return self.table.selected_key

    def show(self, view: View) -> None:
        self._agents = view.state.get("pool_agents") or {}
        rows = {}
        for agent_id, agent in self._agents.items():
            status = agent.get("status", "?")
            task = agent.get("description", "")
            if not view.matches(agent_id, agent.get("agent_type"), status, task):
                continue
            rows[agent_id] = (
                agent_id,
                agent.get("agent_type", "?"),
                f"{STATUS_MARKS.get(status, '·')} {status}",
                fmt.duration(runtime(agent, view.now)),
                fmt.shorten(task, TASK_CHARS),
            )
        self.table.sync(rows)
        stats = view.state.get("pool") or {}
        if "running" in stats:
            self.subtitle(
                f"{stats['running']} running · {stats.get('queued', 0)} queued · "
                f"{stats.get('total', 0)} in all · max {stats.get('max_agents', '?')}"
            )
        else:
            self.subtitle(stats.get("error", "no agents yet"))
        self.show_detail()

    def show_detail(self) -> None:
        """Redraw the selected agent's detail."""
        key = self.selected or ""
        agent, detail = self._agents.get(key), self.details.get(key)
        self.query_one(AgentDetail).show(agent, detail)
        if agent is not None and detail is not None and detail.get("status") != agent.get("status"):
            # It moved on (finished, say): its result and worktree are worth fetching again.
            self.post_message(self.Selected(key))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.show_detail()
            self.post_message(self.Selected(event.row_key.value))
