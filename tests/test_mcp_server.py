"""The MCP server through the real protocol: every tool under a runner, and without one."""

from __future__ import annotations

import asyncio
import subprocess
import time

from helpers import (
    AEGIS,
    call,
    mcp_client,
    runner_socket,
    start_aegis,
    tool,
    tool_error,
    wait_for,
    wait_reports,
)

ORIGINAL_TOOLS = {
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
}


def test_every_tool_under_a_runner(aegis_env, report, runtime_dir, tmp_path):
    runner = start_aegis(
        ["demo", "--no-inject-mcp", "--scenario", "quiet", "hello"],
        aegis_env,
        cwd=tmp_path,
        output=False,
    )
    try:
        sock = runner_socket(runtime_dir)
        wait_reports(report, 1)
        env = dict(aegis_env, AEGIS_MCP_SOCKET=str(sock))
        asyncio.run(_exercise_tools(env, sock, report, tmp_path))
    finally:
        runner.terminate()
        runner.wait(timeout=30)


async def _exercise_tools(env, sock, report, tmp_path) -> None:
    async with mcp_client(env) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names >= ORIGINAL_TOOLS
        assert {"restart_agent", "file_lock_acquire", "file_lock_release"} <= names
        for t in (await client.list_tools()).tools:
            assert len(t.description or "") > 40, f"{t.name} needs a real description"

        status = await tool(client, "server_status")
        assert status["runner"]["pid"] and status["agent"]["profile"] == "demo"

        wd = await tool(client, "watchdog_status")
        # The tool call itself is a sign of life.
        assert wd["last_activity_kind"] == "tool_call" and wd["state"] in ("Active", "Idle")
        changed = await tool(
            client,
            "watchdog_configure",
            {"heartbeat_timeout_secs": 120, "lockup_action": "warn", "max_memory_mb": 4096},
        )
        assert changed["config"]["heartbeat_timeout_secs"] == 120
        assert changed["config"]["lockup_action"] == "warn"
        assert call(sock, "watchdog_status")["config"]["max_memory_mb"] == 4096
        disabled = await tool(client, "watchdog_disable", {"duration_secs": 60})
        assert disabled["enabled"] is False
        assert (await tool(client, "watchdog_configure", {"enabled": True}))["enabled"] is True
        assert (await tool(client, "watchdog_ping"))["last_activity_kind"] in ("ping", "tool_call")

        spawned = await tool(
            client,
            "agent_spawn",
            {
                "description": "/scenario say:pool-done",
                "agent_type": "demo",
                "working_directory": str(tmp_path),
            },
        )
        agent_id = spawned["agent_id"]
        done = await tool(client, "agent_await", {"agent_id": agent_id, "timeout_secs": 60})
        assert done["status"] == "completed", done
        listed = await tool(client, "agent_list")
        assert agent_id in str(listed)
        assert (await tool(client, "agent_status", {"agent_id": agent_id}))["status"] == "completed"
        stats = await tool(client, "agent_pool_stats")
        assert stats["completed"] >= 1
        slow = await tool(
            client,
            "agent_spawn",
            {
                "description": "/scenario quiet",
                "agent_type": "demo",
                "working_directory": str(tmp_path),
            },
        )
        stopped = await tool(client, "agent_stop", {"agent_id": slow["agent_id"]})
        assert stopped["status"] == "stopped"

        target = tmp_path / "shared.txt"
        target.write_text("x")
        locked = await tool(client, "file_lock_acquire", {"path": str(target), "ttl_secs": 30})
        assert locked["path"].endswith("shared.txt")
        locks = await tool(client, "agent_file_locks")
        assert "shared.txt" in str(locks)
        await tool(client, "file_lock_release", {"path": str(target)})
        assert "shared.txt" not in str(await tool(client, "agent_file_locks"))

        netmon = await tool(client, "netmon_status")
        assert netmon["enabled"] is False and "--netmon" in str(netmon)
        assert "events" in await tool(client, "netmon_log", {"count": 5})
        assert "namespaces" in await tool(client, "netmon_namespace_list")

        restarted = await tool(client, "restart_claude", {"reason": "mcp test", "prompt": "again"})
        assert restarted["restarting"] is True
    second = wait_reports(report, 2)[1]
    assert second["continue"] and second["prompt"] == "again"
    history = wait_for(lambda: call(sock, "server_status")["agent"]["restart_history"])
    assert history[0]["by"] == "restart_claude" and history[0]["reason"] == "mcp test"


def test_bad_arguments_are_tool_errors(aegis_env, runtime_dir):
    runner = start_aegis(["run", "--no-watchdog", "--", "sleep", "300"], aegis_env, output=False)
    try:
        sock = runner_socket(runtime_dir)
        env = dict(aegis_env, AEGIS_MCP_SOCKET=str(sock))
        asyncio.run(_bad_arguments(env))
        # Still serving after all that.
        assert call(sock, "hello")["runner_pid"] == runner.pid
    finally:
        runner.terminate()
        runner.wait(timeout=30)


async def _bad_arguments(env) -> None:
    cases = [
        ("restart_claude", {"reason": 5}, "reason"),
        ("restart_claude", {"prompt": "x" * 100_001}, "prompt"),
        ("restart_agent", {"prompt": "new"}, "takes no prompt"),
        ("watchdog_configure", {"lockup_action": "explode"}, "lockup_action"),
        ("watchdog_configure", {"heartbeat_timeout_secs": -1}, "heartbeat_timeout_secs"),
        ("watchdog_configure", {"max_memory_mb": "lots"}, "max_memory_mb"),
        ("watchdog_configure", {"enabled": "perhaps"}, "enabled"),
        ("watchdog_disable", {"duration_secs": 0}, "duration_secs"),
        ("watchdog_disable", {"duration_secs": 10**9}, "duration_secs"),
        ("agent_spawn", {"description": ""}, "description"),
        ("agent_spawn", {"description": "x", "agent_type": "nonesuch"}, "nonesuch"),
        (
            "agent_spawn",
            {"description": "x", "agent_type": "demo", "max_iterations": 0},
            "max_iterations",
        ),
        (
            "agent_spawn",
            {"description": "x", "agent_type": "demo", "working_directory": "/nonexistent/dir"},
            "working_directory",
        ),
        ("agent_status", {"agent_id": "nope"}, "nope"),
        ("agent_await", {"agent_id": "nope"}, "nope"),
        ("agent_await", {"agent_id": "nope", "timeout_secs": -1}, "timeout_secs"),
        ("agent_stop", {"agent_id": "nope"}, "nope"),
        ("agent_status", {}, "agent_id"),
        ("file_lock_acquire", {"path": "/etc/passwd"}, "outside"),
        ("file_lock_acquire", {"path": "x", "ttl_secs": 0}, "ttl_secs"),
        ("file_lock_release", {"path": ""}, "path"),
        ("netmon_log", {"count": 0}, "count"),
        ("netmon_log", {"count": "many"}, "count"),
        # Strict models: nothing coerced, no unknown names, strings kept as sent.
        ("netmon_log", {"count": True}, "count: Input should be a valid integer, got true"),
        ("netmon_log", {"count": "123"}, 'count: Input should be a valid integer, got "123"'),
        ("netmon_log", {"count": 5.0}, "count: Input should be a valid integer"),
        ("watchdog_disable", {"duration_secs": True}, "duration_secs: Input should be"),
        ("watchdog_configure", {"enabled": 1}, "enabled: Input should be a valid boolean"),
        ("server_status", {"verbose": True}, "unknown argument 'verbose' (it takes no"),
        ("agent_status", {"agent_id": "x", "id": 1}, "unknown argument 'id' (it takes agent_id)"),
        ("restart_claude", {"prompt": "null"}, "takes no prompt"),
        ("restart_claude", {"reason": " "}, "reason must not be empty"),
    ]
    async with mcp_client(env) as client:
        for name, args, needle in cases:
            message = await tool_error(client, name, args)
            assert needle in message, f"{name}{args}: {message}"


def test_without_a_runner_pool_works_and_the_rest_explains(aegis_env, tmp_path):
    env = dict(aegis_env)
    env.pop("AEGIS_MCP_SOCKET", None)

    async def exercise() -> None:
        async with mcp_client(env) as client:
            for name in ("server_status", "restart_claude", "watchdog_status", "netmon_status"):
                message = await tool_error(client, name)
                assert "aegis-mcp claude" in message and "AEGIS_MCP_SOCKET" in message
            spawned = await tool(
                client,
                "agent_spawn",
                {
                    "description": "/scenario say:local",
                    "agent_type": "demo",
                    "working_directory": str(tmp_path),
                },
            )
            done = await tool(
                client, "agent_await", {"agent_id": spawned["agent_id"], "timeout_secs": 60}
            )
            assert done["status"] == "completed"
            assert (await tool(client, "agent_pool_stats"))["completed"] == 1

    asyncio.run(exercise())


def test_server_writes_only_protocol_to_stdout(aegis_env):
    init = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
        '"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n'
    )
    proc = subprocess.run(
        [*AEGIS, "--mcp-server"],
        input=init + "not json at all\n",
        env=aegis_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines and all(line.startswith('{"') and '"jsonrpc"' in line for line in lines)
    assert proc.returncode == 0


def test_agent_calls_restart_through_the_injected_server(aegis_env, report, runtime_dir):
    # The stand-in agent talks MCP to the server the runner injected with --mcp-config,
    # exactly as Claude Code would; its first prompt asks for the restart.
    scenario = '/scenario tool:restart_claude:{"reason":"from the agent","prompt":"hi again"}'
    runner = start_aegis(["demo", "--no-watchdog", scenario], aegis_env, output=False)
    try:
        first, second = wait_reports(report, 2, timeout=60)[:2]
        assert any(a.startswith("--mcp-config") for a in first["argv"])
        assert "aegis-mcp" in first["mcp_servers"]
        assert second["continue"] and second["prompt"] == "hi again"
        sock = runner_socket(runtime_dir)
        history = call(sock, "server_status")["agent"]["restart_history"]
        assert history[0]["reason"] == "from the agent"
        time.sleep(0.5)
        assert len(wait_reports(report, 2)) == 2, "the restart must not loop"
    finally:
        runner.terminate()
        runner.wait(timeout=30)
