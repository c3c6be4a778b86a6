"""The stdio wire as the SDK's ``stdio_server`` takes it: an async iterator of lines and an
object with ``write``/``flush``, here fed and drained by the front (:mod:`.front`) instead of
the SDK's own thread-per-line file wrappers. No SDK import here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the front answers before asyncio is imported
    import asyncio


class LineQueue:
    """Lines for the SDK, pushed from any thread; iteration ends at :meth:`push` of None."""

    def __init__(self, loop: asyncio.AbstractEventLoop, first: Iterable[str] = ()) -> None:
        import asyncio

        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        for line in first:
            self._queue.put_nowait(line)

    def push(self, line: str | None) -> None:
        """Add a line (None: the end), from any thread."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, line)

    def __aiter__(self) -> LineQueue:
        return self

    async def __anext__(self) -> str:
        line = await self._queue.get()
        if line is None:
            self._queue.put_nowait(None)  # every later read ends too
            raise StopAsyncIteration
        return line


class LineWriter:
    """Writes what the SDK sends through ``send`` (bytes), in order, under one lock shared with
    whoever else writes to the same descriptor; ``keep`` may hold a line back (True: sent)."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        lock: threading.Lock,
        keep: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._send = send
        self._lock = lock
        self._keep = keep

    async def write(self, text: str) -> None:
        """Send one line (the SDK writes a whole JSON-RPC message and its newline at once)."""
        data = text.encode()
        if self._keep is not None and self._keep(data):
            return
        if len(data) <= 1 << 16:
            self._locked_send(data)  # fits a pipe's buffer: no thread hop for a small reply
        else:
            import asyncio

            await asyncio.to_thread(self._locked_send, data)

    async def flush(self) -> None:
        """Nothing to do: every write went straight to the descriptor."""

    def _locked_send(self, data: bytes) -> None:
        with self._lock:
            self._send(data)
