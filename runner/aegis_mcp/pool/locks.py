"""Advisory file locks that let agents working in one tree stay out of each other's way.

A lock is a claim by a named holder (``primary`` for the interactive agent, an
agent id for a pool agent) on one path under the project root. Nothing stops a
process from writing a locked file: agents ask before they edit. A claim ends
when its holder releases it, when its time to live runs out, or when the
process named as its holder dies; the last two are noticed on every call, so
no timer is needed.

Locks live in the pool database, so every pool on one state directory (two
runners, say) sees the same locks, and an acquire is one ``BEGIN IMMEDIATE``
transaction: check and claim are atomic across processes. A holder name is
scoped by the process that took the lock for it (its *owner*, e.g. the runner):
two runners' ``primary`` agents are different holders. A lock without a holder
pid ends with its owner.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from typing import Any

from ..control import validate
from . import liveness
from .store import PoolStore

DEFAULT_TTL_SECS = 300.0
MAX_TTL_SECS = 86_400
MAX_WAIT_SECS = 3_600
POLL_SECS = 0.25
"""How often a waiter looks again; expiry, holder deaths and other processes'
releases are noticed by looking."""


def _view(row: sqlite3.Row) -> dict[str, Any]:
    """The public form of a lock row."""
    return {
        "path": row["path"],
        "holder": row["holder"],
        "holder_pid": row["holder_pid"],
        "since": row["since"],
        "expires_at": row["expires_at"],
        "owner_pid": row["owner_pid"],
    }


class FileLocks:
    """The locks on paths under ``root``, kept in ``store`` (default: a private in-memory one)."""

    def __init__(self, root: str, store: PoolStore | None = None) -> None:
        self.root = os.path.realpath(root)
        self.store = store if store is not None else PoolStore.in_memory()
        self._waiters: list[asyncio.Future[None]] = []

    def normalise(self, path: str) -> str:
        """The real absolute path for ``path`` (relative to the root); refuses paths outside it."""
        path = validate.string("path", path)
        real = os.path.realpath(os.path.join(self.root, os.path.expanduser(path)))
        if os.path.commonpath([self.root, real]) != self.root:
            raise validate.invalid(
                f"path {path!r} resolves to {real}, outside the project root {self.root}; "
                "only files under the root can be locked"
            )
        return real

    async def acquire(
        self,
        path: str,
        holder: str,
        holder_pid: int | None,
        ttl_secs: float = DEFAULT_TTL_SECS,
        wait_secs: float = 0,
    ) -> dict[str, Any]:
        """Lock ``path`` for ``holder``, waiting up to ``wait_secs`` for another holder's lock.

        ``acquired`` in the reply says whether it worked; when it did not, the
        reply names the current holder. Re-acquiring one's own lock extends it.
        Every argument is checked here (``ops`` passes them on as decoded JSON).
        """
        real = self.normalise(path)
        holder = validate.string("holder", holder)
        ttl = validate.number("ttl_secs", ttl_secs, 1, MAX_TTL_SECS)
        wait = validate.number("wait_secs", wait_secs, 0, MAX_WAIT_SECS)
        started: float | None = None
        if holder_pid is not None:
            holder_pid = validate.integer("holder_pid", holder_pid, 1, 2**31 - 1)
            started = liveness.process_start(holder_pid)
            if started is None:
                raise validate.invalid(f"holder_pid {holder_pid} is not a running process")
        begun = time.monotonic()
        deadline = begun + wait
        while True:
            got, row = self._try_acquire(real, holder, holder_pid, started, ttl)
            if got:
                waited = round(time.monotonic() - begun, 3)
                return {"acquired": True, **_view(row), "waited_secs": waited}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {
                    "acquired": False,
                    "path": real,
                    "held_by": row["holder"],
                    "holder_pid": row["holder_pid"],
                    "owner_pid": row["owner_pid"],
                    "expires_at": row["expires_at"],
                    "message": (
                        f"{real} is locked by {row['holder']!r}; retry later, wait with "
                        "wait_secs, or ask that holder to release it"
                    ),
                }
            await self._changed(min(remaining, POLL_SECS))

    def release(self, path: str, holder: str) -> dict[str, Any]:
        """Release ``holder``'s lock on ``path``; another holder's lock is refused."""
        real = self.normalise(path)
        holder = validate.string("holder", holder)
        with self.store.write() as conn:
            expired = self._expire(conn)
            row = conn.execute("SELECT * FROM locks WHERE path = ?", (real,)).fetchone()
            mine = row is not None and self._mine(row, holder)
            if mine:
                conn.execute("DELETE FROM locks WHERE path = ?", (real,))
                self.store.add_event(conn, "lock.release", f"{holder} released {real}")
        if expired or mine:
            self._wake()
        if row is None:
            return {
                "released": False,
                "path": real,
                "message": f"{real} was not locked (it may have expired or its holder died)",
            }
        if not mine:
            other = ""
            if row["holder"] == holder:
                other = f" of another process (pid {row['owner_pid']})"
            raise validate.invalid(
                f"{real} is locked by {row['holder']!r}{other}, not by {holder!r}; "
                "only the holder can release a lock"
            )
        return {"released": True, "path": real}

    def release_holder(self, holder: str) -> list[str]:
        """Release every lock of ``holder`` (a pool agent that ended); returns their paths."""
        with self.store.write() as conn:
            rows = conn.execute(
                "SELECT * FROM locks WHERE holder = ? AND owner_pid = ?",
                (holder, self.store.me.pid),
            ).fetchall()
            paths = [row["path"] for row in rows if self._mine(row, holder)]
            for path in paths:
                conn.execute("DELETE FROM locks WHERE path = ?", (path,))
                self.store.add_event(conn, "lock.release", f"{holder} ended: released {path}")
        if paths:
            self._wake()
        return paths

    def list(self) -> list[dict[str, Any]]:
        """Every live lock under the root, by path, whichever process took it."""
        # A read: stale rows are skipped here and deleted by the next write.
        now = time.time()
        rows = self.store.query("SELECT * FROM locks ORDER BY path")
        return [
            _view(row)
            for row in rows
            if os.path.commonpath([self.root, row["path"]]) == self.root
            and not self._stale(row, now)
        ]

    # -- inside transactions ---------------------------------------------------------

    def _try_acquire(
        self, real: str, holder: str, holder_pid: int | None, started: float | None, ttl: float
    ) -> tuple[bool, sqlite3.Row]:
        """One atomic attempt: ``(True, new row)`` or ``(False, the holder's row)``."""
        me = self.store.me
        with self.store.write() as conn:
            expired = self._expire(conn)
            row = conn.execute("SELECT * FROM locks WHERE path = ?", (real,)).fetchone()
            got = row is None or self._mine(row, holder)
            if got:
                now = time.time()
                conn.execute(
                    "INSERT OR REPLACE INTO locks (path, holder, holder_pid, holder_started, "
                    "owner_pid, owner_started, since, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        real,
                        holder,
                        holder_pid,
                        started,
                        me.pid,
                        me.started,
                        now if row is None else row["since"],
                        now + ttl,
                    ),
                )
                if row is None:
                    self.store.add_event(conn, "lock.acquire", f"{holder} locked {real}")
                row = conn.execute("SELECT * FROM locks WHERE path = ?", (real,)).fetchone()
        if expired:
            self._wake()
        return got, row

    def _mine(self, row: sqlite3.Row, holder: str) -> bool:
        return row["holder"] == holder and self.store.me.same(
            row["owner_pid"], row["owner_started"]
        )

    def _stale(self, row: sqlite3.Row, now: float) -> bool:
        """Past its time to live, or its holder (else its owner) process is gone."""
        if row["expires_at"] <= now:
            return True
        if row["holder_pid"] is not None:
            return not liveness.alive(row["holder_pid"], row["holder_started"])
        if self.store.me.same(row["owner_pid"], row["owner_started"]):
            return False
        return not liveness.alive(row["owner_pid"], row["owner_started"])

    def _expire(self, conn: sqlite3.Connection) -> int:
        """Delete stale locks; returns how many."""
        now = time.time()
        stale = [row for row in conn.execute("SELECT * FROM locks") if self._stale(row, now)]
        for row in stale:
            conn.execute("DELETE FROM locks WHERE path = ?", (row["path"],))
            why = "expired" if row["expires_at"] <= now else "its holder is gone"
            message = f"{row['holder']}'s lock on {row['path']} {why}"
            self.store.add_event(conn, "lock.expire", message)
        return len(stale)

    # -- waiting -------------------------------------------------------------------

    async def _changed(self, timeout: float) -> None:
        """Sleep until a lock is released here or ``timeout`` passes."""
        # A future per waiter rather than an asyncio.Condition: the locks may be
        # built before the loop that uses them exists.
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
