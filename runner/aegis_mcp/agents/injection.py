"""Giving a run's agents the runner's MCP server, by the means each agent's profile offers.

The runner writes one overlay config that names its MCP server (``aegis-mcp
--mcp-server`` with the socket in its environment). A ``flag`` profile is
given it on its command line (``--mcp-config FILE``, or the server inline);
a ``preload`` profile gets the hooks library, which redirects its reads of
the project's ``.mcp.json`` to the overlay (the project's own servers plus
aegis-mcp); a ``settings`` profile (gemini) is pointed at the overlay by its
environment, or shown a copy of its settings file with the server added (see
``agents/settings.py``). Nothing on disk of the user's is modified. Pool agents
share the overlay and the launch options of the primary agent.
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
from .settings import inject_env, root_settings_refusal, settings_with_servers, user_settings_file


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
        settings_overlay: Path,
        user_env: dict[str, str],
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
        self.settings_overlay = settings_overlay
        self.user_env = user_env
        """The agent user's environment (HOME, ...) when it is not the runner's."""
        self.mode = "off"
        """``flag``, ``preload``, ``settings-env``, ``settings-preload`` or ``off``: how
        the agents got the server."""

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
        # As root, the overlay stays root's (read by the agent's group): agents that
        # trust only root-owned settings files (gemini) can then be pointed at it.
        as_root = self.owner is not None and os.geteuid() == 0
        owner, mode = ((0, self.owner[1]), 0o640) if as_root else (self.owner, 0o600)
        try:
            write_atomic(self.overlay, data, mode=mode, owner=owner)
            launch = self._settings_launch(servers)
        except OSError as exc:
            # A full or read-only disk costs the injection, not the session.
            self._say(
                f"cannot write the MCP overlay {self.overlay}: {exc.strerror}; "
                "the agent runs without the aegis-mcp MCP server"
            )
            return
        if profile.mcp_inject == "settings":
            if not (launch.settings_trusted or launch.settings_overlay):
                return
            # Which of the two ways (agents/settings.py) this run takes.
            self.mode = "settings-env" if launch.settings_trusted else "settings-preload"
        else:
            self.mode = profile.mcp_inject
        if profile.mcp_inject in ("flag", "settings"):
            self.launch = dataclasses.replace(launch, mcp_config=self.overlay, mcp_server=server)

    def _settings_launch(self, servers: dict[str, Any]) -> LaunchOptions:
        """``self.launch`` with what ``settings`` agents need (agents/settings.py)."""
        trusted = os.geteuid() == 0 and root_settings_refusal(self.overlay) is None
        launch = dataclasses.replace(self.launch, settings_trusted=trusted, hooks=self.hooks)
        profile = self.profile
        if trusted or profile.mcp_inject != "settings":
            return launch
        if self.hooks is None:
            self._say(
                f"cannot inject the aegis-mcp MCP server into {profile.name}: not root and the "
                "hooks library was not found (run `make build`); the agent runs without it"
            )
            return launch
        source = user_settings_file(profile, {**os.environ, **self.user_env})
        try:
            data = settings_with_servers(source, servers)
        except ValueError as exc:
            self._say(f"cannot inject the aegis-mcp MCP server into {profile.name}: {exc}")
            return launch
        write_atomic(self.settings_overlay, data, owner=self.owner)
        return dataclasses.replace(launch, settings_overlay=self.settings_overlay)

    def agent_env(self, env: dict[str, str]) -> None:
        """Add what the primary agent's injection needs to its environment."""
        if self.mode == "preload" and self.hooks is not None:
            preload_into(env, self.hooks)
            env["AEGIS_MCP_OVERLAY"] = str(self.overlay)
        self.pool_agent_env(self.profile, env)

    def pool_agent_env(self, profile: AgentProfile, env: dict[str, str]) -> None:
        """Add what an agent of ``profile`` that takes the server through its
        environment (gemini) needs."""
        inject_env(profile, self.launch, env)


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
