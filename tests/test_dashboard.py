"""The dashboard (Textual, headless through its Pilot) against real runners with the demo agent:
what it shows, what its keys do, and how it finds, loses and finds again a runner."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.control.client import ControlClient
from aegis_mcp.control.protocol import ControlError
from aegis_mcp.dashboard.app import DashboardApp
from helpers import (
    AEGIS,
    WAIT,
    PtyProcess,
    call,
    gone,
    runner_socket,
    serve_connections,
    start_aegis,
    wait_for,
)

FAST_WATCHDOG = "[watchdog]\nheartbeat_timeout_secs = 1\ncheck_interval_secs = 0.2\n"
SIZE = (120, 48)


def screen_text(app: DashboardApp) -> str:
    """The characters on the app's screen now, one line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(app: DashboardApp, what: str, predicate: Callable[[str], Any], *, tick=None):
    """Wait until ``predicate(screen text)`` holds; ``tick`` runs meanwhile (draining a PTY)."""
    deadline = time.monotonic() + WAIT
    while True:
        text = screen_text(app)
        if predicate(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"the screen never showed {what}; it shows:\n{text}")
        if tick is not None:
            tick()
        await asyncio.sleep(0.05)


def shows(needle: str) -> Callable[[str], bool]:
    return lambda text: needle in text


@pytest.fixture
def dash_env(aegis_env, monkeypatch) -> dict[str, str]:
    """``aegis_env``, also in this process's environment: the in-process app reads it."""
    for key in ("AEGIS_MCP_RUNTIME_DIR", "AEGIS_MCP_STATE_DIR", "AEGIS_MCP_CONFIG"):
        monkeypatch.setenv(key, aegis_env[key])
    return aegis_env


class TcpServer:
    """A local server that reads what it is sent, answers ``ok`` and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        serve_connections(self.sock, self._answer)

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(65536)
                conn.sendall(b"ok")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_the_dashboard_follows_a_real_runner_and_acts_on_it(dash_env, runtime_dir, tmp_path):
    marker = tmp_path / "notified"
    Path(dash_env["AEGIS_MCP_CONFIG"]).write_text(
        FAST_WATCHDOG
        + '[dashboard]\nnotify = "command"\n'
        + f'notify_command = ["sh", "-c", "echo {{state}} >> {marker}"]\n'
    )
    server = TcpServer()
    pty = PtyProcess([*AEGIS, "demo", "--netmon=preload"], dash_env, cwd=tmp_path)
    try:
        pty.read_until("> ")
        sock = runner_socket(runtime_dir)
        first_pid = wait_for(lambda: call(sock, "server_status")["agent"]["pid"])

        async def main() -> None:
            from aegis_mcp.config import load_config

            settings = load_config(Path(dash_env["AEGIS_MCP_CONFIG"])).dashboard
            app = DashboardApp(settings=settings)
            async with app.run_test(size=SIZE) as pilot:
                await until(app, "the agent's pid", shows(f"pid {first_pid}"), tick=pty.drain)
                text = await until(app, "the System panel's agent tree", shows("agent CPU"))
                assert "host mem" in text and "Primary Agent" in text

                # Idle at its prompt: marked, and the configured command is run.
                await until(app, "the Idle mark", shows(" IDLE "), tick=pty.drain)
                wait_for(lambda: marker.exists() and "Idle" in marker.read_text())

                # r, then y: the agent restarts (with a new pid) and the count moves.
                await pilot.press("r")
                await until(app, "the restart question", shows("Restart the primary agent"))
                await pilot.press("y")
                text = await until(app, "one restart", shows("restarts 1"), tick=pty.drain)
                assert "by aegis-mcp dashboard" in text
                new_pid = wait_for(
                    lambda: (p := call(sock, "server_status")["agent"]["pid"]) != first_pid and p
                )
                await until(app, "the new pid", shows(f"pid {new_pid}"), tick=pty.drain)

                # The agent connects out: netmon's numbers appear.
                pty.write(f"/scenario connect:127.0.0.1:{server.port}:100\r".encode())
                text = await until(
                    app, "the connection", shows(f"127.0.0.1:{server.port}"), tick=pty.drain
                )
                await until(app, "a counted connection", shows("conns 1"), tick=pty.drain)

                # A pool agent appears; selected, its output tail follows it.
                spawned = call(
                    sock,
                    "agent_spawn",
                    description="/scenario say:first-line;sleep:1.5;say:second-line;sleep:60",
                    agent_type="demo",
                )
                agent_id = spawned["agent_id"]
                await until(app, "the pool agent", shows(agent_id), tick=pty.drain)
                app.main.query_one("#pool-table").focus()
                await pilot.press("home")
                await until(app, "its first line", shows("│ first-line"), tick=pty.drain)
                await until(app, "its second line", shows("│ second-line"), tick=pty.drain)

                # s, then y: the selected pool agent is stopped.
                await pilot.press("s")
                await until(app, "the stop question", shows(f"Stop pool agent {agent_id}"))
                await pilot.press("y")
                await until(app, "the stopped agent", shows("■ stopped"), tick=pty.drain)
                assert call(sock, "agent_status", agent_id=agent_id)["status"] == "stopped"

                # w: the watchdog goes off, and the runner says so.
                await pilot.press("w")
                await until(app, "the watchdog off", shows("(watchdog off)"), tick=pty.drain)
                assert call(sock, "watchdog_status")["enabled"] is False

                # /: the log shows only what matches.
                await pilot.press("slash", *"pool.end")
                log = app.main.query_one("#log")
                await until(app, "the filter", shows("filter /pool.end"))
                await until(app, "the matching line", shows(f"agent {agent_id} stopped"))
                lines = [strip.text for strip in log.lines]
                assert lines and all("pool.end" in line for line in lines), lines
                await pilot.press("escape")
                await until(app, "the whole log again", lambda _t: len(log.lines) > len(lines))

                # p: the view stops moving while the state keeps arriving.
                await pilot.press("p")
                await until(app, "the pause mark", shows("PAUSED"))
                await pilot.press("q")

        asyncio.run(main())
        assert "Unresponsive" not in marker.read_text()
    finally:
        pty.close()
        server.close()


def test_a_blocked_attempt_shows_in_its_own_colour(dash_env, runtime_dir, monkeypatch):
    from aegis_mcp.netmon.ebpf import ebpf_available

    ready, why = ebpf_available()
    if not ready:
        pytest.skip(f"eBPF unavailable: {why}")
    server = TcpServer()
    scenario = f"repeat:forever:connect:127.0.0.1:{server.port}:10|sleep:0.5"
    proc = start_aegis(
        ["demo", "--netmon=ebpf", f"--deny=127.0.0.1:{server.port}", "--scenario", scenario],
        dash_env,
        output=False,
    )
    try:
        runner_socket(runtime_dir, timeout=60)

        async def main() -> None:
            app = DashboardApp()
            async with app.run_test(size=SIZE) as pilot:
                line = f"BLOCKED 127.0.0.1:{server.port}"
                await until(app, "the blocked attempt", shows(line))
                # Its own colour: the cells of the word are styled apart from the text around.
                row, column = next(
                    (y, strip.text.index(line))
                    for y, strip in enumerate(app.screen._compositor.render_strips())
                    if line in strip.text
                )
                style = app.screen._compositor.get_style_at(column + 1, row)
                plain = app.screen._compositor.get_style_at(0, row)
                assert style.color != plain.color and style.bold
                await pilot.press("q")

        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.close()


def test_refused_requests_are_counted_and_logged_and_allowed_ones_stay_out(dash_env, runtime_dir):
    proc = start_aegis(["run", "--no-watchdog", "--", "sleep", "600"], dash_env, output=False)
    try:
        sock = runner_socket(runtime_dir)
        call(sock, "server_status")  # allowed: an audit event, not a line in the log
        # A bare agent id, then a wrong token: both refused.
        for identity in (("primary", None), ("primary", "not-the-token")):
            with ControlClient(sock, identity=identity) as client, pytest.raises(ControlError):
                client.call("watchdog_disable")

        async def main() -> None:
            app = DashboardApp()
            async with app.run_test(size=SIZE) as pilot:
                await until(app, "the refusal count", shows(" 2 refused "))
                log = app.main.query_one("#log")
                lines: list[str] = []

                def both_refusals(_text: str) -> bool:
                    lines[:] = [strip.text for strip in log.lines]
                    return sum("control.refused" in line for line in lines) == 2

                await until(app, "both refusals in the log", both_refusals)
                assert not any("control.request" in line for line in lines), lines
                await pilot.press("q")

        asyncio.run(main())
        events = call(sock, "events", limit=500)["events"]
        assert any(e["kind"] == "control.request" and e["op"] == "server_status" for e in events)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _runner(env: dict[str, str], runtime_dir: Path, known: set[int]) -> tuple[Any, int]:
    """A headless runner of a quiet demo agent; returns it and its pid once it serves."""
    proc = start_aegis(["demo", "--scenario", "quiet", "--no-watchdog"], env, output=False)
    sock = wait_for(
        lambda: next((s for s in runtime_dir.glob("runner-*.sock") if s not in known), None)
    )
    wait_for(lambda: call(sock, "server_status")["agent"]["pid"])
    return proc, int(sock.stem.split("-")[1])


def test_waits_for_a_runner_then_follows_reattaches_and_picks(dash_env, runtime_dir):
    # An earlier run left pool history.
    proc, _pid = _runner(dash_env, runtime_dir, set())
    sock = runner_socket(runtime_dir)
    spawned = call(sock, "agent_spawn", description="/scenario say:done", agent_type="demo")
    wait_for(
        lambda: call(sock, "agent_status", agent_id=spawned["agent_id"])["status"] == "completed"
    )
    proc.terminate()
    proc.wait(timeout=30)
    wait_for(lambda: not list(runtime_dir.glob("runner-*.sock")))
    started: list[Any] = []

    async def main() -> None:
        app = DashboardApp()
        async with app.run_test(size=SIZE) as pilot:
            text = await until(app, "how to start one", shows("No aegis-mcp runner is running"))
            assert "aegis-mcp demo" in text
            await until(app, "the pool history", shows(spawned["agent_id"]))

            second, second_pid = _runner(dash_env, runtime_dir, set())
            started.append(second)
            await until(app, "the new runner", shows(f"runner {second_pid} "))
            await until(app, "a live link", shows("● live"))

            # Killed outright: the dashboard says so and waits.
            agent_pid = call(runtime_dir / f"runner-{second_pid}.sock", "server_status")["agent"][
                "pid"
            ]
            os.kill(second_pid, signal.SIGKILL)
            os.kill(agent_pid, signal.SIGKILL)
            second.wait(timeout=30)
            await until(app, "the disconnection", shows("disconnected — waiting"))

            third, third_pid = _runner(
                dash_env, runtime_dir, {runtime_dir / f"runner-{second_pid}.sock"}
            )
            started.append(third)
            await until(app, "the reattachment", shows(f"runner {third_pid} "))
            await until(app, "a live link again", shows("● live"))
            await pilot.press("q")

        # Two runners up and none chosen: a picker lists them, Enter follows one.
        fourth, fourth_pid = _runner(
            dash_env,
            runtime_dir,
            {runtime_dir / f"runner-{p}.sock" for p in (second_pid, third_pid)},
        )
        started.append(fourth)
        app = DashboardApp()
        async with app.run_test(size=SIZE) as pilot:
            text = await until(app, "the picker", shows("Several runners are up"))
            assert str(third_pid) in text and str(fourth_pid) in text and "demo" in text
            await pilot.press("enter")
            text = await until(app, "the chosen runner", shows("● live"))
            assert f"runner {fourth_pid} " in text or f"runner {third_pid} " in text
            await pilot.press("q")

    try:
        asyncio.run(main())
    finally:
        for runner in started:
            if runner.poll() is None:
                runner.terminate()
                runner.wait(timeout=30)
    assert all(gone(r.pid) for r in started)


def test_cli_mistakes_are_one_line_errors(aegis_env, tmp_path):
    import subprocess

    def run(*args: str, config: str | None = None) -> subprocess.CompletedProcess:
        if config is not None:
            Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text(config)
        return subprocess.run(
            [*AEGIS, *args], env=aegis_env, capture_output=True, text=True, timeout=WAIT
        )

    assert "usage: aegis-mcp dashboard [PID]" in run("dashboard", "--help").stdout
    for args, message in (
        (("dashboard", "abc"), "takes a runner PID, got 'abc'"),
        (("--dashboard", "1", "2"), "at most one PID"),
        (("dashboard", "999999"), "no runner 999999 found"),
        (("dashboard",), "needs a terminal"),
    ):
        result = run(*args)
        assert result.returncode == 2, result
        assert result.stderr.startswith("aegis-mcp: error: ") and message in result.stderr
    bad = run("dashboard", config='[dashboard]\nnotify = "command"\n')
    assert bad.returncode == 2 and "needs notify_command" in bad.stderr
    bad = run("dashboard", config='[dashboard]\nnotify = "loud"\n')
    assert bad.returncode == 2 and "notify must be one of bell, none, command" in bad.stderr
    bad = run("dashboard", config='[dashboard]\nnotify = "command"\nnotify_command = ["x{y}"]\n')
    assert bad.returncode == 2 and "bad placeholder" in bad.stderr


def test_in_a_real_terminal_under_tmux(aegis_env, runtime_dir, tmp_path):
    import shutil
    import subprocess

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (make setup installs it)")
    proc, pid = _runner(aegis_env, runtime_dir, set())
    agent_pid = call(runtime_dir / f"runner-{pid}.sock", "server_status")["agent"]["pid"]
    # A private tmux server: its socket in this test's directory, nobody else's sessions.
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    env = " ".join(
        f"{k}={v}"
        for k, v in aegis_env.items()
        if k.startswith("AEGIS_") or k in ("PYTHONPATH", "PATH")
    )
    command = f"env {env} TERM=xterm-256color {' '.join(AEGIS)} --dashboard {pid}"
    subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "24", command], check=True)

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True
        ).stdout

    try:
        titles = ("Primary Agent", "System", "Agent Pool", "Network Activity", "File Locks", "Log")
        text = wait_for(
            lambda: all(t in (s := screen()) for t in (f"pid {agent_pid}", *titles)) and s,
            what="the dashboard's panels",
        )
        assert f"runner {pid} " in text and "● live" in text
        subprocess.run([*tmux, "send-keys", "q"], check=True)
        wait_for(
            lambda: subprocess.run([*tmux, "has-session"], capture_output=True).returncode != 0,
            what="the dashboard to quit on q",
        )
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        proc.terminate()
        proc.wait(timeout=30)
