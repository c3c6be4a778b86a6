"""Giving a run's agents the runner's MCP server, by the means each agent's profile offers.

The runner writes one overlay config that names its MCP server (``aegis-mcp
--mcp-server`` with the socket in its environment). A ``flag`` profile is
given it on its command line (``--mcp-config FILE``, or the server inline);
a ``preload`` profile gets the hooks library, which redirects its reads of
the project's ``.mcp.json`` to the overlay (the project's own servers plus
aegis-mcp); a ``settings`` profile (gemini) is pointed at the overlay by its
environment, or shown a copy of its settings file with the server added (see
``agents/settings.py``). Nothing on disk of the user's is modified.

Every agent of the run gets the server by its *own* profile's means
(:meth:`McpInjection.launch_for`, :meth:`McpInjection.env_for`): a claude pool
agent its ``--mcp-config`` whatever the primary agent is, even a plain command
(``aegis-mcp run``). The overlay names the socket only; each agent's identity
(``AEGIS_MCP_AGENT_ID`` and its secret ``AEGIS_MCP_AGENT_TOKEN``) reaches its MCP
server through the environment the server inherits (codex is told to pass those
two on by name), never through the overlay or a command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..control.client import AGENT_ID_ENV, SOCKET_ENV, TOKEN_ENV
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
        the primary agent got the server."""
        self._servers: dict[str, Any] | None = None
        """The overlay's servers once written."""
        self._settings: LaunchOptions | None = None
        """The settings agents' launch options, made for the first one."""
        self._said: set[str] = set()

    @property
    def server(self) -> dict[str, Any] | None:
        """The injected server entry (``command``, ``args``, ``env``), once written."""
        return self._servers["aegis-mcp"] if self._servers is not None else None

    def write_overlay(self) -> None:
        """Write the MCP config that names this runner's MCP server, when injecting: for
        the primary agent and for the pool's, whatever the primary agent is."""
        if not self.enabled:
            return
        command, *args = _self_command()
        server = {
            "command": command,
            "args": [*args, "--mcp-server"],
            # No agent's identity: each agent's server inherits its own from its
            # environment (this file is shared by every agent of the run).
            "env": {
                SOCKET_ENV: str(self.socket),
                "AEGIS_MCP_WRAPPER_PID": str(self.runner_pid),
            },
        }
        servers = {"aegis-mcp": server}
        if self.profile.mcp_inject == "preload":
            # The overlay stands in for the project's .mcp.json: keep its servers.
            servers = {**_project_mcp_servers(self.cwd), **servers}
        data = json.dumps({"mcpServers": servers}, indent=2).encode()
        # As root, the overlay stays root's (read by the agent's group): the agents
        # cannot change what their MCP server is. It holds no secret.
        as_root = self.owner is not None and os.geteuid() == 0
        owner, mode = ((0, self.owner[1]), 0o640) if as_root else (self.owner, 0o600)
        try:
            write_atomic(self.overlay, data, mode=mode, owner=owner)
        except OSError as exc:
            # A full or read-only disk costs the injection, not the session.
            self._say(
                f"cannot write the MCP overlay {self.overlay}: {exc.strerror}; "
                "the agent runs without the aegis-mcp MCP server"
            )
            return
        self._servers = servers
        self.launch = self.launch_for(self.profile, self.launch)
        self.mode = self.mode_of(self.profile, self.launch)

    def mode_of(self, profile: AgentProfile, launch: LaunchOptions) -> str:
        """How an agent of ``profile`` launched with ``launch`` gets the server."""
        if self._servers is None:
            return "off"
        if profile.mcp_inject == "settings":
            if launch.settings_trusted:
                return "settings-env"
            return "settings-preload" if launch.settings_overlay is not None else "off"
        if profile.mcp_inject == "preload":
            return "preload" if self.hooks is not None else "off"
        return profile.mcp_inject if profile.mcp_inject == "flag" else "off"

    def launch_for(self, profile: AgentProfile, launch: LaunchOptions) -> LaunchOptions:
        """``launch`` with the server added for an agent of ``profile`` (unchanged when
        its profile takes it through the environment only, or takes none)."""
        if self._servers is None:
            return launch
        if profile.mcp_inject == "flag":
            return dataclasses.replace(launch, mcp_config=self.overlay, mcp_server=self.server)
        if profile.mcp_inject == "settings":
            settings = self._settings_launch(profile)
            return dataclasses.replace(
                launch,
                mcp_config=settings.mcp_config if settings.settings_trusted else self.overlay,
                mcp_server=self.server,
                settings_trusted=settings.settings_trusted,
                settings_overlay=settings.settings_overlay,
                hooks=settings.hooks,
            )
        return launch

    def _settings_launch(self, profile: AgentProfile) -> LaunchOptions:
        """What ``settings`` agents need (agents/settings.py): a root-owned settings file
        they trust, or the copy of the user's settings file with the server added.

        Either names the agent's identity as references (``$AEGIS_MCP_AGENT_TOKEN``) that
        the agent resolves from its own environment when it reads its settings: gemini
        does not pass variables that look like secrets to its MCP servers."""
        if self._settings is not None:
            return self._settings
        assert self._servers is not None
        servers = _with_identity_refs(self._servers)
        launch = dataclasses.replace(self.launch, hooks=self.hooks)
        self._settings = launch
        if os.geteuid() == 0:
            # Root's (read by the agent's group), as gemini trusts only root-owned layers.
            owner, mode = ((0, self.owner[1]), 0o640) if self.owner else (None, 0o600)
            data = json.dumps({"mcpServers": servers}, indent=2).encode()
            try:
                write_atomic(self.settings_overlay, data, mode=mode, owner=owner)
            except OSError as exc:
                self._once(f"cannot write {self.settings_overlay}: {exc.strerror}")
                return launch
            if root_settings_refusal(self.settings_overlay) is None:
                self._settings = dataclasses.replace(
                    launch, settings_trusted=True, mcp_config=self.settings_overlay
                )
                return self._settings
        if self.hooks is None:
            self._once(
                f"cannot inject the aegis-mcp MCP server into {profile.name}: not root and the "
                "hooks library was not found (run `make build`); the agent runs without it"
            )
            return launch
        source = user_settings_file(profile, {**os.environ, **self.user_env})
        try:
            data = settings_with_servers(source, servers)
            write_atomic(self.settings_overlay, data, owner=self.owner)
        except (ValueError, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc
            self._once(f"cannot inject the aegis-mcp MCP server into {profile.name}: {why}")
            return launch
        self._settings = dataclasses.replace(launch, settings_overlay=self.settings_overlay)
        return self._settings

    def env_for(self, profile: AgentProfile, env: dict[str, str]) -> None:
        """Add to ``env`` what an agent of ``profile`` needs in its environment to get
        the server (the hooks' redirect for ``preload``, gemini's variables)."""
        if self._servers is None:
            return
        if profile.mcp_inject == "preload":
            if self.hooks is None:
                self._once(
                    f"cannot inject the aegis-mcp MCP server into {profile.name}: the hooks "
                    "library was not found (run `make build`); the agent runs without it"
                )
                return
            preload_into(env, self.hooks)
            env["AEGIS_MCP_OVERLAY"] = str(self.overlay)
        inject_env(profile, self.launch_for(profile, self.launch), env)

    def _once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._say(message)


def _with_identity_refs(servers: dict[str, Any]) -> dict[str, Any]:
    """``servers`` with the aegis-mcp entry naming the agent's identity variables as
    ``$NAME`` references, for agents whose settings resolve them (gemini)."""
    entry = servers["aegis-mcp"]
    refs = {name: f"${name}" for name in (AGENT_ID_ENV, TOKEN_ENV)}
    return {**servers, "aegis-mcp": {**entry, "env": {**entry["env"], **refs}}}


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
