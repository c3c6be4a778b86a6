"""MCP injection through an agent's settings files (``mcp_inject = "settings"``).

Gemini CLI takes MCP servers from settings files only. Two ways reach it without
changing any file on disk:

- A runner that is root names its overlay in ``GEMINI_CLI_SYSTEM_DEFAULTS_PATH``:
  the lowest settings layer, merged with the user's and the project's servers, and
  read only when the file and every directory above it are owned by root and not
  writable by group or others (:func:`root_settings_refusal` checks the same).
- Otherwise the hooks library redirects the agent's reads of the user's settings
  file (``~/.gemini/settings.json``, or under ``$GEMINI_CLI_HOME``) to a copy with
  the aegis-mcp server added (:func:`settings_with_servers`). Gemini CLI is node,
  which opens files through libc, so the redirect sees its reads; writes are not
  redirected: a setting the user changes during the session is saved to the real
  file, which then also gets the aegis-mcp entry of this session.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hooks_lib import preload_into

if TYPE_CHECKING:
    from .command import LaunchOptions
    from .profiles import AgentProfile

OVERLAY_TARGET_ENV = "AEGIS_MCP_OVERLAY_TARGET"
"""Tells the hooks library the one file whose reads the overlay stands in for."""


def root_settings_refusal(path: Path) -> str | None:
    """Why an agent that trusts only root-owned settings would skip ``path``
    (None: it would read it)."""
    for part in [path, *path.parents]:
        try:
            st = os.lstat(part)
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return f"{part} is a symbolic link"
        if st.st_uid != 0:
            return f"{part} is not owned by root"
        if st.st_mode & 0o022:
            return f"{part} is writable by group or others"
    return None


def user_settings_file(profile: AgentProfile, env: dict[str, str]) -> Path:
    """The user's settings file of ``profile`` for an agent with environment ``env``."""
    home = env.get(profile.mcp_settings_home_env, "") if profile.mcp_settings_home_env else ""
    home = home or env.get("HOME") or os.path.expanduser("~")
    return Path(profile.mcp_settings_file.replace("{home}", home))


def settings_with_servers(path: Path, servers: dict[str, Any]) -> bytes:
    """The settings in ``path`` (none if missing) with ``servers`` added to
    ``mcpServers``; ValueError if the file is not a JSON object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = "{}"
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise ValueError(f"{path} is not plain JSON (comments?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers", {}), dict):
        raise ValueError(f"{path} does not hold a settings object")
    data["mcpServers"] = {**data.get("mcpServers", {}), **servers}
    return json.dumps(data, indent=2).encode()


def inject_env(profile: AgentProfile, launch: LaunchOptions, env: dict[str, str]) -> None:
    """Add to ``env`` what gives a ``settings`` agent the aegis-mcp server, if the
    run injects one."""
    if profile.mcp_inject != "settings" or launch.mcp_config is None:
        return
    if launch.settings_trusted and profile.mcp_settings_env:
        env[profile.mcp_settings_env] = str(launch.mcp_config)
    elif (
        launch.settings_overlay is not None
        and launch.hooks is not None
        and profile.mcp_settings_file
    ):
        preload_into(env, launch.hooks)
        env["AEGIS_MCP_OVERLAY"] = str(launch.settings_overlay)
        env[OVERLAY_TARGET_ENV] = str(user_settings_file(profile, env))
