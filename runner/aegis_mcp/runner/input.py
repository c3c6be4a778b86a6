"""Forwarding the user's keystrokes to the agent's PTY."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

MAX_PENDING = 1 << 20


class InputForwarder:
    """Reads the user's terminal and writes to the current agent's PTY master.

    Keys typed while no agent runs (during a restart) are kept and delivered
    to the next one, up to MAX_PENDING bytes. Writes to the master never block
    the event loop: what the PTY cannot take yet waits in a buffer.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, src: int, on_input: Callable[[bytes], None]
    ) -> None:
        self._loop = loop
        self._src = src
        self._on_input = on_input
        self._dst: int | None = None
        self._pending = bytearray()
        self._writing = False
        loop.add_reader(src, self._readable)

    def target(self, fd: int | None) -> None:
        """Send input to ``fd`` from now on (None: keep it until there is a target)."""
        self._stop_writing()
        self._dst = fd
        if fd is not None:
            os.set_blocking(fd, False)
            self._flush()

    def _readable(self) -> None:
        try:
            data = os.read(self._src, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._src)
            return
        self._on_input(data)
        if len(self._pending) + len(data) <= MAX_PENDING:
            self._pending += data
        self._flush()

    def _flush(self) -> None:
        if self._dst is None or not self._pending:
            self._stop_writing()
            return
        try:
            written = os.write(self._dst, self._pending)
        except BlockingIOError:
            written = 0
        except OSError:
            # The agent is going away; keep the keys for the next one.
            self._stop_writing()
            return
        del self._pending[:written]
        if self._pending and not self._writing:
            self._loop.add_writer(self._dst, self._flush)
            self._writing = True
        elif not self._pending:
            self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing and self._dst is not None:
            self._loop.remove_writer(self._dst)
        self._writing = False

    def close(self) -> None:
        """Stop forwarding."""
        self._stop_writing()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._src)
