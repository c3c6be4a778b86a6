"""Progress versus noise, with the stand-in agent imitating Claude Code in a real PTY (and in
tmux where the terminal matters): idle at its prompt with background I/O, a streamed
reply, a spinner over a stalled model, and the restart limit that stops a restart loop."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from aegis_mcp.demo.model import StandInModel
from helpers import (
    AEGIS,
    PtyProcess,
    Tmux,
    call,
    gone,
    read_report,
    runner_socket,
    wait_for,
    wait_reports,
)

TIMEOUT = 1.0
CHECK_SECS = 0.2
FAST = (
    "[runner]\nstop_grace_secs = 0.5\n"
    f"[watchdog]\nheartbeat_timeout_secs = {TIMEOUT}\ncheck_interval_secs = {CHECK_SECS}\n"
)


def configure(env: dict[str, str], extra: str = "") -> None:
    Path(env["AEGIS_MCP_CONFIG"]).write_text(FAST + extra)


def status(sock: Path) -> dict:
    return call(sock, "watchdog_status")


def statuses_while(pty: PtyProcess, sock: Path, until: str) -> list[dict]:
    """watchdog_status, every check or so, until ``until`` shows on the terminal."""
    seen = []
    deadline = time.monotonic() + 30
    while not re.search(until.encode(), pty.output):
        assert time.monotonic() < deadline, f"no {until!r} in {pty.output[-500:]!r}"
        seen.append(status(sock))
        pty.drain()
        time.sleep(0.1)
    return seen


def settled(pty: PtyProcess, runtime_dir: Path) -> Path:
    """Wait until the agent's MCP server has started and gone quiet: it answers the agent
    before it imports the MCP SDK, and that import is file I/O, which counts; returns the
    runner's socket."""
    pty.read_until(r"connected \(\d+ tools\)\r\n> ")
    sock = runner_socket(runtime_dir)
    checks = status(sock)["checks"]
    wait_for(lambda: status(sock)["checks"] >= checks + 2)
    # Then two checks in a row that saw the tree's file I/O below the floor.
    quiet = 0
    while quiet < 2:
        before = status(sock)["checks"]
        wait_for(lambda before=before: status(sock)["checks"] > before)
        io = status(sock)["signals"]["io"]
        quiet = quiet + 1 if io["chars_last_check"] / CHECK_SECS < io["floor_bytes_per_sec"] else 0
    return sock


def test_idle_at_the_prompt_with_background_io_is_idle_and_left_alone(
    aegis_env, report, runtime_dir
):
    configure(aegis_env, 'lockup_action = "restart"\n')
    pty = PtyProcess([*AEGIS, "demo", "--scenario", "background-io:0.1"], aegis_env)
    try:
        pty.read_until("> ")
        sock = runner_socket(runtime_dir)
        # Five heartbeat timeouts with nothing but the agent's own trickle of I/O.
        idle = wait_for(
            lambda: (s := status(sock))["last_activity_secs_ago"] >= 5 * TIMEOUT and s,
            what="five quiet timeouts",
        )
        assert idle["state"] == "Idle", idle["reason"]
        assert re.match(r"waiting for your input since \d\d:\d\d, at its prompt$", idle["reason"])
        assert idle["recent_actions"] == [] and len(read_report(report)) == 1
        io = idle["signals"]["io"]
        assert io["chars_last_check"] > 0, "the trickle is there, seen and not counted"
        assert io["background_bytes_per_sec"] < io["floor_bytes_per_sec"]
        screen = idle["signals"]["screen"]
        assert screen["prompt_visible"] and screen["cursor_line"] == ">"
        assert screen["busy_line"] is None
    finally:
        pty.close()


def test_streamed_reply_is_active_throughout(aegis_env, report, runtime_dir):
    configure(aegis_env, 'lockup_action = "kill"\n')
    words = " ".join(f"w{i}" for i in range(24))
    pty = PtyProcess([*AEGIS, "demo"], aegis_env)
    try:
        sock = settled(pty, runtime_dir)
        # 24 words over 4.8 s: each pause is far below the timeout, the whole reply is not.
        pty.write(f"/scenario stream:4.8:{words}\r".encode())
        # (The typed line echoes the words too: the reply starts a line of its own.)
        pty.read_until(r"\nw0 w1")
        seen = statuses_while(pty, sock, r"w23\r\n> ")
        assert len(seen) >= 20
        assert {s["state"] for s in seen} == {"Active"}, [s["reason"] for s in seen]
        assert {s["last_activity_kind"] for s in seen} == {"screen"}
        assert pty.proc.poll() is None and len(read_report(report)) == 1
    finally:
        pty.close()


def test_tokens_received_but_not_yet_shown_are_progress(aegis_env, report, runtime_dir):
    """The model streams one long line: the screen shows only the spinner and its token
    counter (noise); the bytes on the connection keep the agent Active."""
    configure(aegis_env, 'lockup_action = "kill"\n')
    with StandInModel(lines=16, pause=0.3, end=" ") as model:
        pty = PtyProcess([*AEGIS, "demo"], aegis_env)
        try:
            sock = settled(pty, runtime_dir)
            prompt = "x" * 200
            pty.write(f"/scenario ask:127.0.0.1:{model.port}:{prompt}\r".encode())
            pty.read_until("Thinking")
            seen = statuses_while(pty, sock, "reply 16 of 16")
            assert {s["state"] for s in seen} == {"Active"}, [s["reason"] for s in seen]
            kinds = [s["last_activity_kind"] for s in seen]
            assert kinds.count("network") >= len(kinds) // 2, kinds
            conns = [c for s in seen for c in s["signals"]["network"]["recent_connections"]]
            assert any(c["remote"] == f"127.0.0.1:{model.port}" for c in conns)
            assert pty.proc.poll() is None
        finally:
            pty.close()


@pytest.mark.parametrize(
    ("case", "stall_after", "expected"),
    [
        ("spinner", None, r"stalled \d+s: the screen shows only its spinner \(. Thinking… \("),
        ("model never answers", 0, r"model stream stalled \d+s: 127\.0\.0\.1:\d+ got a request"),
        ("model stops mid-stream", 2, r"model stream stalled \d+s: nothing from 127\.0\.0\.1:\d+"),
    ],
)
def test_stall_behind_a_spinner_is_restarted_with_continue(
    aegis_env, report, runtime_dir, case, stall_after, expected
):
    configure(aegis_env, 'lockup_action = "restart"\n')
    with StandInModel(lines=5, pause=0.2, stall_after=stall_after) as model:
        pty = PtyProcess([*AEGIS, "demo"], aegis_env)
        try:
            pty.read_until("> ")
            sock = runner_socket(runtime_dir)
            pty.write(b"hello\r")
            pty.read_until("you said: hello")
            step = "spinner" if stall_after is None else f"ask:127.0.0.1:{model.port}"
            pty.write(f"/scenario {step}\r".encode())
            reports = wait_reports(report, 2)
            assert reports[1]["continue"] and not reports[0]["continue"]
            pty.read_until(r"continuing conversation \(2 turns\)")
            restart = call(sock, "server_status")["agent"]["restart_history"][0]
            assert restart["by"] == "watchdog"
            assert re.search(expected, restart["reason"]), restart["reason"]
            if stall_after is not None:
                assert [r for _, r in model.requests] == ["hello"]
        finally:
            pty.close()


def test_restart_limit_stops_a_restart_loop(aegis_env, report, runtime_dir):
    # The spinner is in the agent's arguments: every restart hangs again at once.
    configure(
        aegis_env,
        'lockup_action = "restart"\nrestart_limit_burst = 2\nrestart_limit_interval_secs = 600\n',
    )
    pty = PtyProcess([*AEGIS, "demo", "--scenario", "spinner"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        limited = wait_for(
            lambda: (s := status(sock))["restart_limit"]["stood_down"] and s,
            what="the restart limit",
        )
        assert limited["restart_limit"]["restarts_in_window"] == 2
        assert limited["restart_limit"]["refused"] == 1
        events = call(sock, "events", limit=500)["events"]
        refusals = [e for e in events if e["kind"] == "watchdog.restart_limit"]
        assert len(refusals) == 1 and "2 restarts within 600s" in refusals[0]["message"]
        assert refusals[0]["level"] == "error"
        pty.read_until("restart limit reached")
        # Re-armed by a ping, it meets the limit again instead of restarting.
        call(sock, "watchdog_ping")
        wait_for(lambda: status(sock)["restart_limit"]["refused"] == 2, what="a second refusal")
        assert len(read_report(report)) == 3, "the first start and two restarts, no more"
        assert pty.proc.poll() is None, "the agent is left running"
    finally:
        pty.close()


def test_with_netmon_its_counters_are_read_too(aegis_env, report, runtime_dir):
    from aegis_mcp.hooks_lib import find_hooks

    if find_hooks() is None:
        pytest.skip("the hooks library is not built (make build)")
    configure(aegis_env, 'lockup_action = "warn"\n')
    with StandInModel(lines=10, pause=0.3) as model:
        pty = PtyProcess([*AEGIS, "demo", "--netmon=preload"], aegis_env)
        try:
            pty.read_until("> ")
            sock = runner_socket(runtime_dir)
            wait_for(lambda: status(sock)["checks"] >= 1)
            pty.write(f"/scenario ask:127.0.0.1:{model.port}\r".encode())
            seen = statuses_while(pty, sock, "reply 10 of 10")
            netmon = [s["signals"]["network"]["netmon_received_last_check"] for s in seen]
            assert None not in netmon and max(netmon) > 0, netmon
        finally:
            pty.close()


def test_in_tmux_the_emulator_sees_what_the_terminal_shows(aegis_env, tmp_path, runtime_dir):
    # A longer timeout: time to look at the spinner before the watchdog says anything.
    Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text(
        '[watchdog]\nheartbeat_timeout_secs = 3\nlockup_action = "warn"\n'
    )
    tmux = Tmux(tmp_path, aegis_env, rows=30, cols=100)
    try:
        tmux.start([*AEGIS, "demo"])
        tmux.wait_for(r"^> ")
        sock = runner_socket(runtime_dir)
        wait_for(lambda: status(sock)["signals"]["screen"].get("size") == [30, 100])
        tmux.type("/scenario spinner")
        pane = tmux.wait_for(r"Thinking… \(1s")
        shape = r"^. Thinking… \(\ds · esc to interrupt\)$"
        spinner_lines = [line for line in pane if "Thinking…" in line]
        assert len(spinner_lines) == 1, f"redrawn in place, not scrolled: {pane}"
        assert re.match(shape, spinner_lines[0].rstrip())
        screen = status(sock)["signals"]["screen"]
        assert re.match(shape, screen["busy_line"]) and screen["tail"][-1] == screen["busy_line"]
        assert screen["tail"][-2] == "> /scenario spinner" == pane[pane.index(spinner_lines[0]) - 1]
        stalled = wait_for(
            lambda: (s := status(sock))["state"] == "Unresponsive" and s, what="Unresponsive"
        )
        assert "the screen shows only its spinner" in stalled["reason"]
        # A resized terminal reaches the agent and the watchdog's screen alike.
        tmux.resize(40, 120)
        wait_for(lambda: status(sock)["signals"]["screen"]["size"] == [40, 120])
        runner = tmux.pane_pid()
    finally:
        tmux.close()
    wait_for(lambda: gone(runner), what="the runner to end with its terminal")
    assert not any(runtime_dir.glob("runner-*.sock"))


def test_agent_stopped_while_spinning_still_counts_as_stopped(aegis_env, report, runtime_dir):
    """The classic cases come before the screen's: a stopped agent behind a spinner."""
    configure(aegis_env, 'lockup_action = "warn"\n')
    pty = PtyProcess([*AEGIS, "demo", "--scenario", "spinner"], aegis_env)
    try:
        sock = runner_socket(runtime_dir)
        pid = wait_reports(report, 1)[0]["pid"]
        pty.read_until("Thinking")
        os.kill(pid, signal.SIGSTOP)
        stopped = wait_for(
            lambda: (
                (s := status(sock))["state"] == "Unresponsive"
                and "stopped process" in s["reason"]
                and s
            ),
            what="stopped",
        )
        assert stopped["signals"]["processes"]["stopped"] == [pid]
        os.kill(pid, signal.SIGCONT)
    finally:
        pty.close()
