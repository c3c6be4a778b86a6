"""Writing a pool's own agent records through to the database.

A spawn is saved before it exists anywhere else, so a refused write refuses
the spawn. Every later change (started, ended) happened whatever the disk
says, so it is kept in memory when its write fails: the record is marked
dirty, its history event kept, and ``flush`` (called every second by the
pool) tries again. Output tails are only marked dirty: one write per output
chunk would cost more than the agent. The host hears once when writing
starts failing and once when it works again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import agent_rows
from .errors import PoolUnavailable
from .records import AgentRecord
from .store import PoolStore

Event = tuple[str, str, str]
"""``(kind, message, level)``."""


class RecordWriter:
    """Saves records of one pool; remembers what could not be saved yet."""

    def __init__(
        self, store: PoolStore, emit: Callable[[str, str, str], None], retry_secs: float
    ) -> None:
        self.store = store
        self._emit = emit
        self._retry_secs = retry_secs
        self.dirty: set[str] = set()
        self._events: list[tuple[str, str, str, str | None]] = []
        self.error: str | None = None
        """The last write failure, while writes fail."""

    @property
    def pending(self) -> bool:
        """Whether something waits to be saved."""
        return bool(self.dirty or self._events)

    def insert(self, record: AgentRecord, event: Event) -> None:
        """Save a new agent; PoolUnavailable (nothing saved) when the database refuses."""
        with self.store.write() as conn:
            agent_rows.insert(conn, record)
            self.store.add_event(conn, *event, record.agent_id)

    def save(self, record: AgentRecord, event: Event | None = None) -> bool:
        """Save a change of ``record``; False when it is kept for later."""
        try:
            with self.store.write() as conn:
                agent_rows.save(conn, record)
                if event is not None:
                    self.store.add_event(conn, *event, record.agent_id)
        except PoolUnavailable as exc:
            self.dirty.add(record.agent_id)
            if event is not None:
                self._events.append((*event, record.agent_id))
            self._failed(exc)
            return False
        self.dirty.discard(record.agent_id)
        self._ok()
        return True

    def flush(self, records: Mapping[str, AgentRecord]) -> int:
        """Save the dirty ``records`` and kept events; returns how many records still wait."""
        if not self.pending:
            return 0
        dirty = [records[i] for i in self.dirty if i in records]
        events = list(self._events)
        try:
            with self.store.write() as conn:
                for record in dirty:
                    agent_rows.save(conn, record)
                for kind, message, level, agent_id in events:
                    self.store.add_event(conn, kind, message, level, agent_id)
        except PoolUnavailable as exc:
            self._failed(exc)
            return len(self.dirty)
        self.dirty.clear()
        del self._events[: len(events)]
        self._ok()
        return 0

    def _failed(self, exc: PoolUnavailable) -> None:
        if self.error is None:
            self._emit(
                "pool.store_error",
                f"{exc}; the pool keeps its state in memory and retries every "
                f"{self._retry_secs:g} s",
                "error",
            )
        self.error = str(exc)

    def _ok(self) -> None:
        if self.error is not None:
            self.error = None
            self._emit("pool.store_ok", "the pool database is written again", "info")
