"""The watchdog's signs of life, one at a time: the rendered screen (pyte), the agent's TCP
connections (sock_diag, in this and in another network namespace), the restart limit and
the profile data that drives them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aegis_mcp.agents.profiles import BUILTIN_PROFILES, WatchRules
from aegis_mcp.config import ConfigError, load_config
from aegis_mcp.demo.steps import SPINNER_GLYPHS
from aegis_mcp.watchdog.restart_limit import RestartLimit
from aegis_mcp.watchdog.screen import ScreenWatcher
from aegis_mcp.watchdog.sockets import SocketWatcher
from helpers import ManualClock


def watcher(profile: str | None = "demo", rows: int = 30, cols: int = 100):
    clock = ManualClock()
    rules = BUILTIN_PROFILES[profile].watch if profile else WatchRules()
    return ScreenWatcher(rules, (rows, cols), clock), clock


def show(screen: ScreenWatcher, clock: ManualClock, data: bytes) -> bool:
    """Feed ``data`` as one frame, then pause: whether it changed what the screen says."""
    screen.feed(data)
    clock.tick(0.05)
    return screen.flush()


def frames_changed(screen: ScreenWatcher, clock: ManualClock, frames: list[str]) -> list[int]:
    """Indices of the frames that changed what the screen says (10 frames a second)."""
    changed = []
    for i, frame in enumerate(frames):
        clock.tick(0.05)
        if show(screen, clock, frame.encode()):
            changed.append(i)
    return changed


def claude_spinner(count: int, start: int = 0) -> list[str]:
    """Claude Code's spinner line redrawn in place: glyph bouncing, seconds counting."""
    glyphs = SPINNER_GLYPHS + SPINNER_GLYPHS[-2:0:-1]
    return [
        f"\r\x1b[2K\x1b[38;5;174m{glyphs[i % len(glyphs)]}\x1b[39m Herding… "
        f"\x1b[2m({(start + i) // 10}s · ↓ {i * 3} tokens)\x1b[22m"
        for i in range(count)
    ]


def test_spinner_and_timer_redraws_are_noise_new_text_is_progress():
    screen, clock = watcher("claude")
    assert show(screen, clock, b"> hello\r\n")
    # 40 seconds of spinner: past 9 -> 10 s and a growing token counter.
    assert frames_changed(screen, clock, claude_spinner(400)) == [0]
    view = screen.view()
    assert view.busy_line is not None and "Herding… (39s · ↓ 1197 tokens)" in view.busy_line
    assert screen.noise_redraws >= 399
    # The first streamed words of the answer are news.
    clock.tick()
    assert show(screen, clock, b"\r\x1b[2K\xe2\x97\x8f The answer")
    clock.tick()
    assert show(screen, clock, b" is 42")


def test_a_spinner_left_behind_is_not_a_live_one():
    screen, clock = watcher("claude")
    frames_changed(screen, clock, claude_spinner(20))
    # Something else moved the cursor away: the next frames draw on another line.
    screen.feed(b"\r\n\r\n")
    frames_changed(screen, clock, claude_spinner(20, start=20))
    assert screen.view().busy_line is not None
    # The agent stops drawing (it ended, or finished the turn and cleared its line).
    screen.feed(b"\r\x1b[2K> ")
    clock.tick(3.5)
    view = screen.view()
    assert view.busy_line is None, "only the frozen first spinner line is left"
    assert any("Herding…" in line for line in screen.tail())


def test_generic_profile_ignores_cycling_cells_and_counters():
    screen, clock = watcher(None)
    screen.feed(b"$ make\r\n")
    braille = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    assert frames_changed(screen, clock, [f"\r{braille[i % 10]} building" for i in range(50)]) == [
        0
    ]
    # A bouncing bar: two cells change per frame, learnt after its first cycle.
    bar = [f"\r[{' ' * (i % 5)}={' ' * (4 - i % 5)}]" for i in range(60)]
    changed = frames_changed(screen, clock, bar)
    assert changed and max(changed) < 10
    # A clock in place, then a percentage counting up to 99: not progress.
    times = [f"\r{12 + i // 60:02d}:{i % 60:02d}:00" for i in range(100)]
    assert frames_changed(screen, clock, times) == [0]
    pct = [f"\rdone {i:2d}%" for i in range(10, 100)]
    assert frames_changed(screen, clock, pct) == [0]


def test_streamed_words_and_scrolling_output_count_every_time():
    screen, clock = watcher(None, rows=5)
    words = frames_changed(screen, clock, [f"word{i} " for i in range(30)])
    assert words == list(range(30))
    lines = frames_changed(screen, clock, [f"line {i}\r\n" for i in range(20)])
    assert lines == list(range(20))


def test_identical_redraws_of_a_prompt_box_are_noise():
    screen, clock = watcher("claude")
    box = "\x1b[H\x1b[2J────────\r\n> \r\n────────\r\n  ? for shortcuts\x1b[2;3H"
    assert show(screen, clock, box.encode())
    for _ in range(20):
        clock.tick(1)
        assert not show(screen, clock, box.encode())
    view = screen.view()
    assert view.prompt and view.busy_line is None and view.cursor_line == ">"


def test_prompt_is_looked_for_at_the_cursor_only():
    screen, clock = watcher("demo")
    screen.feed(b"aegis demo agent\r\n> ")
    assert screen.view().prompt
    # The user's line stays on screen after Enter; the cursor moved on: no prompt.
    clock.tick()
    screen.feed(b"/scenario quiet\r\n")
    assert not screen.view().prompt
    clock.tick()
    screen.feed(b"demo: you said: hi\r\n> ")
    assert screen.view().prompt


def test_resize_keeps_watching():
    screen, clock = watcher("demo")
    screen.feed(b"> ")
    screen.resize(40, 120)
    clock.tick()
    assert show(screen, clock, b"\x1b[H\x1b[2Jredrawn at 120 columns\r\n> ")
    assert screen.status()["size"] == [40, 120] and screen.view().prompt


def test_restart_limit_allows_a_burst_then_refuses_until_the_window_moves():
    clock = ManualClock()
    limit = RestartLimit(burst=3, interval_secs=60, clock=clock)
    for _ in range(3):
        assert limit.acquire() is None
        clock.tick(5)
    refusal = limit.acquire()
    assert refusal is not None and refusal.burst == 3
    assert 44 <= refusal.retry_in_secs <= 46 and "3 restarts within 60s" in str(refusal)
    status = limit.status()
    assert status["restarts_in_window"] == 3 and status["refused"] == 1
    clock.tick(46)
    assert limit.acquire() is None
    limit.configure(burst=1, interval_secs=0)
    assert all(limit.acquire() is None for _ in range(10)), "an interval of 0 turns it off"


def test_watch_rules_in_the_config_file(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text(
        "[agents.claude.watch]\nbusy = ['Working']\nprompt_context_lines = 2\n"
        "[agents.mine]\ncommand = ['mine']\n[agents.mine.watch]\nprompt = ['^mine> ']\n"
    )
    profiles = load_config(path).profiles
    claude = profiles["claude"].watch
    assert claude.busy == ("Working",) and claude.prompt_context_lines == 2
    assert claude.noise == BUILTIN_PROFILES["claude"].watch.noise, "other keys stay"
    assert profiles["mine"].watch.prompt == ("^mine> ",) and profiles["mine"].watch.busy == ()
    for body, message in [
        ("busy = ['(unclosed']", "is not a regular expression"),
        ("prompt = 'x'", "must be a list of strings"),
        ("colour = ['red']", "unknown setting"),
        ("prompt_context_lines = -1", "whole number from 0 to 100"),
    ]:
        path.write_text(f"[agents.claude.watch]\n{body}\n")
        with pytest.raises(ConfigError, match=message) as info:
            load_config(path)
        assert "[agents.claude].watch." in str(info.value)


PEER = textwrap.dedent(
    """
    import socket, sys
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    print(len(conn.recv(100)), flush=True)
    sys.stdin.readline()
    conn.sendall(b"x" * 5000)
    sys.stdin.readline()
    """
)


def test_socket_watcher_counts_bytes_received_per_connection():
    # The model server's end is another process's: only the agent's own end is watched.
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert peer.stdin is not None and peer.stdout is not None
    client = socket.create_connection(("127.0.0.1", int(peer.stdout.readline())))
    inode = os.fstat(client.fileno()).st_ino
    watcher = SocketWatcher()

    async def look():
        return await watcher.sample([os.getpid()])

    try:
        first = asyncio.run(look())
        assert [c.inode for c in first.connections] == [inode] and first.received == 0
        client.sendall(b"GET /v1/messages\n")
        assert peer.stdout.readline().strip() == "17"
        waiting = asyncio.run(look())
        conn = next(c for c in waiting.connections if c.inode == inode)
        assert conn.awaiting_reply and conn.bytes_sent == 17
        peer.stdin.write("send\n")
        peer.stdin.flush()
        deadline = time.monotonic() + 5
        got = 0
        while got < 5000 and time.monotonic() < deadline:
            got += len(client.recv(65536))
        answered = asyncio.run(look())
        assert answered.received == 5000
        conn = next(c for c in answered.connections if c.inode == inode)
        assert not conn.awaiting_reply and conn.bytes_received == 5000
        assert asyncio.run(look()).received == 0, "nothing new, nothing counted"
    finally:
        watcher.close()
        client.close()
        peer.kill()
        peer.wait()


def test_a_connection_to_itself_is_not_the_network():
    """Codex's TUI talks to its own core over loopback: both ends are the agent's, its
    bytes both ways counted apart (each end's, sent and received)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    watcher = SocketWatcher()

    async def look():
        return await watcher.sample([os.getpid()])

    try:
        asyncio.run(look())
        client.sendall(b"ping")
        server.recv(10)
        server.sendall(b"y" * 3000)
        client.recv(65536)
        sample = asyncio.run(look())
        ends = {os.fstat(s.fileno()).st_ino for s in (client, server)}
        assert not ends & {c.inode for c in sample.connections}
        assert sample.received == 0 and sample.awaiting() is None
        # Nor file I/O: /proc/PID/io counts it, so the watchdog takes it out of that too.
        assert sample.internal == 2 * (4 + 3000)
    finally:
        watcher.close()
        for s in (client, server, listener):
            s.close()


AS_USER = textwrap.dedent(
    """
    import asyncio, json, os, socket, sys
    from aegis_mcp.watchdog.sockets import SocketWatcher
    client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    client.sendall(b"GET /v1/messages\\n")
    got = 0
    while got < 3000:
        got += len(client.recv(65536))
    watcher = SocketWatcher()
    sample = asyncio.run(watcher.sample([os.getpid()]))
    watcher.close()
    conns = [[c.bytes_received, c.bytes_sent] for c in sample.connections]
    print(json.dumps({"uid": os.getuid(), "error": sample.error, "connections": conns}))
    """
)


def test_socket_watcher_needs_no_privileges_for_ones_own_processes():
    """As a plain user (nobody, when the suite runs as root): its own connection's bytes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"y" * 3000)
            conn.recv(100)  # until the child is done and closes

    threading.Thread(target=serve, daemon=True).start()
    plain = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    try:
        out = subprocess.run(
            [sys.executable, "-c", AS_USER, str(listener.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            check=True,
            **plain,
        ).stdout
    finally:
        listener.close()
    seen = json.loads(out)
    assert seen["uid"] != 0 and seen["error"] is None, seen
    assert seen["connections"] == [[3000, 17]], seen


NETNS_CHILD = textwrap.dedent(
    """
    import os, socket, sys, time
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    if os.fork() == 0:
        # The server's end in a process of its own: the watched one holds only the client.
        client.close()
        server.sendall(b"y" * 3000)
        time.sleep(60)
    server.close()
    got = 0
    while got < 3000:
        got += len(client.recv(65536))
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace")
def test_socket_watcher_joins_the_agents_network_namespace():
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed")
    child = subprocess.Popen(
        [unshare, "--net", sys.executable, "-c", NETNS_CHILD],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    watcher = SocketWatcher()
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert os.readlink(f"/proc/{child.pid}/ns/net") != os.readlink("/proc/self/ns/net")

        async def look():
            return await watcher.sample([child.pid])

        sample = asyncio.run(look())
        assert sample.error is None
        # The 3000 bytes it received are seen from the runner's side.
        assert [c.bytes_received for c in sample.connections] == [3000]
        assert asyncio.run(look()).received == 0
    finally:
        watcher.close()
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
