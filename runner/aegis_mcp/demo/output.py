"""Where the demo's output goes.

:class:`Console` serialises writes from the main thread and the MCP thread and flushes
every line: the supervisor watches the agent's output for signs of life, so nothing may
sit in a buffer. :class:`TextSink` receives what one turn produces (lines, tool calls);
headless JSON modes substitute a sink that emits Claude-style events instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading

CLEAR_LINE = "\r\x1b[2K"


class Console:
    """Line-oriented stdout/stderr with a lock and an immediate flush.

    ``json_stdout`` means stdout carries JSON only, so informational lines (MCP status,
    "continuing conversation") move to stderr.
    """

    def __init__(self, json_stdout: bool = False) -> None:
        self.json_stdout = json_stdout
        # Re-entrant: a signal handler runs on the main thread and may write while the
        # main thread is inside a write. Held by callers to write several things at once.
        self.lock = threading.RLock()
        self._status = ""

    def _write(self, to_stderr: bool, text: str) -> None:
        with self.lock:
            # Looked up on each call: sys.stdout may be replaced (tests, reconfiguration).
            stream = sys.stderr if to_stderr else sys.stdout
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                # The terminal went away (supervisor closed the PTY): keep running until
                # stdin says so, as a real agent would.
                pass

    def out(self, text: str, end: str = "\n") -> None:
        """Write to stdout (above the status line, when one is shown)."""
        with self.lock:
            if self._status and end == "\n":
                self._write(False, CLEAR_LINE + text + end + self._status)
            else:
                self._write(False, text + end)

    def show_status(self, text: str) -> None:
        """Draw ``text`` over the current line and keep it below later lines ("" clears it)."""
        with self.lock:
            self._status = text
            self._write(False, CLEAR_LINE + text)

    def err(self, text: str) -> None:
        """Write a diagnostic line to stderr."""
        self._write(True, text + "\n")

    def info(self, text: str) -> None:
        """Write a status line where it does not corrupt machine-readable output."""
        if self.json_stdout:
            self.err(text)
        else:
            self.out(text)

    @staticmethod
    def raw(text: str) -> None:
        """Write straight to fd 1, bypassing Python's buffers; safe inside signal handlers."""
        with contextlib.suppress(OSError):
            os.write(1, text.encode("utf-8", "replace"))


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def append_json_line(path: str, obj: object) -> None:
    """Append ``obj`` as one JSON line with a single ``os.write`` to an ``O_APPEND`` descriptor,
    so that concurrent or killed writers never leave half a line.

    Raises:
        OSError: the file cannot be opened or written.
    """
    line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def format_tool_line(name: str, text: str, is_error: bool) -> str:
    """The line a scenario's tool step prints."""
    return f"tool {name} error: {text}" if is_error else f"tool {name} -> {text}"


class TextSink:
    """Prints a turn's output as plain lines and remembers it as the reply text."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lines: list[str] = []
        self._partial: list[str] = []
        # A status line redrawn in place (the spinner) only makes sense on a terminal.
        self.live = _is_terminal(1) and not console.json_stdout

    def begin_turn(self) -> None:
        """Forget the previous turn's lines."""
        self.lines = []

    @property
    def text(self) -> str:
        """Everything said this turn, as the reply text."""
        return "\n".join(self.lines)

    def say(self, text: str) -> None:
        """One line of the agent's reply."""
        self.lines.append(text)
        self.console.out(text)

    def write_partial(self, fragment: str) -> None:
        """Part of a reply line, shown as it arrives (a model's stream)."""
        self._partial.append(fragment)
        self.console.out(fragment, end="")

    def end_line(self) -> None:
        """The streamed line is complete."""
        self.lines.append("".join(self._partial))
        self._partial = []
        self.console.out("")

    def status(self, text: str) -> None:
        """Draw ``text`` over the current line, in place ("" clears it): the spinner."""
        if self.live:
            self.console.show_status(text)

    def tool_use(self, name: str, args: dict) -> str:
        """A tool call is about to be made; returns an id that pairs it with its result."""
        return ""

    def tool_result(
        self, use_id: str, name: str, text: str, is_error: bool, plain: bool = False
    ) -> None:
        """A tool call finished; ``plain`` (the /tool command) shows only the result text."""
        self.say(text if plain and not is_error else format_tool_line(name, text, is_error))
