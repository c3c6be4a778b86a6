"""Codex CLI and an MCP server that is slow to start: `codex exec` starts its first turn
without waiting for MCP servers unless the server entry says ``required = true``, which
the codex profile's injection arguments do. Checked with the real CLI and the real
aegis-mcp server, started a few seconds late (without the override, the model's first
request lacks its tools: checked by hand with the profile's last ``-c`` pair removed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aegis_mcp.agents.command import LaunchOptions, build_argv
from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from e2e.agents import require
from e2e.standin import Match, Script, Text
from e2e.test_agents import TIMEOUT
from helpers import AEGIS

# Well past the second or so that `codex exec` gives its MCP servers by itself.
DELAY_SECS = 4


def test_codex_waits_for_a_slow_aegis_mcp_server(agent_env, standin, workdir):
    server = standin(Script().on(Match(user_says="go"), Text("answered"), name="go"))
    env = agent_env("codex", server)
    slow = {
        "command": "sh",
        "args": ["-c", f'sleep {DELAY_SECS}; exec "$@"', "sh", *AEGIS, "--mcp-server"],
        "env": {},
    }
    # Codex takes the server inline; the overlay path only turns the injection on.
    launch = LaunchOptions(str(require("codex")), Path("overlay.json"), True, slow)
    argv = build_argv(BUILTIN_PROFILES["codex"], launch, ["exec", "--skip-git-repo-check", "go"])
    done = subprocess.run(
        argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first = server.wait_for(lambda r: r.rule == "go", 1, "with the prompt")
    assert first.conversation.offered("server_status"), first.conversation.tools
    assert "answered" in done.stdout
