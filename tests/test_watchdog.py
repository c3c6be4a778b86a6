"""The watchdog against real stand-in agents: quiet, stopped, growing, idle at a prompt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from helpers import (
    AEGIS,
    PtyProcess,
    call,
    mcp_client,
    runner_socket,
    start_aegis,
    tool,
    wait_for,
    wait_reports,
)

FAST = "[watchdog]\nheartbeat_timeout_secs = 1\ncheck_interval_secs = 0.2\n"


def configure(env: dict[str, str], extra: str = "") -> None:
    Path(env["AEGIS_MCP_CONFIG"]).write_text(FAST + extra)


def event_kinds(sock: Path) -> list[dict]:
    return call(sock, "events", limit=500)["events"]


HEADLESS_QUIET = ["demo", "-p", "task", "--output-format", "stream-json", "--scenario", "quiet"]


def test_quiet_headless_agent_is_restarted_with_continue(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "restart"\n')
    proc = start_aegis(HEADLESS_QUIET, aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        reports = wait_reports(report, 2)
        assert not reports[0]["continue"] and reports[1]["continue"]
        assert reports[1]["prompt"] == "task" and reports[1]["headless"]
        status = call(sock, "server_status")
        assert status["agent"]["restart_history"][0]["by"] == "watchdog"
        assert "headless session" in status["agent"]["restart_history"][0]["reason"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_stopped_agent_is_killed(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "kill"\n')
    pty = PtyProcess([*AEGIS, "demo"], aegis_env)
    try:
        pty.read_until("> ")
        agent_pid = wait_reports(report, 1)[0]["pid"]
        os.kill(agent_pid, signal.SIGSTOP)
        assert pty.wait() == 128 + signal.SIGKILL
        assert b"stopped process" in pty.output
        assert not Path(f"/proc/{agent_pid}").exists()
    finally:
        pty.close()


def test_agent_idle_at_its_prompt_is_left_alone(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "kill"\n')
    pty = PtyProcess([*AEGIS, "demo"], aegis_env)
    try:
        pty.read_until("> ")
        sock = runner_socket(runtime_dir)
        # Many heartbeat timeouts pass with the agent silent at its prompt (counted from
        # its last progress: its MCP server's start is file I/O, slow on a loaded machine).
        status = wait_for(
            lambda: (s := call(sock, "watchdog_status"))["last_activity_secs_ago"] >= 5 and s
        )
        assert status["state"] == "Idle" and "waiting for your input since" in status["reason"]
        assert status["recent_actions"] == [] and pty.proc.poll() is None
        # Typed input that gets no answer makes it unresponsive: the demo's
        # `/scenario quiet` command makes it go silent after reading the line.
        pty.write(b"/scenario quiet\r")
        assert pty.wait() == 128 + signal.SIGKILL
        assert b"since the user's last input" in pty.output
    finally:
        pty.close()


def test_memory_growth_triggers_the_action(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "kill"\nmax_memory_mb = 80\n')
    proc = start_aegis(["demo", "--scenario", "say:growing;grow:200:20;quiet"], aegis_env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL
    assert "HighResource" in err and "above the 80 MB limit" in err


def test_backoff_schedule_then_gives_up(aegis_env, report, runtime_dir):
    configure(
        aegis_env,
        'lockup_action = "restart_with_backoff"\nbackoff_initial_secs = 0.2\n'
        "backoff_max_secs = 0.5\nbackoff_max_restarts = 3\n",
    )
    proc = start_aegis(HEADLESS_QUIET, aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        status = wait_for(lambda: (s := call(sock, "watchdog_status"))["gave_up"] and s)
        assert status["backoff_restarts"] == 3
        assert len(wait_reports(report, 4)) == 4
        events = event_kinds(sock)
        delays = [
            e["message"].rsplit(" in ", 1)[1] for e in events if e["kind"] == "watchdog.backoff"
        ]
        assert delays == ["0.2s", "0.4s", "0.5s"]
        assert any(e["kind"] == "watchdog.gave_up" for e in events)
        assert call(sock, "server_status")["agent"]["restarts"] == 3
        assert proc.poll() is None, "giving up must leave the agent running"
        # Re-arming through watchdog_configure clears the give-up.
        rearmed = call(sock, "watchdog_configure", lockup_action="warn")
        assert rearmed["gave_up"] is False and rearmed["config"]["lockup_action"] == "warn"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_notify_and_wait_resumed_by_a_ping_over_mcp(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "notify_and_wait"\n')
    proc = start_aegis(HEADLESS_QUIET, aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        wait_for(lambda: call(sock, "watchdog_status")["waiting_for_ping"])

        async def ping() -> dict:
            env = dict(aegis_env, AEGIS_MCP_SOCKET=str(sock))
            async with mcp_client(env) as client:
                return await tool(client, "watchdog_ping")

        after = asyncio.run(ping())
        assert after["waiting_for_ping"] is False and after["last_activity_kind"] in (
            "ping",
            "tool_call",
        )
        assert len(wait_reports(report, 1)) == 1, "notify_and_wait must not restart"
        kinds = [e["kind"] for e in event_kinds(sock)]
        assert "watchdog.waiting" in kinds
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_warn_action_and_disable(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "warn"\n')
    proc = start_aegis(HEADLESS_QUIET, aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        wait_for(lambda: any(e["kind"] == "watchdog.warn" for e in event_kinds(sock)))
        disabled = call(sock, "watchdog_disable", duration_secs=1)
        assert disabled["enabled"] is False and 0 < disabled["disabled_for_secs"] <= 1
        wait_for(lambda: call(sock, "watchdog_status")["enabled"])
        assert any(e["kind"] == "watchdog.enabled" for e in event_kinds(sock))
        assert len(wait_reports(report, 1)) == 1
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert "Unresponsive" in err


def test_no_watchdog_flag_and_timeout_flag(aegis_env, report, runtime_dir):
    proc = start_aegis(["demo", "--watchdog-timeout=42", "--scenario", "quiet"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        config = call(sock, "watchdog_status")["config"]
        assert config["heartbeat_timeout_secs"] == 42 and config["enabled"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    proc = start_aegis(["demo", "--no-watchdog", "--scenario", "quiet"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        assert call(sock, "watchdog_status")["enabled"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_watchdog_ops_reject_bad_arguments(aegis_env, runtime_dir):
    proc = start_aegis(["run", "--", "sleep", "300"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        from aegis_mcp.control.protocol import ControlError

        for op, args, message in [
            ("watchdog_configure", {"lockup_action": "explode"}, "lockup_action must be one of"),
            ("watchdog_configure", {"heartbeat_timeout_secs": -5}, "between"),
            ("watchdog_configure", {"max_memory_mb": "lots"}, "must be a number"),
            ("watchdog_configure", {"enabled": "yes"}, "true or false"),
            ("watchdog_configure", {"colour": "red"}, "unknown setting"),
            ("watchdog_disable", {"duration_secs": 0}, "between 1 and"),
            ("watchdog_disable", {"duration_secs": True}, "must be a number"),
        ]:
            try:
                call(sock, op, **args)
            except ControlError as exc:
                assert exc.code == "invalid_argument" and message in exc.message, exc.message
            else:
                raise AssertionError(f"{op} {args} was accepted")
        assert json.dumps(call(sock, "watchdog_status"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
