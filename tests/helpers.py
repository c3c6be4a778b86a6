"""Shared test helpers: running aegis-mcp in real PTYs and pipes, and reading its state."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AEGIS = [sys.executable, "-m", "aegis_mcp"]
# Under software emulation (the stock-kernel VM) everything is many times slower:
# every wait of the suite stretches by this factor, set by scripts/vm/guest.sh.
TIME_SCALE = float(os.environ.get("AEGIS_TEST_TIME_SCALE", "1"))
WAIT = 30.0


def deadline(timeout: float) -> float:
    """The monotonic time a wait of ``timeout`` seconds (stretched by ``TIME_SCALE``) ends."""
    return time.monotonic() + timeout * TIME_SCALE


def serve_connections(server: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Hand every connection ``server`` accepts to ``handle`` (which closes it), each in
    a daemon thread of its own, until ``server`` is closed."""

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def start_aegis(
    argv: list[str], env: dict[str, str], cwd: Path | str | None = None, output: bool = True
) -> subprocess.Popen:
    """``aegis-mcp ARGV`` in the background with stdin closed; its output captured
    as text (``output``) or discarded."""
    sink = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(
        [*AEGIS, *argv],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=sink,
        stderr=sink,
        text=True,
    )


class ManualClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, secs: float = 0.1) -> None:
        self.now += secs


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie awaiting its reaper counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(predicate, timeout: float = WAIT, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``
    (stretched by ``TIME_SCALE``)."""
    end = deadline(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def read_report(path: Path, agent: str = "primary") -> list[dict[str, Any]]:
    """The demo agent's start-up report lines, of the primary agent by default
    (pool agents inherit the same report file)."""
    if not path.exists():
        return []
    reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in reports if r["env"].get("AEGIS_MCP_AGENT_ID", "primary") == agent]


def wait_reports(path: Path, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
    """Wait until the demo agent has started ``count`` times."""
    return wait_for(
        lambda: (r := read_report(path)) and len(r) >= count and r,
        timeout,
        what=f"{count} demo agent start(s)",
    )


def runner_socket(runtime_dir: Path, timeout: float = WAIT) -> Path:
    """The socket of the (only) runner in ``runtime_dir``."""
    return wait_for(
        lambda: next(iter(sorted(runtime_dir.glob("runner-*.sock"))), None),
        timeout,
        what="the runner's control socket",
    )


def call(socket_path: Path, op: str, **args: Any) -> Any:
    """One control request through the project's client."""
    from aegis_mcp.control.client import ControlClient

    with ControlClient(socket_path) as client:
        return client.call(op, **args)


class PtyProcess:
    """A command running with a real PTY as its controlling terminal."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | None = None,
        rows: int = 30,
        cols: int = 100,
    ) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.saved_attrs = termios.tcgetattr(self.slave)

        def setup() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv,
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=setup,
        )
        self.output = b""

    def resize(self, rows: int, cols: int) -> None:
        """Change the terminal size (the kernel sends SIGWINCH to the foreground group)."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes) -> None:
        """Type into the terminal."""
        os.write(self.master, data)

    def read_until(self, pattern: str | bytes, timeout: float = WAIT) -> bytes:
        """Read output until ``pattern`` (a regex) appears in everything read so far."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        end = deadline(timeout)
        while not re.search(pattern, self.output):
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out waiting for {pattern!r}; got {self.output[-2000:]!r}"
                )
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    if self.proc.poll() is not None:
                        raise AssertionError(
                            f"exited before {pattern!r}; got {self.output[-2000:]!r}"
                        )
                    continue
                self.output += chunk
        return self.output

    def drain(self) -> None:
        """Read whatever is pending without blocking."""
        with contextlib.suppress(OSError):
            while select.select([self.master], [], [], 0.05)[0]:
                chunk = os.read(self.master, 65536)
                if not chunk:
                    break
                self.output += chunk

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for exit while draining output (a full PTY would block the writer)."""
        end = deadline(timeout)
        while self.proc.poll() is None:
            if time.monotonic() > end:
                raise AssertionError(f"did not exit; output {self.output[-2000:]!r}")
            self.drain()
        self.drain()
        return self.proc.returncode

    def attrs(self) -> list:
        """Current terminal attributes."""
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        """Kill (if needed) and release the terminal."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.asynccontextmanager
async def mcp_client(env: dict[str, str]):
    """A real MCP client session with ``aegis-mcp --mcp-server`` started over stdio."""
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=AEGIS[0], args=[*AEGIS[1:], "--mcp-server"], env=env)
    async with Client(params) as client:
        yield client


async def tool(client, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool that must succeed; returns its JSON result."""
    result = await client.call_tool(name, args or {})
    text = result.content[0].text if result.content else ""
    assert not result.is_error, f"{name} failed: {text}"
    return json.loads(text)


async def tool_error(client, name: str, args: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail; returns the error text."""
    result = await client.call_tool(name, args or {})
    assert result.is_error, f"{name} unexpectedly succeeded: {result.content}"
    return result.content[0].text


class Tmux:
    """A private tmux server (its own socket, no user config) running one command in a pane."""

    def __init__(self, directory: Path, env: dict[str, str], rows: int = 30, cols: int = 100):
        import shutil

        tmux = shutil.which("tmux")
        if tmux is None:
            raise RuntimeError("tmux is not installed (scripts/bootstrap.sh installs it)")
        self.base = [tmux, "-S", str(directory / "tmux.sock"), "-f", "/dev/null"]
        # A terminal as a user has one: CI's markers make Gemini CLI (is-in-ci) take an
        # interactive start for a headless one ("No input provided via stdin").
        self.env = {
            key: value
            for key, value in env.items()
            if key not in ("CI", "CONTINUOUS_INTEGRATION") and not key.startswith("CI_")
        }
        self.rows, self.cols = rows, cols

    def run(self, *args: str) -> str:
        """One tmux command; its stdout."""
        done = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def start(self, argv: list[str], options: dict[str, str] | None = None) -> None:
        """A detached session of the given size running ``argv``, with global ``options``
        set before it starts."""
        import shlex

        before: list[str] = ["start-server", ";"]
        for name, value in (options or {}).items():
            before += ["set-option", "-g", name, value, ";"]
        self.run(
            *before,
            "new-session",
            "-d",
            "-x",
            str(self.cols),
            "-y",
            str(self.rows),
            shlex.join(argv),
        )
        # Keep the pane (and what it shows) when the command ends.
        self.run("set-option", "-g", "remain-on-exit", "on")

    def pane_pid(self) -> int:
        """The pid of the command in the pane."""
        return int(self.run("display-message", "-p", "#{pane_pid}").strip())

    def screen(self) -> list[str]:
        """The pane's visible lines, as tmux renders them."""
        return self.run("capture-pane", "-p").splitlines()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> list[str]:
        """Wait until a line of the pane matches ``pattern``; returns the pane."""
        regex = re.compile(pattern)
        try:
            return wait_for(
                lambda: (
                    (lines := self.screen()) and any(regex.search(line) for line in lines) and lines
                ),
                timeout,
                what=f"{pattern!r} on the tmux pane",
            )
        except AssertionError as exc:
            # What the pane showed instead is what tells a slow start from a dialog.
            screen = "\n".join(self.screen())
            raise AssertionError(f"{exc}; the pane shows:\n{screen}") from None

    def type(self, text: str) -> None:
        """Type ``text`` and press Enter."""
        self.run("send-keys", "-l", text)
        self.run("send-keys", "Enter")

    def resize(self, rows: int, cols: int) -> None:
        """Resize the window (the pane's program gets SIGWINCH)."""
        self.run("resize-window", "-x", str(cols), "-y", str(rows))

    def close(self) -> None:
        """Kill this tmux server and everything in it."""
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self.run("kill-server")
