"""Runs parsed scenario steps (see :mod:`aegis_mcp.demo.scenario` for what each does).

Modules that only some steps need (socket, subprocess, resource) are imported inside
those steps: the common path stays fast to start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from aegis_mcp.demo.output import TextSink
from aegis_mcp.demo.scenario import FOREVER, Step

# typing is not imported at run time (start-up cost); only type checkers look here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from aegis_mcp.demo.tools import ToolHub

MB = 1024 * 1024
GROW_PAUSE = 0.1
CONNECT_TIMEOUT = 5.0
READ_WINDOW = 1.0
# Claude Code's spinner: these glyphs forward then back, redrawn about ten times a second.
SPINNER_GLYPHS = "·✢✳✶✻✽"
SPINNER_FRAME_SECS = 0.1


class Spinner:
    """The "✻ Thinking… (12s · esc to interrupt)" line an agent redraws while it waits."""

    def __init__(self, sink: TextSink) -> None:
        self.sink = sink
        self.started = time.monotonic()
        self.frames = SPINNER_GLYPHS + SPINNER_GLYPHS[-2:0:-1]
        self.frame = 0
        self.tokens: int | None = None
        """Shown as "↓ N tokens" once a reply streams in."""

    def draw(self) -> None:
        """The next frame."""
        glyph = self.frames[self.frame % len(self.frames)]
        self.frame += 1
        secs = int(time.monotonic() - self.started)
        tokens = f" · ↓ {self.tokens} tokens" if self.tokens is not None else ""
        self.sink.status(f"{glyph} Thinking… ({secs}s{tokens} · esc to interrupt)")

    def clear(self) -> None:
        """Take the line away."""
        self.sink.status("")


def _endpoint(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MaxTurnsExceeded(Exception):
    """More tool calls were attempted in one turn than ``--max-turns`` allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"reached max turns ({limit})")
        self.limit = limit


class StepRunner:
    """Executes steps against a sink (where output goes) and an optional tool hub."""

    def __init__(
        self,
        sink: TextSink,
        hub: ToolHub | None,
        max_tool_calls: int | None = None,
    ) -> None:
        self.sink = sink
        self.hub = hub
        self.max_tool_calls = max_tool_calls
        # Tool calls made in the current turn; the caller resets it per turn.
        self.tool_calls = 0
        # Memory from grow steps: kept so the RSS stays up.
        self._held: list[bytearray] = []

    def run(self, steps: list[Step]) -> None:
        """Run steps in order; SystemExit (``exit``) and interrupts propagate."""
        for step in steps:
            handler: Callable[..., None] = getattr(self, "_do_" + step.kind.replace("-", "_"))
            handler(*step.args)

    def call_tool(self, name: str, args: dict, plain: bool = False) -> None:
        """Call an MCP tool and report it; ``plain`` prints the bare result text.

        Raises:
            MaxTurnsExceeded: the turn's tool-call budget is spent.
        """
        if self.max_tool_calls is not None and self.tool_calls >= self.max_tool_calls:
            raise MaxTurnsExceeded(self.max_tool_calls)
        self.tool_calls += 1
        if self.hub is None:
            use_id = self.sink.tool_use(name, args)
            self.sink.tool_result(use_id, name, "no MCP servers are configured", True, plain)
            return
        from aegis_mcp.demo.tools import ToolError

        try:
            # Stream consumers see the name Claude would use for the same tool.
            display = self.hub.qualified_name(name)
        except ToolError:
            display = name
        use_id = self.sink.tool_use(display, args)
        try:
            text, is_error = self.hub.call(name, args)
        except ToolError as exc:
            text, is_error = str(exc), True
        self.sink.tool_result(use_id, name, text, is_error, plain)

    # -- steps ----------------------------------------------------------------------

    def _do_say(self, text: str) -> None:
        self.sink.say(text)

    def _do_sleep(self, secs: float) -> None:
        time.sleep(secs)

    def _do_quiet(self) -> None:
        while True:
            time.sleep(3600)

    def _do_spin(self, secs: float | None) -> None:
        deadline = None if secs is None else time.monotonic() + secs
        while deadline is None or time.monotonic() < deadline:
            # Plain bytecode, so pending signals are still handled between iterations.
            for _ in range(10000):
                pass

    def _do_grow(self, total_mb: float, step_mb: float) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        remaining, step = int(total_mb * MB), max(int(step_mb * MB), 1)
        first = True
        while remaining > 0:
            if not first:
                # Spread the growth out so a memory watchdog can watch it happen.
                time.sleep(GROW_PAUSE)
            first = False
            size = min(step, remaining)
            chunk = bytearray(size)
            # Write one byte per page: untouched pages would not count in RSS.
            chunk[::page] = b"\x01" * len(range(0, size, page))
            self._held.append(chunk)
            remaining -= size
        held = sum(len(c) for c in self._held) / MB
        self.sink.say(f"grow: holding {held:g} MB")

    def _do_exit(self, code: int) -> None:
        raise SystemExit(code)

    def _do_crash(self) -> None:
        import faulthandler
        import resource

        try:
            # Nobody wants a core file from a deliberate crash in their project.
            _, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        except (ValueError, OSError):
            pass
        faulthandler.disable()
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(1)
        os._exit(128 + signal.SIGSEGV)

    def _do_tool(self, name: str, args: dict) -> None:
        self.call_tool(name, args)

    def _do_connect(self, host: str, port: int, nbytes: int) -> None:
        import socket

        label = _endpoint(host, port)
        sent = received = 0
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
                chunk = b"x" * min(nbytes, 65536)
                while sent < nbytes:
                    sock.sendall(chunk[: nbytes - sent])
                    sent += min(len(chunk), nbytes - sent)
                # Half-close so a server that reads to EOF answers and closes at once.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + READ_WINDOW
                while (remaining := deadline - time.monotonic()) > 0:
                    sock.settimeout(remaining)
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        break
                    if not data:
                        break
                    received += len(data)
        except OSError as exc:
            self.sink.say(f"connect {label} error: {exc}")
            return
        self.sink.say(f"connect {label} ok sent={sent} recv={received}")

    def _do_ignore_sigint(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.sink.say("ignoring SIGINT")

    def _do_ignore_sigterm(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.sink.say("ignoring SIGTERM")

    def _do_stop_self(self) -> None:
        self.sink.say(f"stopping self (pid {os.getpid()})")
        os.kill(os.getpid(), signal.SIGSTOP)
        self.sink.say("continued")

    def _do_spawn_child(self, secs: float) -> None:
        import subprocess
        import sys
        import threading

        proc = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({secs!r})"],
            stdin=subprocess.DEVNULL,
        )
        # Reap it when it ends, or it would linger as a zombie in the process tree.
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        self.sink.say(f"spawned child {proc.pid}")

    def _do_print_env(self, name: str) -> None:
        value = os.environ.get(name)
        self.sink.say(f"{name} is unset" if value is None else f"{name}={value}")

    def _do_write(self, path: str, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            self.sink.say(f"write {path} error: {exc.strerror or exc}")
            return
        self.sink.say(f"wrote {path} ({len(data)} bytes)")

    def _do_spinner(self, secs: float | None) -> None:
        spinner = Spinner(self.sink)
        deadline = None if secs is None else time.monotonic() + secs
        try:
            while deadline is None or time.monotonic() < deadline:
                spinner.draw()
                time.sleep(SPINNER_FRAME_SECS)
        finally:
            spinner.clear()

    def _do_stream(self, secs: float, text: str) -> None:
        words = text.split(" ")
        pause = secs / max(len(words), 1)
        for i, word in enumerate(words):
            self.sink.write_partial(word if i == 0 else " " + word)
            time.sleep(pause)
        self.sink.end_line()

    def _do_ask(self, host: str, port: int, prompt: str) -> None:
        import codecs
        import socket

        label = _endpoint(host, port)
        spinner = Spinner(self.sink)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
                sock.sendall(prompt.encode() + b"\n")
                sock.settimeout(SPINNER_FRAME_SECS)
                received = 0
                while True:
                    spinner.draw()
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    received += len(data)
                    spinner.tokens = received // 4
                    *lines, pending = (pending + decoder.decode(data)).split("\n")
                    if lines:
                        spinner.clear()
                    for line in lines:
                        self.sink.say(line)
        except OSError as exc:
            spinner.clear()
            self.sink.say(f"ask {label} error: {exc}")
            return
        finally:
            spinner.clear()
        pending += decoder.decode(b"", final=True)
        if pending:
            self.sink.say(pending)

    def _do_background_io(self, secs: float, nbytes: int) -> None:
        import tempfile
        import threading

        data = b"." * nbytes

        def trickle() -> None:
            with tempfile.TemporaryFile(buffering=0) as scratch:
                while True:
                    time.sleep(secs)
                    with contextlib.suppress(OSError):
                        scratch.seek(0)
                        scratch.write(data)
                        scratch.seek(0)
                        scratch.read(nbytes)

        threading.Thread(target=trickle, name="background-io", daemon=True).start()
        self.sink.say(f"background I/O: {nbytes} bytes every {secs:g}s")

    def _do_repeat(self, times: int, sub: list[Step]) -> None:
        count = 0
        while times == FOREVER or count < times:
            self.run(sub)
            count += 1
