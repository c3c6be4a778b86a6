"""Giving a run's agents the runner's MCP server, by the means each agent's profile offers.

The runner writes one overlay config that names its MCP server (``aegis-mcp
--mcp-server`` with the socket in its environment). A ``flag`` profile is
given it on its command line (``--mcp-config FILE``, or the server inline);
a ``preload`` profile gets the hooks library, which redirects its reads of
the project's ``.mcp.json`` to the overlay (the project's own servers plus
aegis-mcp). Nothing on disk of the user's is modified. Pool agents share the
overlay and the launch options of the primary agent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..control.client import SOCKET_ENV
from ..files import write_atomic
from ..hooks_lib import HooksInfo, preload_into
from .command import LaunchOptions
from .profiles import AgentProfile


class McpInjection:
    """The MCP injection of one run: its overlay file, its mode, the launch options it sets."""

    def __init__(
        self,
        profile: AgentProfile,
        launch: LaunchOptions,
        *,
        enabled: bool,
        overlay: Path,
        socket: Path,
        runner_pid: int,
        cwd: str,
        hooks: HooksInfo | None,
        owner: tuple[int, int] | None,
        say: Callable[[str], None],
    ) -> None:
        self.profile = profile
        self.enabled = enabled
        self.launch = launch
        """How every agent of the run is launched; the overlay adds the MCP server."""
        self.overlay = overlay
        self.socket = socket
        self.runner_pid = runner_pid
        self.cwd = cwd
        self.hooks = hooks
        self.owner = owner
        self._say = say
        self.mode = "off"
        """``flag``, ``preload`` or ``off``: how the agents got the server."""

    def write_overlay(self) -> None:
        """Write the MCP config that names this runner's MCP server, when injecting."""
        profile = self.profile
        if not self.enabled:
            return
        if profile.mcp_inject == "preload" and self.hooks is None:
            self._say(
                f"cannot inject the aegis-mcp MCP server into {profile.name}: the hooks "
                "library was not found (run `make build`); the agent runs without it"
            )
            return
        command, *args = _self_command()
        server = {
            "command": command,
            "args": [*args, "--mcp-server"],
            # AEGIS_MCP_AGENT_ID is inherited: pool agents share this file.
            "env": {
                SOCKET_ENV: str(self.socket),
                "AEGIS_MCP_WRAPPER_PID": str(self.runner_pid),
            },
        }
        servers = {"aegis-mcp": server}
        if profile.mcp_inject == "preload":
            # The overlay stands in for the project's .mcp.json: keep its servers.
            servers = {**_project_mcp_servers(self.cwd), **servers}
        data = json.dumps({"mcpServers": servers}, indent=2).encode()
        try:
            write_atomic(self.overlay, data, owner=self.owner)
        except OSError as exc:
            # A full or read-only disk costs the injection, not the session.
            self._say(
                f"cannot write the MCP overlay {self.overlay}: {exc.strerror}; "
                "the agent runs without the aegis-mcp MCP server"
            )
            return
        self.mode = profile.mcp_inject
        if self.mode == "flag":
            self.launch = dataclasses.replace(
                self.launch, mcp_config=self.overlay, mcp_server=server
            )

    def agent_env(self, env: dict[str, str]) -> None:
        """Add what a ``preload`` injection needs to an agent's environment."""
        if self.mode == "preload" and self.hooks is not None:
            preload_into(env, self.hooks)
            env["AEGIS_MCP_OVERLAY"] = str(self.overlay)


def _project_mcp_servers(cwd: str) -> dict[str, Any]:
    """Servers of the project's own .mcp.json (none if missing or unreadable)."""
    try:
        data = json.loads((Path(cwd) / ".mcp.json").read_text())
    except (OSError, ValueError):
        return {}
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def _self_command() -> list[str]:
    """How to run this very install of aegis-mcp."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "aegis-mcp" and os.path.isfile(script):
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "aegis_mcp"]
