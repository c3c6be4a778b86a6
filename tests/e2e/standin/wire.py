"""Writing HTTP answers: JSON bodies and server-sent events, with pauses a stop cuts short."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from .script import SlowText, Text, ToolCall, Turn


class Wire:
    """One response being written to a client."""

    def __init__(self, handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        self._handler = handler
        self._stopping = stopping
        self.bytes_sent = 0

    def json(self, status: int, body: Any) -> None:
        """A complete JSON response."""
        data = json.dumps(body).encode()
        h = self._handler
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        self._write(data)

    def begin_events(self) -> None:
        """Headers of a server-sent event stream (ended by closing the connection)."""
        h = self._handler
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        h.wfile.flush()

    def event(self, data: Any, name: str | None = None) -> None:
        """One event: ``event: NAME`` (if named) and a JSON ``data:`` line."""
        head = f"event: {name}\n" if name else ""
        payload = data if isinstance(data, str) else json.dumps(data)
        self._write(f"{head}data: {payload}\n\n".encode())

    def comment(self, text: str) -> None:
        """An SSE comment, which clients skip: what a proxy sends to keep a stream open."""
        self._write(f": {text}\n\n".encode())

    def keep_alive(self, every: float, seconds: float | None, send: Callable[[], None]) -> None:
        """``send()`` every ``every`` seconds for ``seconds`` (None: until the client goes
        away or the server stops)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if not self.pause(every):
                return
            send()

    def pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until the server stops); False if it is stopping."""
        return not self._stopping.wait(seconds)

    def _write(self, data: bytes) -> None:
        self._handler.wfile.write(data)
        self._handler.wfile.flush()
        self.bytes_sent += len(data)


def text_pieces(turn: Text | SlowText) -> tuple[list[str], float]:
    """The deltas a text turn is streamed in, and the pause between them."""
    if isinstance(turn, Text):
        return [turn.text], 0.0
    size = max(1, -(-len(turn.text) // max(1, turn.chunks)))
    return [turn.text[i : i + size] for i in range(0, len(turn.text), size)] or [""], turn.interval


def stream_text(wire: Wire, turn: Text | SlowText, emit) -> None:
    """Call ``emit(delta)`` for each piece of ``turn``, pausing between pieces."""
    pieces, interval = text_pieces(turn)
    for n, piece in enumerate(pieces):
        if n and interval and not wire.pause(interval):
            return
        emit(piece)


def full_text(turns: list[Turn]) -> str:
    """The text of every text turn, joined."""
    return "".join(t.text for t in turns if isinstance(t, (Text, SlowText)))


def calls(turns: list[Turn]) -> list[ToolCall]:
    """The tool calls among ``turns``."""
    return [t for t in turns if isinstance(t, ToolCall)]
