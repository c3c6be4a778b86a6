"""A pool as a host serves it: on the state directory's database, with its locks and op table.

Two hosts make pools: the runner (its agents get the primary agent's user,
environment, MCP injection and sandboxes) and the MCP server started without
a runner (an in-process pool with plain defaults). Both open it here, so that
where the database and the logs live, and how the pool, the locks and their
operations fit together, is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.profiles import AgentProfile
from ..control.protocol import OpHandler
from ..privileges import AgentUser
from ..processes import ChildReaper
from .locks import FileLocks
from .manager import DEFAULT_MAX_DEPTH, STOP_GRACE_SECS, AgentPool, EventSink, LaunchFor
from .ops import pool_ops
from .sandbox import SandboxFor
from .store import PoolStore

LOG_DIR = "pool-logs"


@dataclass
class PoolService:
    """An open pool, its file locks, and the operations that serve both."""

    pool: AgentPool
    locks: FileLocks
    ops: dict[str, OpHandler]

    async def shutdown(self) -> None:
        """Stop the pool's agents; what it knows stays readable until :meth:`close`."""
        await self.pool.shutdown()

    def close(self) -> None:
        """Close the pool's database."""
        self.pool.store.close()


def open_pool(
    state_dir: Path,
    profiles: dict[str, AgentProfile],
    reaper: ChildReaper,
    *,
    user: AgentUser,
    env_for: Callable[[str], dict[str, str]],
    cwd: str,
    max_agents: int | None = None,
    mcp_config: Path | None = None,
    mcp_server: dict[str, Any] | None = None,
    inject_env: Callable[[AgentProfile, dict[str, str]], None] | None = None,
    on_event: EventSink | None = None,
    stop_grace: float = STOP_GRACE_SECS,
    sandbox_for: SandboxFor | None = None,
    worktrees_dir: Path | None = None,
    launch_for: LaunchFor | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    on_output: Callable[[str, bytes], None] | None = None,
) -> PoolService:
    """Open the pool on ``state_dir``'s database; its locks are on paths under ``cwd``.

    Raises PoolUnavailable when the database cannot be used.
    """
    store = PoolStore.open(state_dir)
    log_dir = state_dir / LOG_DIR
    pool = AgentPool(
        profiles,
        reaper,
        max_agents=max_agents,
        user=user,
        env_for=env_for,
        mcp_config=mcp_config,
        mcp_server=mcp_server,
        inject_env=inject_env,
        log_dir=log_dir,
        default_cwd=cwd,
        on_event=on_event,
        stop_grace=stop_grace,
        store=store,
        worktrees_dir=worktrees_dir,
        sandbox_for=sandbox_for,
        launch_for=launch_for,
        max_depth=max_depth,
        on_output=on_output,
    )
    locks = FileLocks(cwd, store)
    return PoolService(pool, locks, pool_ops(pool, locks))
