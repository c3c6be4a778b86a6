"""The shapes of the runner's state: ``server_status``, the snapshot, the subscribe stream.

Read from the run (:class:`RunView`: what the supervisor holds) whenever asked;
nothing here changes the run. The shapes are the schema of
:mod:`aegis_mcp.control.snapshot`, which clients read them with.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..agents.injection import McpInjection
from ..control import authority
from ..control.authority import Caller
from ..control.protocol import PRIMARY_AGENT_ID
from ..control.snapshot import (
    MAX_EVENTS,
    MAX_NETMON_EVENTS,
    SCHEMA_VERSION,
    PoolAgent,
    ServerStatus,
    Snapshot,
)
from ..hooks_lib import HooksInfo
from ..paths import RunnerFiles
from ..processes import AgentProcess
from ..watchdog.monitor import Watchdog
from ..watchdog.restart_limit import RestartLimit
from .audit import RequestAudit
from .confinement import Confinement
from .plan import RunPlan
from .resources import ResourceSampler
from .state import EventLog

if TYPE_CHECKING:
    from ..pool import AgentPool
    from ..pool.service import PoolService
    from .pool_agents import PoolAgent as PoolAgentSelf

TAIL_LINES = 10
"""Output lines of each running pool agent in the state (the pool keeps more)."""


class RunView(Protocol):
    """What the status is made of: the run's parts, as the supervisor holds them."""

    pid: int
    started_at: float
    plan: RunPlan
    files: RunnerFiles
    hooks: HooksInfo | None
    agent: AgentProcess | None
    agent_args: list[str]
    status: str
    exit_code: int | None
    restarts: list[dict[str, Any]]
    restart_limit: RestartLimit
    injection: McpInjection
    watchdog: Watchdog
    confinement: Confinement
    events: EventLog
    pool_service: PoolService | None
    resources: ResourceSampler
    audit: RequestAudit


def caller_view(caller: Caller) -> dict[str, Any]:
    """Who asked, as the runner established it, and what that caller may do (by op)."""
    return {
        **caller.record(),
        "may": {op: authority.grant(op, caller) for op in authority.AUTHORITY},
    }


def _runner_info(run: RunView) -> dict[str, Any]:
    return {
        "pid": run.pid,
        "version": __version__,
        "started_at": run.started_at,
        "uptime_secs": round(time.time() - run.started_at, 1),
        "socket": str(run.files.socket),
        "snapshot": str(run.files.snapshot),
        "event_log": str(run.files.events),
        "hooks_library": str(run.hooks.path) if run.hooks else None,
    }


def pool_agent_status(run: RunView, agent: PoolAgentSelf) -> dict[str, Any]:
    """``server_status`` as a pool agent sees it: the runner, and itself (its command,
    restarts, watchdog and traffic share); not the primary agent."""
    service = run.pool_service
    pool = service.pool if service is not None else None
    mine = [a for a in pool.list() if a.get("spawned_by") == agent.agent_id] if pool else []
    return {
        "schema_version": SCHEMA_VERSION,
        "runner": _runner_info(run),
        "agent": agent.status(),
        "watchdog": agent.watchdog_summary(),
        "pool": {
            "max_agents": pool.max_agents if pool else None,
            "max_spawn_depth": pool.max_depth if pool else None,
            "spawned": [a["agent_id"] for a in mine],
        },
        "netmon": run.confinement.describe_netmon(),
    }


def status_data(run: RunView) -> ServerStatus:
    """The runner's state as ``server_status`` reports it."""
    now = time.time()
    agent = run.agent
    plan = run.plan
    service = run.pool_service
    return {
        "schema_version": SCHEMA_VERSION,
        "runner": _runner_info(run),  # type: ignore[typeddict-item]
        "agent": {
            "id": PRIMARY_AGENT_ID,
            "profile": plan.profile.name,
            "executable": plan.executable,
            "args": run.agent_args,
            "command": agent.spec.command if agent else None,
            "pid": agent.pid if agent and agent.running else None,
            "status": run.status,
            "exit_code": run.exit_code,
            "started_at": agent.started_at if agent else None,
            "uptime_secs": round(now - agent.started_at, 1) if agent and agent.running else None,
            "terminal": "pty" if plan.use_pty else "pipes",
            "interactive": plan.interactive,
            "headless": plan.headless,
            "cwd": plan.cwd,
            "user": {
                "uid": plan.user.uid,
                "name": plan.user.name,
                "dropped_from_root": plan.user.drop,
            },
            "permission_flags": list(plan.profile.permission_args) if plan.skip_permissions else [],
            "mcp_injection": run.injection.mode,
            "restarts": len(run.restarts),
            "restart_history": run.restarts[-20:],
            "restart_limit": run.restart_limit.status(),
        },
        "watchdog": {
            "enabled": run.watchdog.enabled,
            "state": run.watchdog.state,
            "reason": run.watchdog.reason,
            "lockup_action": run.watchdog.config.lockup_action,
            "heartbeat_timeout_secs": run.watchdog.config.heartbeat_timeout_secs,
        },
        "pool": _pool_stats(service.pool) if service is not None else None,
        "netmon": run.confinement.describe_netmon(),
        "sandbox": run.confinement.describe(),
        "authority": run.audit.summary(),  # type: ignore[typeddict-item]
    }


def _pool_stats(pool: AgentPool) -> dict[str, Any]:
    from ..pool.errors import PoolUnavailable

    try:
        return pool.stats()
    except PoolUnavailable as exc:
        # The rest of the state is still worth reporting while the database is locked.
        return {"error": str(exc)}


def snapshot_data(run: RunView) -> Snapshot:
    """The whole state: the snapshot file, and the first message of ``subscribe``."""
    status = status_data(run)
    stats = run.confinement.current_stats()
    pool_agents, locks = _pool_state(run.pool_service)
    return {
        "schema_version": SCHEMA_VERSION,
        "runner": status["runner"],
        "agent": status["agent"],
        # The watchdog in full, over the summary's fields (its action and timeout).
        "watchdog": {**status["watchdog"], **run.watchdog.status()},  # type: ignore[typeddict-item]
        "pool": status["pool"],
        "pool_agents": pool_agents,
        "locks": locks,
        "netmon": status["netmon"],
        "netmon_stats": stats.status() if stats is not None else None,
        "sandbox": status["sandbox"],
        "system": run.resources.section(run.agent),
        "authority": status["authority"],
        "events": list(run.events.recent)[-MAX_EVENTS:],  # type: ignore[typeddict-item]
        "netmon_events": stats.recent(MAX_NETMON_EVENTS) if stats is not None else [],
        "written_at": time.time(),
    }


def _pool_state(service: PoolService | None) -> tuple[dict[str, PoolAgent], list[Any]]:
    """The pool's agents (with the output tails of this runner's) and the file locks."""
    if service is None:
        return {}, []
    from ..pool.errors import PoolError

    pool = service.pool
    try:
        agents: dict[str, PoolAgent] = {a["agent_id"]: a for a in pool.list()}  # type: ignore[misc]
        locks = service.locks.list()
    except PoolError:
        # The database is locked or gone: the stats say so; the rest waits for the next build.
        return {}, []
    for agent_id, entry in agents.items():
        if entry.get("ended_at") is None and entry.get("run_secs") is not None:
            # Whole seconds while it runs: else every rebuild (up to 20 a second under a
            # netmon flood) would send every running agent again for its moving clock.
            entry["run_secs"] = float(int(entry["run_secs"]))
        if entry.get("started_at") is not None and pool.owns(agent_id):
            detail = pool.status(agent_id)
            entry["last_output"] = detail["last_output"][-TAIL_LINES:]
            entry["output_bytes"] = detail["output_bytes"]
    return agents, locks
