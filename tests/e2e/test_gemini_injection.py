"""How the aegis-mcp server reaches the real Gemini CLI, which reads MCP servers from
settings files only, without any file on disk being changed.

As root: the runner's root-owned overlay, named by ``GEMINI_CLI_SYSTEM_DEFAULTS_PATH``.
As a plain user: the hooks library shows gemini (node, which reads files through libc)
a copy of the user's settings with the server added. In both, the user's own servers
stay and the user's settings file is left as it was.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from e2e.standin import Match, Script, Text, ToolCall
from e2e.test_agents import TIMEOUT, tool_json
from helpers import AEGIS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (and a user to become)")

USER_SERVER = {"command": "true", "args": []}


def _script() -> Script:
    return (
        Script()
        .on(Match(user_says="go"), ToolCall("server_status"), name="status")
        .on(Match(after_tool="server_status"), Text("status seen"), name="seen")
    )


def _user_settings(env: dict[str, str]) -> Path:
    """Give the user's settings a server of their own; returns the file."""
    path = Path(env["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json"
    data = json.loads(path.read_text())
    data["mcpServers"] = {"users-own": USER_SERVER}
    path.write_text(json.dumps(data))
    return path


def _check(server, settings: Path, before: bytes, how: str) -> None:
    seen = server.wait_for(lambda r: r.rule == "seen", 1, "after server_status")
    first = server.wait_for(lambda r: r.rule == "status", 1)
    assert first.conversation.offered("restart_claude"), first.conversation.tools
    assert tool_json(seen, "server_status")["agent"]["mcp_injection"] == how
    assert settings.read_bytes() == before


def test_as_root_through_the_system_defaults_file(agent_env, standin, workdir):
    server = standin(_script())
    env = agent_env("gemini", server)
    settings = _user_settings(env)
    before = settings.read_bytes()
    # Gemini reads that file only if root owns it and every directory above it.
    runtime = Path(tempfile.mkdtemp(prefix="aegis-e2e-", dir="/run"))
    env["AEGIS_MCP_RUNTIME_DIR"] = str(runtime / "run")
    try:
        proc = subprocess.run(
            [*AEGIS, "gemini", "-p", "go"],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(server, settings, before, "settings-env")


def test_as_a_plain_user_through_the_hooks_overlay(agent_env, standin, throwaway_user, tmp_path):
    user, _group = throwaway_user
    entry = pwd.getpwnam(user)
    server = standin(_script())
    home = Path(entry.pw_dir)
    env = agent_env("gemini", server, home=home / "gemini-home")
    settings = _user_settings(env)
    work = home / "work"
    work.mkdir()
    env.update(
        HOME=str(home),
        USER=user,
        AEGIS_MCP_RUNTIME_DIR=str(home / "run"),
        AEGIS_MCP_STATE_DIR=str(home / "state"),
        AEGIS_MCP_CONFIG=str(home / "config.toml"),
    )
    subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(home)], check=True)
    before = settings.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "aegis_mcp", "gemini", "-p", "go"],
        env=env,
        cwd=work,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(server, settings, before, "settings-preload")
