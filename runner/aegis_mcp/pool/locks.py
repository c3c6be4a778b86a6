"""Advisory file locks that let agents working in one tree stay out of each other's way.

A lock is a claim by a named holder (``primary`` for the interactive agent, an
agent id for a pool agent) on one path under the project root. Nothing stops a
process from writing a locked file: agents ask before they edit. A claim ends
when its holder releases it, when its time to live runs out, or when the
process named as its holder dies; the last two are noticed on every call, so
no timer is needed.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import validate

DEFAULT_TTL_SECS = 300.0
MAX_TTL_SECS = 86_400
MAX_WAIT_SECS = 3_600
POLL_SECS = 0.25
"""How often a waiter looks again; expiry and holder deaths are noticed by looking."""


@dataclass
class FileLock:
    """One claim on one path."""

    path: str
    holder: str
    holder_pid: int | None
    since: float
    expires_at: float
    holder_started: float | None = None
    """The holder process's start time, so that a reused pid is not taken for the holder."""

    def view(self) -> dict[str, Any]:
        """The public form (without the pid-reuse guard)."""
        data = asdict(self)
        del data["holder_started"]
        return data


def _process_start(pid: int) -> float | None:
    """Start time of a live (non-zombie) process, None when there is none."""
    # Imported here: the runner imports the pool at start-up, in front of every agent.
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


class FileLocks:
    """The locks on paths under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self._locks: dict[str, FileLock] = {}
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
        """
        real = self.normalise(path)
        holder = validate.string("holder", holder)
        ttl = validate.number("ttl_secs", ttl_secs, 1, MAX_TTL_SECS)
        wait = validate.number("wait_secs", wait_secs, 0, MAX_WAIT_SECS)
        started: float | None = None
        if holder_pid is not None:
            holder_pid = validate.integer("holder_pid", holder_pid, 1, 2**31 - 1)
            started = _process_start(holder_pid)
            if started is None:
                raise validate.invalid(f"holder_pid {holder_pid} is not a running process")
        begun = time.monotonic()
        deadline = begun + wait
        while True:
            self._expire()
            current = self._locks.get(real)
            if current is None or current.holder == holder:
                now = time.time()
                lock = FileLock(
                    path=real,
                    holder=holder,
                    holder_pid=holder_pid,
                    since=now if current is None else current.since,
                    expires_at=now + ttl,
                    holder_started=started,
                )
                self._locks[real] = lock
                waited = round(time.monotonic() - begun, 3)
                return {"acquired": True, **lock.view(), "waited_secs": waited}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {
                    "acquired": False,
                    "path": real,
                    "held_by": current.holder,
                    "holder_pid": current.holder_pid,
                    "expires_at": current.expires_at,
                    "message": (
                        f"{real} is locked by {current.holder!r}; retry later, wait with "
                        "wait_secs, or ask that holder to release it"
                    ),
                }
            await self._changed(min(remaining, POLL_SECS))

    def release(self, path: str, holder: str) -> dict[str, Any]:
        """Release ``holder``'s lock on ``path``; another holder's lock is refused."""
        real = self.normalise(path)
        holder = validate.string("holder", holder)
        self._expire()
        current = self._locks.get(real)
        if current is None:
            return {
                "released": False,
                "path": real,
                "message": f"{real} was not locked (it may have expired or its holder died)",
            }
        if current.holder != holder:
            raise validate.invalid(
                f"{real} is locked by {current.holder!r}, not by {holder!r}; "
                "only the holder can release a lock"
            )
        del self._locks[real]
        self._wake()
        return {"released": True, "path": real}

    def release_holder(self, holder: str) -> list[str]:
        """Release every lock of ``holder`` (a pool agent that ended); returns their paths."""
        paths = [p for p, lock in self._locks.items() if lock.holder == holder]
        for path in paths:
            del self._locks[path]
        if paths:
            self._wake()
        return paths

    def list(self) -> list[dict[str, Any]]:
        """Every live lock, by path."""
        self._expire()
        return [self._locks[path].view() for path in sorted(self._locks)]

    def _expire(self) -> None:
        """Drop locks past their time to live or whose holder process is gone."""
        now = time.time()
        stale = [
            path
            for path, lock in self._locks.items()
            if lock.expires_at <= now
            or (
                lock.holder_pid is not None
                and _process_start(lock.holder_pid) != lock.holder_started
            )
        ]
        for path in stale:
            del self._locks[path]
        if stale:
            self._wake()

    async def _changed(self, timeout: float) -> None:
        """Sleep until a lock is released or ``timeout`` passes."""
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
