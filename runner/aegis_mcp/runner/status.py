"""The shapes of the runner's state: ``server_status`` and the snapshot.

Read from the run (:class:`RunView`: what the supervisor holds) whenever asked;
nothing here changes the run. The shapes are documented in
:mod:`aegis_mcp.control.snapshot`, which clients read them with.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..agents.injection import McpInjection
from ..control.protocol import PRIMARY_AGENT_ID
from ..hooks_lib import HooksInfo
from ..paths import RunnerFiles
from ..processes import AgentProcess
from ..watchdog.monitor import Watchdog
from .confinement import Confinement
from .plan import RunPlan
from .state import EventLog

if TYPE_CHECKING:
    from ..pool import AgentPool


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
    injection: McpInjection
    watchdog: Watchdog
    confinement: Confinement
    events: EventLog
    pool: AgentPool | None


def status_data(run: RunView) -> dict[str, Any]:
    """The runner's state as ``server_status`` reports it."""
    now = time.time()
    agent = run.agent
    plan = run.plan
    return {
        "runner": {
            "pid": run.pid,
            "version": __version__,
            "started_at": run.started_at,
            "uptime_secs": round(now - run.started_at, 1),
            "socket": str(run.files.socket),
            "snapshot": str(run.files.snapshot),
            "event_log": str(run.files.events),
            "hooks_library": str(run.hooks.path) if run.hooks else None,
        },
        "agent": {
            "id": PRIMARY_AGENT_ID,
            "profile": plan.profile.name,
            "executable": plan.executable,
            "args": run.agent_args,
            "command": agent.spec.argv if agent else None,
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
        },
        "watchdog": {
            "enabled": run.watchdog.enabled,
            "state": run.watchdog.state,
            "reason": run.watchdog.reason,
            "lockup_action": run.watchdog.config.lockup_action,
            "heartbeat_timeout_secs": run.watchdog.config.heartbeat_timeout_secs,
        },
        "pool": _pool_stats(run.pool) if run.pool is not None else None,
        "netmon": run.confinement.describe_netmon(),
        "sandbox": run.confinement.describe(),
    }


def _pool_stats(pool: AgentPool) -> dict[str, Any]:
    from ..pool.errors import PoolUnavailable

    try:
        return pool.stats()
    except PoolUnavailable as exc:
        # The rest of the state is still worth reporting while the database is locked.
        return {"error": str(exc)}


def snapshot_data(run: RunView) -> dict[str, Any]:
    """What the snapshot file holds: the status plus the watchdog and recent events."""
    data = status_data(run)
    data["watchdog"] = run.watchdog.status()
    data["events"] = list(run.events.recent)[-50:]
    data["written_at"] = time.time()
    return data
