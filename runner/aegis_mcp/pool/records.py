"""What the pool knows about each background agent, as plain data.

Records hold no process handles or asyncio objects, so that they can be
written to and read back from a database as they are; the manager keeps the
live handles beside them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"
TIMED_OUT = "timed_out"
ORPHANED = "orphaned"
"""Still running, but the pool that started it died: nobody reads its output.
A later pool watches it (by polling) and can still stop it by pid."""
LOST = "lost"
"""Its pool died and then so did it (or it never started): how it ended is unknown."""

FINAL_STATUSES = (COMPLETED, FAILED, STOPPED, TIMED_OUT, LOST)
"""Statuses an agent never leaves."""
ACTIVE_STATUSES = (QUEUED, RUNNING, ORPHANED)
"""Statuses of agents some pool still looks after (or should)."""

DESCRIPTION_PREVIEW_CHARS = 200


@dataclass
class AgentRecord:
    """One background agent, from the request to its result."""

    agent_id: str
    agent_type: str
    description: str
    working_directory: str
    log_file: str
    max_iterations: int | None = None
    timeout_secs: float | None = None
    status: str = QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    result: str | None = None
    error: str | None = None
    output_bytes: int = 0
    last_output: deque[str] = field(default_factory=deque)
    """The last lines of output (bounded by whoever fills it)."""
    pid_started: float | None = None
    """The agent process's start time, so that a reused pid is not taken for it."""
    runner_pid: int | None = None
    """The process hosting the pool that owns the agent (a runner, or an MCP server)."""
    runner_started: float | None = None
    sandbox: str = "none"
    isolation: str = "none"
    worktree: str | None = None
    """With ``isolation="worktree"``: the git worktree the agent works in (kept afterwards)."""
    branch: str | None = None
    base_commit: str | None = None
    changes: dict[str, Any] | None = None
    """What the agent left in its worktree: commits ahead of the base, uncommitted files."""
    note: str | None = None
    """Why an agent is orphaned or lost, and what can still be done about it."""
    spawned_by: str | None = None
    """Who asked for it: ``user``, ``primary`` or the pool agent's id (None: before
    callers were told apart)."""
    depth: int = 1
    """1 for an agent the user or the primary agent spawned, one more per pool agent
    in between."""
    restarts: int = 0
    """Times it was restarted (``restart_claude`` of its own), its conversation continued."""

    @property
    def finished(self) -> bool:
        """Whether the agent reached a final status."""
        return self.status in FINAL_STATUSES

    @property
    def run_secs(self) -> float | None:
        """Seconds it has run (so far, while running); None when it never started."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)


def summary_view(record: AgentRecord) -> dict[str, Any]:
    """The short form used in listings."""
    description = record.description
    if len(description) > DESCRIPTION_PREVIEW_CHARS:
        description = description[:DESCRIPTION_PREVIEW_CHARS] + "…"
    run_secs = record.run_secs
    return {
        "agent_id": record.agent_id,
        "agent_type": record.agent_type,
        "status": record.status,
        "description": description,
        "pid": record.pid,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "run_secs": None if run_secs is None else round(run_secs, 3),
        "exit_code": record.exit_code,
        "runner_pid": record.runner_pid,
        "spawned_by": record.spawned_by,
        "depth": record.depth,
    }


def status_view(record: AgentRecord, queue_position: int | None = None) -> dict[str, Any]:
    """Everything about one agent."""
    view = summary_view(record)
    view.update(
        description=record.description,
        working_directory=record.working_directory,
        max_iterations=record.max_iterations,
        timeout_secs=record.timeout_secs,
        log_file=record.log_file,
        output_bytes=record.output_bytes,
        last_output=list(record.last_output),
        result=record.result,
        error=record.error,
        note=record.note,
        sandbox=record.sandbox,
        isolation=record.isolation,
        restarts=record.restarts,
    )
    if record.isolation == "worktree":
        view.update(
            worktree=record.worktree,
            branch=record.branch,
            base_commit=record.base_commit,
            changes=record.changes,
            worktree_help=(
                f"the worktree is kept: review and merge with `git merge {record.branch}`, "
                f"then remove it with `git worktree remove {record.worktree}` and "
                f"`git branch -D {record.branch}`"
            ),
        )
    if queue_position is not None:
        view["queue_position"] = queue_position
    return view
