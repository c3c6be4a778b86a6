"""The ``subscribe`` stream: the run's state, then its changes and events as they happen.

Every subscriber gets the current state (:class:`~aegis_mcp.control.snapshot.Snapshot`),
then the same messages as every other subscriber, numbered by one ``seq``:
runner events as they are emitted, netmon events as the sources deliver them,
and a change message for each section of the state that differs from what was
last sent. The state is rebuilt shortly after every event (changes coalesce
into one rebuild) and once a second while anyone listens, for what moves
without an event (uptimes, counters, the pool agents' output tails).

Nothing here waits for a subscriber: messages go to each one's
:class:`~.control_server.StreamSink`, which drops a client that reads too
slowly. With no subscriber the feed costs a length check per event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

from ..control.snapshot import KEYED_SECTIONS, SECTIONS, Snapshot, StateMessage
from .control_server import StreamSink

TICK_SECS = 1.0
COALESCE_SECS = 0.05
MAX_NETMON_PENDING = 256
"""Netmon events waiting for the loop; beyond that the oldest are counted as skipped."""


class StateFeed:
    """Fans the run's state and events out to the subscribers of the control socket."""

    def __init__(self, build: Callable[[], Snapshot], tick_secs: float = TICK_SECS) -> None:
        self._build = build
        self._tick_secs = tick_secs
        self._loop = asyncio.get_running_loop()
        self._sinks: list[StreamSink] = []
        self._seq = 0
        self._sent: dict[str, Any] = {}
        """The JSON last sent of each section (of each entry, for keyed sections)."""
        self._rebuild_handle: asyncio.TimerHandle | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._netmon: collections.deque[dict[str, Any]] = collections.deque()
        self._netmon_lock = threading.Lock()
        self._netmon_skipped = 0
        self._netmon_flush_due = False

    @property
    def subscribers(self) -> int:
        """How many clients listen now."""
        return len(self._sinks)

    def open(self, sink: StreamSink) -> StateMessage:
        """Add a subscriber; returns the state message its stream starts with."""
        state = self._build()
        # Bring the others up to this state first: every later change then
        # applies to all, and the newcomer's state is as of the last ``seq``.
        self._publish_changes(state)
        self._sinks.append(sink)
        sink.closed.add_done_callback(lambda _f: self._forget(sink))
        if self._ticker is None or self._ticker.done():
            self._ticker = self._loop.create_task(self._tick(), name="aegis-state-feed")
        return {"type": "state", "seq": self._seq, "state": state}

    def event(self, event: dict[str, Any]) -> None:
        """A runner event was emitted (an EventLog listener)."""
        if not self._sinks:
            return
        self._publish({"type": "event", "event": event})
        self.changed()

    def netmon_event(self, event: dict[str, Any]) -> None:
        """A netmon source delivered ``event`` (a NetmonStats listener, any thread)."""
        if not self._sinks:
            return
        with self._netmon_lock:
            if len(self._netmon) >= MAX_NETMON_PENDING:
                self._netmon.popleft()
                self._netmon_skipped += 1
            self._netmon.append(event)
            if self._netmon_flush_due:
                return
            self._netmon_flush_due = True
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._flush_netmon)

    def changed(self) -> None:
        """Something in the state changed: rebuild it soon (bursts make one rebuild)."""
        if self._sinks and self._rebuild_handle is None:
            self._rebuild_handle = self._loop.call_later(COALESCE_SECS, self._rebuild)

    def close(self, reason: str) -> None:
        """End every stream (the runner is exiting)."""
        if self._rebuild_handle is not None:
            self._rebuild_handle.cancel()
            self._rebuild_handle = None
        if self._ticker is not None:
            self._ticker.cancel()
        self._rebuild()
        for sink in list(self._sinks):
            sink.end("end", reason)
        self._sinks.clear()

    # -- inside -------------------------------------------------------------------------

    def _forget(self, sink: StreamSink) -> None:
        with contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    def _publish(self, message: dict[str, Any]) -> None:
        self._seq += 1
        message["seq"] = self._seq
        for sink in list(self._sinks):
            sink.send(message)

    def _flush_netmon(self) -> None:
        with self._netmon_lock:
            events, self._netmon = list(self._netmon), collections.deque()
            skipped, self._netmon_skipped = self._netmon_skipped, 0
            self._netmon_flush_due = False
        for event in events:
            message: dict[str, Any] = {"type": "netmon", "event": event}
            if skipped:
                message["skipped"] = skipped
                skipped = 0
            self._publish(message)
        self.changed()

    def _rebuild(self) -> None:
        self._rebuild_handle = None
        if not self._sinks:
            return
        try:
            state = self._build()
        except Exception as exc:
            # A bug in a section's builder: the subscribers hear of it, the run goes on.
            for sink in list(self._sinks):
                sink.end("end", f"the runner could not build its state: {exc!r}")
            return
        self._publish_changes(state)

    async def _tick(self) -> None:
        while self._sinks:
            await asyncio.sleep(self._tick_secs)
            self._rebuild()

    def _publish_changes(self, state: Snapshot) -> None:
        for section in SECTIONS:
            value = state[section]
            if section in KEYED_SECTIONS:
                self._publish_entries(section, value)
                continue
            encoded = _encode(value)
            if self._sent.get(section) != encoded:
                self._sent[section] = encoded
                self._publish({"type": "change", "section": section, "value": value})

    def _publish_entries(self, section: str, entries: dict[str, Any]) -> None:
        sent: dict[str, str] = self._sent.setdefault(section, {})
        for key, value in entries.items():
            encoded = _encode(value)
            if sent.get(key) != encoded:
                sent[key] = encoded
                self._publish({"type": "change", "section": section, "key": key, "value": value})
        for key in [k for k in sent if k not in entries]:
            del sent[key]
            self._publish({"type": "change", "section": section, "key": key, "value": None})


def _encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
