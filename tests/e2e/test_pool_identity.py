"""A real Claude Code as a pool agent under a runner whose primary agent is the demo agent
(the set-up of issue 17): its tools act on itself, and on nothing it may not touch.

Its ``restart_claude`` restarts that pool agent, headless with ``--continue`` and the new
prompt, with its conversation; the primary agent's command line never carries that
prompt. Its ``agent_stop`` of an agent it did not spawn and its ``agent_spawn`` beyond
the spawn depth limit are refused and logged; its ``watchdog_disable`` pauses its own
watchdog, not the primary agent's. A real Claude Code whose MCP server was handed the
primary agent's id without its token is refused everything it asks.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from e2e.agents import require
from e2e.standin import Match, Script, Text, ToolCall
from e2e.standin.script import tool_matches
from e2e.test_agents import TIMEOUT, allow_aegis_tools, contains_in_order, tool_json
from helpers import AEGIS, call, read_report, runner_socket, start_aegis

TOOLS = ("agent_stop", "agent_spawn", "watchdog_disable", "restart_claude", "server_status")


def pool_script() -> Script:
    """pool task -> agent_stop(the other agent) -> agent_spawn -> watchdog_disable ->
    restart_claude(prompt=after-restart); after the restart: server_status, the answer."""
    other = {"$ref": r"other=([0-9a-f]+)"}
    restart = ToolCall("restart_claude", {"reason": "e2e", "prompt": "after-restart"})
    return (
        Script()
        .on(
            Match(after_tool="server_status", anywhere="after-restart"),
            Text("resumed fine"),
            name="done",
        )
        .on(Match(user_says="after-restart"), ToolCall("server_status"), name="resumed")
        .on(Match(user_says="pool task"), ToolCall("agent_stop", {"agent_id": other}), name="stop")
        .on(
            Match(after_tool="agent_stop"),
            ToolCall("agent_spawn", {"description": "deeper", "agent_type": "demo"}),
            name="spawn",
        )
        .on(
            Match(after_tool="agent_spawn"),
            ToolCall("watchdog_disable", {"duration_secs": 600}),
            name="disable",
        )
        .on(Match(after_tool="watchdog_disable"), restart, name="restart", times=1)
        .on(Match(after_tool="restart_claude"), Text("restart asked"), name="asked")
    )


def test_a_claude_pool_agent_restarts_itself_not_the_primary(
    agent_env, standin, workdir, runtime_dir, report, tmp_path
):
    server = standin(pool_script())
    env = agent_env("claude", server)
    allow_aegis_tools(env)
    proc = start_aegis(["demo", "--scenario", "quiet"], env, cwd=workdir, output=False)
    try:
        sock = runner_socket(runtime_dir)
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        other = call(
            sock,
            "agent_spawn",
            description="/scenario quiet",
            agent_type="demo",
            working_directory=str(other_dir),
        )
        # Agents the user spawns are at depth 1: with a limit of 1, theirs may not spawn.
        assert call(sock, "agent_pool_configure", max_spawn_depth=1)["max_spawn_depth"] == 1
        spawned = call(
            sock,
            "agent_spawn",
            description=f"pool task: other={other['agent_id']}",
            agent_type="claude",
            working_directory=str(workdir),
        )
        done = call(sock, "agent_await", agent_id=spawned["agent_id"], timeout_secs=TIMEOUT)
        primary = call(sock, "server_status")
        primary_watchdog = call(sock, "watchdog_status")
        other_now = call(sock, "agent_status", agent_id=other["agent_id"])
        events = call(sock, "events", limit=500)["events"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert done["status"] == "completed" and done["restarts"] == 1, done
    assert "resumed fine" in json.dumps(done)

    final = server.wait_for(lambda r: r.rule == "done", 1, "after the pool agent's restart")
    conv = final.conversation
    # The resumed request carries the pool agent's earlier turns, then the new prompt.
    user_texts = [i.text for i in conv.items if i.role == "user" and i.kind == "text"]
    assert any("pool task" in t for t in user_texts[:-1]), user_texts
    assert "after-restart" in user_texts[-1]
    calls = [n for i in conv.tool_calls() for n in TOOLS if tool_matches(i.tool, n)]
    assert contains_in_order(calls, list(TOOLS)), calls
    refused = next(i for i in conv.items if i.kind == "tool_result" and "agent_stop" in i.tool)
    assert f"may not stop agent {other['agent_id']}, which it did not spawn" in refused.text
    deeper = next(i for i in conv.items if i.kind == "tool_result" and "agent_spawn" in i.tool)
    assert "it runs at depth 1 and the pool's spawn depth limit is 1" in deeper.text
    own_watchdog = tool_json(final, "watchdog_disable")
    assert own_watchdog["disabled_for_secs"] > 500 and not own_watchdog["configured_enabled"]
    itself = tool_json(final, "server_status")
    assert itself["caller"] == {**itself["caller"], "kind": "pool", "agent_id": done["agent_id"]}
    agent = itself["agent"]
    assert agent["id"] == done["agent_id"] and agent["restarts"] == 1
    # Resumed by the session id it was started with (claude's --session-id), not the
    # latest conversation of the directory.
    assert contains_in_order(agent["command"], ["-p", "--resume", "after-restart"])
    session = agent["command"][agent["command"].index("--resume") + 1]
    kept = list(Path(env["HOME"]).glob(".claude/projects/*/*.jsonl"))
    assert [f.stem for f in kept] == [session], kept

    # The primary agent: never restarted, never given the prompt, its watchdog untouched.
    assert primary["agent"]["restarts"] == 0
    assert "after-restart" not in json.dumps(primary["agent"]["command"])
    assert len(read_report(report)) == 1
    assert primary_watchdog["enabled"] and primary_watchdog["disabled_for_secs"] is None
    assert other_now["status"] == "running"
    # Refused and logged with who asked.
    assert primary["authority"]["refused_by"] == {f"pool agent {done['agent_id']}": 2}
    refusals = [e for e in events if e["kind"] == "control.refused"]
    assert [(e["op"], e["who"]["agent_id"]) for e in refusals] == [
        ("agent_stop", done["agent_id"]),
        ("agent_spawn", done["agent_id"]),
    ]


def forged_script() -> Script:
    """go -> watchdog_disable -> restart_claude(prompt=forged-prompt) -> the answer."""
    restart = ToolCall("restart_claude", {"reason": "forged", "prompt": "forged-prompt"})
    return (
        Script()
        .on(Match(after_tool="restart_claude"), Text("forged done"), name="done")
        .on(Match(after_tool="watchdog_disable"), restart, name="restart")
        .on(Match(user_says="go"), ToolCall("watchdog_disable", {"duration_secs": 600}))
    )


def test_a_claude_with_the_primary_agents_id_but_not_its_token_is_refused(
    agent_env, standin, workdir, runtime_dir
):
    server = standin(forged_script())
    env = agent_env("claude", server)
    allow_aegis_tools(env)
    proc = start_aegis(["demo", "--scenario", "quiet"], env, cwd=workdir, output=False)
    try:
        sock = runner_socket(runtime_dir)
        # A Claude Code of the user's, outside the run, whose aegis-mcp server is handed
        # the runner's socket and the primary agent's id: a label, not the identity.
        forged = dict(env, AEGIS_MCP_SOCKET=str(sock), AEGIS_MCP_AGENT_ID="primary")
        forged.pop("AEGIS_MCP_AGENT_TOKEN", None)
        config = {
            "mcpServers": {"aegis-mcp": {"command": AEGIS[0], "args": [*AEGIS[1:], "mcp-server"]}}
        }
        # --mcp-config takes several values: nothing positional after it (fact 1).
        argv = ["-p", "go", "--allowedTools", "mcp__aegis-mcp", "--mcp-config", json.dumps(config)]
        claude = subprocess.run(
            [str(require("claude")), *argv],
            env=forged,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        primary = call(sock, "server_status")
        watchdog = call(sock, "watchdog_status")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert claude.returncode == 0 and "forged done" in claude.stdout, claude.stderr[-2000:]
    final = server.wait_for(lambda r: r.rule == "done", 1, "after both tool calls")
    results = {i.tool: i.text for i in final.conversation.items if i.kind == "tool_result"}
    assert len(results) == 2, results
    assert all("label, not an identity" in text for text in results.values()), results
    # The primary agent: not restarted, not handed the prompt, its watchdog on.
    assert primary["agent"]["restarts"] == 0
    assert "forged-prompt" not in json.dumps(primary["agent"]["command"])
    assert watchdog["enabled"] and watchdog["disabled_for_secs"] is None
    refusals = primary["authority"]["recent_refusals"]
    assert [(r["op"], r["who"]["kind"], r["who"].get("claimed")) for r in refusals] == [
        ("watchdog_disable", "unproven", "primary"),
        ("restart", "unproven", "primary"),
    ]
