"""The runner's one in-memory state, its snapshot file and its event log.

Readers that cannot use the control socket (a dashboard of another user, a
shell script) read the snapshot: it is replaced atomically (write to a
temporary file in the same directory, fsync-free rename), so a reader sees an
old or a new state, never half of one. Events are appended to a JSONL file as
they happen and the last ones are kept in memory for the socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import create_new, write_atomic

MAX_EVENTS_IN_MEMORY = 500
SNAPSHOT_MIN_INTERVAL = 0.25


class EventLog:
    """Timestamped runner events: memory ring plus an append-only JSONL file."""

    def __init__(self, path: Path | None, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS_IN_MEMORY)
        self._seq = 0
        self._fd: int | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        if path is not None:
            # A new file: never one planted under this (predictable) name.
            self._fd = create_new(path, owner=owner, flags=os.O_WRONLY | os.O_APPEND, replace=True)

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with every new event."""
        self._listeners.append(listener)

    def emit(self, kind: str, message: str, level: str = "info", **data: Any) -> dict[str, Any]:
        """Record an event; returns it."""
        self._seq += 1
        event = {
            "seq": self._seq,
            "ts": time.time(),
            "kind": kind,
            "level": level,
            "message": message,
        }
        event.update(data)
        self.recent.append(event)
        if self._fd is not None:
            try:
                os.write(self._fd, json.dumps(event, default=str).encode() + b"\n")
            except OSError as exc:
                # A full disk must not take the runner down; say it once per failure.
                print(f"aegis-mcp: cannot write event log: {exc.strerror}", file=sys.stderr)
        for listener in self._listeners:
            listener(event)
        return event

    def since(self, seq: int, limit: int = 100) -> list[dict[str, Any]]:
        """Events with a sequence number above ``seq`` (oldest first)."""
        return [e for e in self.recent if e["seq"] > seq][-limit:]

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SnapshotWriter:
    """Writes the state snapshot when asked, at most every SNAPSHOT_MIN_INTERVAL seconds."""

    def __init__(
        self, path: Path, build: Callable[[], dict[str, Any]], owner: tuple[int, int] | None
    ) -> None:
        self.path = path
        self._build = build
        self._owner = owner
        self._pending: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._closed = False
        self.errors = 0

    def request(self) -> None:
        """Schedule a write soon (coalescing bursts of changes)."""
        if self._pending is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last + SNAPSHOT_MIN_INTERVAL - time.monotonic())
        self._pending = loop.call_later(delay, self.write_now)

    def close(self) -> None:
        """Write no more (a pending write is dropped): the run is over."""
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def write_now(self) -> None:
        """Write the snapshot immediately."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._last = time.monotonic()
        try:
            data = json.dumps(self._build(), default=str, indent=1).encode()
            write_atomic(self.path, data, owner=self._owner)
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                print(f"aegis-mcp: cannot write state snapshot: {exc.strerror}", file=sys.stderr)
