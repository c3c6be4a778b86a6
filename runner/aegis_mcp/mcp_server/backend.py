"""Where the MCP server's tools are carried out.

Under a runner (``AEGIS_MCP_SOCKET`` set) every call is forwarded to it over
the control socket: the pool, watchdog and netmon live there and survive the
agent's restarts. Without a runner (a manual ``.mcp.json`` entry) the pool
tools run on an in-process pool and the rest explain how to get them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Protocol

from ..control.client import TOKEN_ENV, AsyncControlClient, socket_from_env
from ..control.protocol import POOL_OPS, UNAVAILABLE, ControlError

NO_RUNNER = (
    "this needs the aegis-mcp runner, and this MCP server was started without one "
    "(AEGIS_MCP_SOCKET is not set). Run the agent under the wrapper, e.g. `aegis-mcp claude`, "
    "to get hot reload, the watchdog and network monitoring."
)


class Backend(Protocol):
    """Carries out one operation."""

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """The operation's result, or ControlError."""

    async def close(self) -> None:
        """Release resources (stop in-process agents)."""


class RunnerBackend:
    """Forwards every call to the runner; each one counts as agent activity."""

    def __init__(self, socket_path: Path) -> None:
        self.client = AsyncControlClient(socket_path)

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Forward ``op`` to the runner."""
        return await self.client.call(op, activity=True, **args)

    async def close(self) -> None:
        """Close the connections."""
        await self.client.close()


class LocalBackend:
    """An in-process pool for a server started without a runner."""

    def __init__(self) -> None:
        self._service: Any = None
        self._reaper: Any = None

    def _table(self) -> dict[str, Any]:
        if self._service is None:
            from ..agents.profiles import BUILTIN_PROFILES
            from ..config import ConfigError, load_config
            from ..paths import config_file, state_dir
            from ..pool.errors import PoolUnavailable
            from ..pool.service import open_pool
            from ..privileges import resolve_agent_user
            from ..processes import ChildReaper

            try:
                profiles = load_config(config_file()).profiles
            except ConfigError:
                profiles = dict(BUILTIN_PROFILES)
            reaper = ChildReaper(asyncio.get_running_loop())
            try:
                self._service = open_pool(
                    state_dir(),
                    profiles,
                    reaper,
                    user=resolve_agent_user(keep_root=True),
                    env_for=_local_env,
                    cwd=os.getcwd(),
                )
            except PoolUnavailable as exc:
                reaper.close()
                raise ControlError(UNAVAILABLE, str(exc)) from None
            except BaseException:
                reaper.close()
                raise
            self._reaper = reaper
        return self._service.ops

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Run a pool operation here; anything else needs the runner."""
        if op not in POOL_OPS:
            raise ControlError(UNAVAILABLE, NO_RUNNER)
        return await self._table()[op](args)

    async def close(self) -> None:
        """Stop the in-process agents."""
        if self._service is not None:
            await self._service.shutdown()
            self._service.close()
        if self._reaper is not None:
            self._reaper.close()


def _local_env(agent_id: str) -> dict[str, str]:
    """An in-process pool agent's environment: this server's, with its own id (and no
    token: no runner issued one)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env["AEGIS_MCP_AGENT_ID"] = agent_id
    return env


def make_backend() -> Backend:
    """The runner backend when started under a runner, else the local one."""
    path = socket_from_env()
    return RunnerBackend(path) if path is not None else LocalBackend()
