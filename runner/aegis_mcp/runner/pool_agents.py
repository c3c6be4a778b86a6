"""Pool agents acting on themselves: their restart, their watchdog, their status, their traffic.

A pool agent's ``restart_claude``, ``watchdog_*``, ``server_status`` and
``netmon_*`` act on that agent, never on the primary one (see
:mod:`aegis_mcp.control.authority`). This module gives the runner's operations
what they act on for a pool agent:

- its restart: the pool stops it and starts it again headless with its
  profile's continue form and the new prompt (``AgentPool.restart``), within a
  start limit of its own (the run's ``[runner] restart_limit_*``), as the
  primary agent's restarts are;
- its watchdog: a :class:`~aegis_mcp.watchdog.monitor.Watchdog` of its own,
  made on its first ``watchdog_*`` call from the run's settings but **off**
  (a background task already has its ``timeout_secs``) until it turns it on
  with ``watchdog_configure(enabled=true)``; then it watches that agent's
  process tree and output, and its actions act on that agent (``restart``: a
  restart as above, ``kill``: the agent is stopped);
- the processes of its tree seen so far, whose traffic is its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..control.protocol import NOT_FOUND, UNAVAILABLE, ControlError
from ..watchdog.config import WatchdogConfig
from ..watchdog.monitor import Watchdog
from ..watchdog.restart_limit import RestartLimit

if TYPE_CHECKING:
    import psutil

    from ..netmon.stats import NetmonStats
    from ..pool import AgentPool

EventSink = Callable[..., object]
MAX_PIDS = 4096
"""Pids remembered per agent (its tree over its life)."""


class PoolAgent:
    """One running pool agent, as its own requests reach it."""

    def __init__(
        self,
        agent_id: str,
        pool: AgentPool,
        events: EventSink,
        stats: Callable[[], NetmonStats | None],
        watchdog_config: WatchdogConfig,
        restart_limit: RestartLimit,
    ) -> None:
        self.agent_id = agent_id
        self._pool = pool
        self._events = events
        self._stats = stats
        self._config = watchdog_config
        self.restart_limit = restart_limit
        """Every restart of this agent passes it, whoever asks (itself, its watchdog)."""
        self._watchdog: Watchdog | None = None
        self._task: asyncio.Task[None] | None = None
        self._pids: set[int] = set()
        self._pid: int | None = None
        """The agent process the watchdog last looked at."""
        self._stops: set[asyncio.Task[Any]] = set()

    # -- restart ---------------------------------------------------------------------

    def restart(self, reason: str, prompt: str | None, by: str, delay: float) -> dict[str, Any]:
        """Restart this agent headless, continuing its conversation with ``prompt``."""
        from ..agents.syntax import PromptNotAccepted
        from ..pool.errors import RestartRefused

        refusal = self.restart_limit.acquire()
        if refusal is not None:
            message = (
                f"not restarting pool agent {self.agent_id} (asked by {by}: {reason}): "
                f"{refusal}; it keeps running"
            )
            self._events("pool.restart_limit", message, "error", agent=self.agent_id)
            raise ControlError(UNAVAILABLE, message)
        try:
            result = self._pool.restart(self.agent_id, reason, prompt, by, delay)
        except RestartRefused as exc:
            raise ControlError(UNAVAILABLE, str(exc)) from None
        except PromptNotAccepted as exc:
            from ..control import validate

            raise validate.invalid(str(exc)) from None
        if self._watchdog is not None:
            self._watchdog.cancel_pending()
        return result

    # -- watchdog --------------------------------------------------------------------

    @property
    def watchdog(self) -> Watchdog:
        """Its own watchdog (made, off, on first use)."""
        if self._watchdog is None:
            self._watchdog = Watchdog(self._config.updated(enabled=False), self, lambda: False)
            self._task = asyncio.get_running_loop().create_task(
                self._watchdog.run(), name=f"pool-watchdog-{self.agent_id}"
            )
        return self._watchdog

    def output(self, data: bytes) -> None:
        """The agent wrote ``data`` (its watchdog counts it, if it has one)."""
        if self._watchdog is not None:
            self._watchdog.output(data)

    def tool_call(self) -> None:
        """The agent made a tool call through the runner: a sign of life."""
        if self._watchdog is not None:
            self._watchdog.activity("tool_call")

    def watchdog_tree(self) -> list[psutil.Process] | None:
        """The agent's process tree (None between two of its processes)."""
        proc = self._pool.process(self.agent_id)
        if proc is None or not proc.running:
            return None
        if proc.pid != self._pid:
            if self._pid is not None and self._watchdog is not None:
                self._watchdog.agent_started()  # restarted: a fresh baseline
            self._pid = proc.pid
        tree = proc.tree()
        self._remember(p.pid for p in tree)
        return tree

    def watchdog_net_received(self, pids: set[int]) -> int | None:
        """What netmon saw these processes receive, when a netmon mode is on."""
        stats = self._stats()
        return stats.received_by(pids) if stats is not None else None

    def watchdog_restart(self, reason: str) -> bool:
        """Restart on the watchdog's behalf."""
        try:
            self.restart(reason, None, "watchdog", 0.0)
        except ControlError:
            return False
        return True

    def watchdog_kill(self, reason: str) -> None:
        """Stop the agent (it ends as ``stopped``)."""
        self.watchdog_event("watchdog.kill", reason, "error")
        task = asyncio.get_running_loop().create_task(self._pool.stop(self.agent_id))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    def watchdog_event(self, kind: str, message: str, level: str) -> None:
        """Record a watchdog event of this agent."""
        self._events(kind, f"pool agent {self.agent_id}: {message}", level, agent=self.agent_id)

    # -- traffic ---------------------------------------------------------------------

    def pids(self) -> set[int]:
        """The processes of its tree seen so far (now included)."""
        proc = self._pool.process(self.agent_id)
        if proc is not None and proc.running:
            # The agent itself even when its tree could not be read (a child that
            # went while it was listed).
            self._remember([proc.pid, *(p.pid for p in proc.tree())])
        return set(self._pids)

    def _remember(self, pids: Any) -> None:
        if len(self._pids) < MAX_PIDS:
            self._pids.update(pids)

    # -- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``agent`` part of this agent's ``server_status``."""
        record = self._pool.record(self.agent_id)
        proc = self._pool.process(self.agent_id)
        now = time.time()
        history = self._pool.restart_history(self.agent_id)
        return {
            "id": self.agent_id,
            "kind": "pool",
            "profile": record.agent_type,
            "command": self._pool.command(self.agent_id),
            "pid": proc.pid if proc is not None and proc.running else None,
            "status": record.status,
            "started_at": record.started_at,
            "uptime_secs": round(now - record.started_at, 1) if record.started_at else None,
            "interactive": False,
            "headless": True,
            "cwd": record.working_directory,
            "spawned_by": record.spawned_by,
            "depth": record.depth,
            "sandbox": record.sandbox,
            "restarts": record.restarts,
            "restart_history": history,
            "restart_limit": self.restart_limit.status(),
        }

    def watchdog_summary(self) -> dict[str, Any]:
        """Its watchdog in ``server_status`` (None-valued until first used)."""
        dog = self._watchdog
        if dog is None:
            return {"enabled": False, "state": None, "made": False}
        return {
            "enabled": dog.enabled,
            "state": dog.state,
            "reason": dog.reason,
            "lockup_action": dog.config.lockup_action,
            "heartbeat_timeout_secs": dog.config.heartbeat_timeout_secs,
        }

    def close(self) -> None:
        """The agent ended: its watchdog stops."""
        if self._task is not None:
            self._task.cancel()
        if self._watchdog is not None:
            self._watchdog.close()


class PoolAgents:
    """The run's running pool agents as they act on themselves, by agent id."""

    def __init__(
        self,
        pool: Callable[[], AgentPool | None],
        events: EventSink,
        stats: Callable[[], NetmonStats | None],
        watchdog_config: WatchdogConfig,
        restart_limit: Callable[[], RestartLimit],
    ) -> None:
        """``restart_limit()`` makes each agent's start limit."""
        self._pool = pool
        self._events = events
        self._stats = stats
        self._config = watchdog_config
        self._restart_limit = restart_limit
        self._agents: dict[str, PoolAgent] = {}

    def get(self, agent_id: str) -> PoolAgent:
        """The pool agent ``agent_id`` of this runner; ControlError when it is not running."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent
        pool = self._pool()
        if pool is None or not pool.owns(agent_id):
            raise ControlError(NOT_FOUND, f"agent {agent_id} is not one of this runner's agents")
        status = pool.record(agent_id).status
        if status != "running":
            raise ControlError(UNAVAILABLE, f"agent {agent_id} is {status}, not running")
        agent = self._agents[agent_id] = PoolAgent(
            agent_id, pool, self._events, self._stats, self._config, self._restart_limit()
        )
        return agent

    def known(self, agent_id: str) -> PoolAgent | None:
        """The agent if one of its requests made it known already."""
        return self._agents.get(agent_id)

    def ended(self, agent_id: str) -> None:
        """``agent_id`` reached a final status."""
        agent = self._agents.pop(agent_id, None)
        if agent is not None:
            agent.close()

    def close(self) -> None:
        """The run ends."""
        for agent_id in list(self._agents):
            self.ended(agent_id)
