"""Dashboard benchmarks (picked up by bench/run.py).

  dashboard-cpu      the dashboard's CPU (percent of a core) in a real terminal (a PTY,
                     160x48) following a runner with 100 pool agents that each print a
                     line a second and an agent making ~1,000 netmon events a second,
                     vs the same dashboard following an idle runner (target <= 10 %)
  dashboard-latency  a runner event (``watchdog_disable``, whose log line carries a
                     unique number) to that line in the terminal's output, p50 and p95,
                     under that load and idle (target p50 <= 100 ms)

The load agent is this file run as a script (``bench_dashboard.py load PORT RATE``) under
``--netmon=preload``: real connections to a local server, paced to RATE connections a
second (each makes a connect, a send and a close event).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from run import AEGIS, Row, _env, _ms, _percentile, _start_runner, _wait

POOL_AGENTS = 100
TICKING = "/scenario repeat:forever:say:tick|sleep:1"
CONNECTIONS_PER_SEC = 340
"""About 1,000 netmon events a second (connect, send and close per connection)."""


class _Sink:
    """A local server that takes connections, reads what comes, and closes them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(4096)


class _Terminal:
    """The dashboard in a real PTY; a thread reads its output and notes when text appears."""

    def __init__(self, env: dict[str, str], cols: int = 160, rows: int = 48) -> None:
        master, slave = os.openpty()
        import fcntl

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            [*AEGIS, "dashboard"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color"},
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self._lock = threading.Lock()
        self._tail = b""
        self._wanted: dict[bytes, float | None] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.perf_counter()
            with self._lock:
                text = self._tail + chunk
                for marker, seen in self._wanted.items():
                    if seen is None and marker in text:
                        self._wanted[marker] = now
                self._tail = text[-4096:]

    def expect(self, marker: bytes) -> None:
        """Start watching for ``marker``."""
        with self._lock:
            self._wanted[marker] = None

    def seen(self, marker: bytes) -> float | None:
        """When ``marker`` first appeared (perf_counter), if it has."""
        with self._lock:
            return self._wanted.get(marker)

    def shows(self, pattern: bytes) -> bool:
        with self._lock:
            return re.search(pattern, self._tail) is not None

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        os.close(self._master)


def _cpu(pid: int, seconds: float) -> float:
    import psutil

    proc = psutil.Process(pid)
    t0, w0 = proc.cpu_times(), time.perf_counter()
    time.sleep(seconds)
    t1, wall = proc.cpu_times(), time.perf_counter() - w0
    return 100 * ((t1.user + t1.system) - (t0.user + t0.system)) / wall


def _latencies(sock: Path, terminal: _Terminal, samples: int, base: int) -> list[float]:
    from aegis_mcp.control.client import ControlClient

    found = []
    with ControlClient(sock) as client:
        for n in range(samples):
            secs = base + n + 0.125
            marker = f"watchdog disabled for {secs:g}s".encode()
            terminal.expect(marker)
            t0 = time.perf_counter()
            client.call("watchdog_disable", duration_secs=secs)
            _wait(lambda m=marker: terminal.seen(m), timeout=30)
            found.append(terminal.seen(marker) - t0)  # type: ignore[operator]
            time.sleep(0.2)
    return found


def _measure(env: dict[str, str], sock: Path, seconds: float, samples: int, base: int):
    terminal = _Terminal(env)
    try:
        _wait(lambda: terminal.shows(rb"live"), timeout=60)
        time.sleep(2)  # past the first full draw
        cpu = _cpu(terminal.proc.pid, seconds)
        latencies = _latencies(sock, terminal, samples, base)
    finally:
        terminal.close()
    return cpu, latencies


def _netmon_events(sock: Path) -> int:
    from aegis_mcp.control.client import ControlClient

    with ControlClient(sock) as client:
        return client.call("netmon_status").get("events", 0)


def bench_dashboard(tmp: Path, quick: bool) -> list[Row]:
    """The dashboard's CPU and event-to-screen latency, loaded and idle."""
    from aegis_mcp.control.client import ControlClient

    seconds = 10 if quick else 30
    samples = 20 if quick else 60
    idle_env = _env(tmp / "idle")
    runner, sock = _start_runner(["run", "--", "sleep", "3600"], idle_env, tmp / "idle")
    try:
        idle_cpu, idle_lat = _measure(idle_env, sock, seconds, samples, 100)
    finally:
        runner.terminate()
        runner.wait()

    env = _env(tmp / "load")
    Path(env["AEGIS_MCP_CONFIG"]).parent.mkdir(parents=True, exist_ok=True)
    Path(env["AEGIS_MCP_CONFIG"]).write_text(f"[pool]\nmax_agents = {POOL_AGENTS}\n")
    sink = _Sink()
    load = [sys.executable, __file__, "load", str(sink.port), str(CONNECTIONS_PER_SEC)]
    runner, sock = _start_runner(
        ["run", "--netmon=preload", "--no-watchdog", "--", *load], env, tmp / "load"
    )
    try:
        with ControlClient(sock) as client:
            for _ in range(POOL_AGENTS):
                client.call("agent_spawn", description=TICKING, agent_type="demo")
            _wait(lambda: client.call("agent_pool_stats")["running"] == POOL_AGENTS, timeout=300)
        events0, t0 = _netmon_events(sock), time.perf_counter()
        load_cpu, load_lat = _measure(env, sock, seconds, samples, 1000)
        rate = (_netmon_events(sock) - events0) / (time.perf_counter() - t0)
    finally:
        runner.terminate()
        runner.wait(timeout=60)
        sink.sock.close()
    ratio = load_cpu / idle_cpu if idle_cpu else float("inf")
    return [
        (
            f"dashboard-cpu: {POOL_AGENTS} pool agents, {rate:.0f} netmon events/s ({seconds}s)",
            f"{load_cpu:.1f}% of a core (target <= 10%)",
            f"idle runner: {idle_cpu:.1f}%",
            f"x{ratio:.1f}",
        ),
        (
            f"dashboard-latency: runner event -> line on screen, p50 ({samples} events)",
            f"{_ms(_percentile(load_lat, 0.5))} loaded (target <= 100 ms)",
            f"idle: {_ms(_percentile(idle_lat, 0.5))}",
            f"p95 {_ms(_percentile(load_lat, 0.95))} loaded, "
            f"{_ms(_percentile(idle_lat, 0.95))} idle",
        ),
    ]


def _load(port: int, per_sec: float) -> None:
    """The load agent: paced connections to 127.0.0.1:PORT, forever."""
    interval = 1.0 / per_sec
    due = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                conn.sendall(b"0123456789")
        except OSError:
            pass
        due += interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            due = time.monotonic()  # fell behind: do not burst to catch up


BENCHES = {"dashboard": bench_dashboard}

if __name__ == "__main__" and sys.argv[1:2] == ["load"]:
    _load(int(sys.argv[2]), float(sys.argv[3]))
