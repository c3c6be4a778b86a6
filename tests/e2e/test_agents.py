"""Each supported agent's real CLI under aegis-mcp, against a stand-in model server.

For claude, codex and gemini: the aegis-mcp tools are offered to the model, a tool call
reaches the runner, ``restart_claude`` with a new prompt brings the agent back headless
with its earlier conversation and the new prompt, and the run's exit code is the
agent's. For all four (aider too, which has no MCP client): a pool agent of that type
completes a task through ``agent_spawn`` / ``agent_await``, and a restart continues
aider's chat.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from e2e.agents import require
from e2e.standin import HttpError, Match, Request, Script, Stall, Text, ToolCall
from e2e.standin.script import tool_matches
from helpers import call, mcp_client, runner_socket, start_aegis, tool

# The original's 17 tools (DESIGN.md): every one must reach the model.
ORIGINAL_TOOLS = (
    "restart_claude",
    "server_status",
    "watchdog_status",
    "watchdog_configure",
    "watchdog_disable",
    "watchdog_ping",
    "agent_spawn",
    "agent_list",
    "agent_status",
    "agent_await",
    "agent_stop",
    "agent_pool_stats",
    "agent_file_locks",
    "netmon_status",
    "netmon_log",
    "netmon_namespace_list",
    "netmon_namespace_cleanup",
)

MCP_AGENTS = ["claude", "codex", "gemini"]
HEADLESS = {
    # As root without a sudo user no permission-skipping flag is passed (fact 2):
    # the aegis-mcp tools are allowed by name instead.
    "claude": ["-p", "go", "--allowedTools", "mcp__aegis-mcp"],
    "codex": ["exec", "go"],
    "gemini": ["-p", "go"],
    "aider": ["--message", "go"],
}
# The restarted agent's command line holds these, in this order.
RESUMED = {
    "claude": ["-p", "--continue", "after-restart"],
    "codex": ["exec", "resume", "--last", "after-restart"],
    "gemini": ["--resume", "latest", "-p", "after-restart"],
}
TIMEOUT = 240


def restart_script() -> Script:
    """go -> server_status -> restart_claude(prompt=after-restart); after the restart:
    server_status again (it shows how the agent was restarted), then the answer."""
    restart = ToolCall("restart_claude", {"reason": "e2e", "prompt": "after-restart"})
    resumed_status = Match(after_tool="server_status", anywhere="after-restart")
    return (
        Script()
        .on(resumed_status, Text("resumed fine"), name="resumed done")
        .on(Match(user_says="after-restart"), ToolCall("server_status"), name="resumed")
        .on(Match(user_says="go"), ToolCall("server_status"), name="status")
        .on(Match(after_tool="server_status"), restart, name="restart", times=1)
        .on(Match(after_tool="restart_claude"), Text("restart asked"), name="restart asked")
    )


def tool_json(request: Request, tool_name: str, nth: int = -1) -> dict[str, Any]:
    """The JSON result of ``tool_name`` in ``request``'s conversation (the ``nth`` one)."""
    results = [
        i
        for i in request.conversation.items
        if i.kind == "tool_result" and i.tool.endswith(tool_name)
    ]
    assert results, f"no {tool_name} result in request {request.number}"
    text = results[nth].text
    # Codex puts a "Wall time" header before the tool's text.
    return json.JSONDecoder().raw_decode(text[text.index("{") :])[0]


def contains_in_order(items: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` is a subsequence of ``items``."""
    it = iter(items)
    return all(any(x == w for x in it) for w in wanted)


@pytest.mark.parametrize("name", MCP_AGENTS)
def test_tools_reach_the_runner_and_a_restart_resumes_headless(name, agent_env, standin, workdir):
    server = standin(restart_script())
    proc = start_aegis([name, *HEADLESS[name]], agent_env(name, server), cwd=workdir)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"

    first = server.wait_for(lambda r: r.rule == "status", 1, "with the first prompt")
    missing = [t for t in ORIGINAL_TOOLS if first.conversation.offered(t) is None]
    assert not missing, f"tools not offered to the model: {missing}"

    asked = server.wait_for(lambda r: r.rule == "restart", 1)
    status = tool_json(asked, "server_status")
    assert status["runner"]["pid"] == proc.pid
    assert status["agent"]["restarts"] == 0

    done = server.wait_for(lambda r: r.rule == "resumed done", 1, "after the restart")
    conv = done.conversation
    # The resumed agent's request carries the earlier turn, then the new prompt.
    user_texts = [i.text for i in conv.items if i.role == "user" and i.kind == "text"]
    assert any(t.strip().endswith("go") or t.strip() == "go" for t in user_texts), user_texts
    calls = [n for i in conv.tool_calls() for n in ORIGINAL_TOOLS if tool_matches(i.tool, n)]
    assert contains_in_order(calls, ["server_status", "restart_claude", "server_status"]), calls
    assert "after-restart" in user_texts[-1]
    again = tool_json(done, "server_status")
    agent = again["agent"]
    assert agent["restarts"] == 1 and agent["headless"] is True
    assert contains_in_order(agent["command"], RESUMED[name]), agent["command"]
    assert agent["mcp_injection"] != "off"
    assert "resumed fine" in out


@pytest.mark.parametrize("name", [*MCP_AGENTS, "aider"])
def test_the_exit_code_is_the_agents(name, agent_env, standin, workdir):
    # Every model request fails: the agent gives up with its own exit code.
    server = standin(Script(default=(HttpError(400, "scripted failure"),)))
    env = agent_env(name, server)
    # Aider reports a model error and exits 0; its own usage error exits 2.
    args = [*HEADLESS[name], "--no-such-option"] if name == "aider" else HEADLESS[name]
    direct = subprocess.run(
        [str(require(name)), *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    proc = start_aegis([name, *args], env, cwd=workdir)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert direct.returncode != 0, direct.stderr[-2000:]
    assert proc.returncode == direct.returncode, err[-2000:]


POOL_ANSWER = "pool result 42"
# Aider edits files: its answer is a whole file in its "whole" edit format.
AIDER_EDIT = "hello.txt\n```\nhello from the pool\n```\n"


def allow_aegis_tools(env: dict[str, str]) -> None:
    """Let a claude that runs without --dangerously-skip-permissions (as root: fact 2)
    call the aegis-mcp tools, through its user settings."""
    settings = Path(env["HOME"]) / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"permissions": {"allow": ["mcp__aegis-mcp"]}}))


@pytest.mark.parametrize("name", [*MCP_AGENTS, "aider"])
def test_a_pool_agent_completes_a_task(name, agent_env, standin, workdir, runtime_dir):
    # Under `run -- sleep` (a primary agent that takes no MCP server), an MCP agent in
    # the pool still gets the aegis-mcp tools, and is known to the runner as itself.
    script = Script()
    if name != "aider":
        script.on(Match(user_says="pool task"), ToolCall("server_status"), name="status")
    answer = Text(AIDER_EDIT if name == "aider" else POOL_ANSWER)
    when = Match(user_says="pool task") if name == "aider" else Match(after_tool="server_status")
    server = standin(script.on(when, answer, name="task"))
    env = agent_env(name, server)
    allow_aegis_tools(env)
    proc = start_aegis(
        ["run", "--no-watchdog", "--", "sleep", "600"], env, cwd=workdir, output=False
    )
    try:
        env["AEGIS_MCP_SOCKET"] = str(runner_socket(runtime_dir))
        done = asyncio.run(_spawn_and_await(env, name, workdir))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert done["status"] == "completed", done
    assert done.get("exit_code") == 0, done
    answered = server.wait_for(lambda r: r.rule == "task", 1, "with the pool task")
    if name == "aider":
        assert (workdir / "hello.txt").read_text() == "hello from the pool\n"
        return
    assert POOL_ANSWER in json.dumps(done), done
    caller = tool_json(answered, "server_status")["caller"]
    assert (caller["kind"], caller["agent_id"]) == ("pool", done["agent_id"]), caller


async def _spawn_and_await(env: dict[str, str], name: str, workdir: Path) -> dict[str, Any]:
    async with mcp_client(env) as client:
        spawned = await tool(
            client,
            "agent_spawn",
            {
                "description": "pool task: answer",
                "agent_type": name,
                "working_directory": str(workdir),
            },
        )
        return await tool(
            client, "agent_await", {"agent_id": spawned["agent_id"], "timeout_secs": 180}
        )


def test_aider_restarts_with_its_chat_history(agent_env, standin, workdir, runtime_dir):
    # The first answer never comes: aider is restarted while it waits, with a new
    # prompt; --restore-chat-history brings the first request back.
    script = (
        Script()
        .on(Match(user_says="second task"), Text("second answer"), name="second")
        .on(Match(user_says="first task"), Stall(), name="first")
    )
    server = standin(script)
    proc = start_aegis(
        ["aider", "--message", "first task"], agent_env("aider", server), cwd=workdir
    )
    server.wait_for(lambda r: r.rule == "first", 120, "with the first task")
    call(runner_socket(runtime_dir), "restart", reason="e2e", prompt="second task")
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    second = server.wait_for(lambda r: r.rule == "second", 1)
    user_texts = [i.text for i in second.conversation.items if i.role == "user"]
    assert any("first task" in t for t in user_texts[:-1]), user_texts
    assert "second answer" in out
