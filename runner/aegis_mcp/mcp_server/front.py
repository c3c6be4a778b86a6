"""``aegis-mcp --mcp-server``: answer the client's opening requests at once, then hand the
connection to the SDK.

A thread reads the client's lines from the start (framed as the SDK's ``stdio_server`` frames
them). Until the SDK is imported it answers what the record of the SDK's own replies covers
(:mod:`.handshake`: ``initialize``, ``tools/list``, ...) and keeps every line. Meanwhile the main
thread imports the SDK and builds the server; the kept lines are then replayed to it in order,
the ones already answered included, so that the SDK's session is in the state the client
believes. The SDK's replies to those are held back, each compared with what was sent (a
difference drops the record: the next start records anew). From then on every line goes to the
SDK and every reply of the SDK to the client. Without a record (the first start, or after an
upgrade) everything waits for the SDK, which records its replies in the background for the
next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from . import handshake
from .wire import LineQueue, LineWriter

if TYPE_CHECKING:  # asyncio costs tens of milliseconds: it is imported after the answer
    import asyncio

OPENING_WAIT = 0.25
"""How long the SDK's import waits for the client's first request (so that the answer to it
does not compete with the import for the interpreter): clients send it as they start us."""
IMPORT_SWITCH_INTERVAL = 0.0005
"""The interpreter's thread switch interval during the SDK's import: the reader thread answers
within it."""
CACHE = "mcp"


class Front:
    """The reader thread and the hand-over (see the module docstring)."""

    def __init__(self, in_fd: int, out_fd: int, record: handshake.Record | None) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.record = record
        self.write_lock = threading.Lock()
        self.opened = threading.Event()
        self.stale = False
        self._lock = threading.Lock()
        self._era = ""
        self._fast = record is not None
        self._kept: list[str] = []
        self._answered: dict[str, bytes] = {}
        self._queue: LineQueue | None = None
        self._eof = False
        self._thread = threading.Thread(target=self._read, name="aegis-mcp-stdin", daemon=True)

    def start(self) -> None:
        """Start reading the client's lines."""
        self._thread.start()

    @property
    def answered_early(self) -> int:
        """Replies given before the SDK was up and not yet matched with the SDK's own."""
        return len(self._answered)

    def send(self, data: bytes) -> None:
        """Write ``data`` to the client (the caller holds :attr:`write_lock`); a client that
        went away loses it, and the reader then sees the end of its input."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.out_fd, view) :]
        except OSError:
            pass

    def _read(self) -> None:
        binary = os.fdopen(self.in_fd, "rb", closefd=False)
        # The SDK's own framing: UTF-8 with undecodable bytes replaced, universal newlines.
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace")
        with contextlib.suppress(OSError, ValueError):
            for line in text:
                with self._lock:
                    if self._queue is not None:
                        self._queue.push(line)
                        continue
                    self._kept.append(line)
                    if self._fast:
                        self._answer(line)
                self.opened.set()
        with self._lock:
            self._eof = True
            if self._queue is not None:
                self._queue.push(None)
        self.opened.set()

    def _answer(self, line: str) -> None:
        answer = self.record.answer(line, self._era)  # type: ignore[union-attr]
        if answer is None:
            # A request only the SDK may answer. In the 2025 handshake the session has a state
            # that it may change: everything after it waits for the SDK too, in order. Requests
            # in the 2026 envelope stand alone (Claude Code's subscriptions/listen, say).
            self._fast = self._era == "modern"
            return
        self._era = answer.era
        if answer.reply is not None:
            self._answered[answer.request_id] = answer.reply
            with self.write_lock:
                self.send(answer.reply)

    def hand_over(self, loop: asyncio.AbstractEventLoop) -> LineQueue:
        """The lines for the SDK: those kept so far, then every later one as it comes (call
        it in ``loop``)."""
        with self._lock:
            queue = LineQueue(loop, self._kept)
            self._kept = []
            if self._eof:
                queue.push(None)
            self._queue = queue
        return queue

    def held_back(self, data: bytes) -> bool:
        """Whether ``data`` (a line the SDK writes) is its reply to a request answered early:
        that reply was sent already, and is only compared with what was sent."""
        if not self._answered:
            return False
        try:
            message = json.loads(data)
        except ValueError:
            return False
        if not isinstance(message, dict) or "method" in message or "id" not in message:
            return False
        request_id = handshake.id_text(message["id"])
        sent = self._answered.pop(request_id, None) if request_id is not None else None
        if sent is None:
            return False
        if sent != data:
            self.stale = True
            print(
                "aegis-mcp: the recorded reply to an opening request differs from the SDK's; "
                "the record is dropped (the next start records it again)",
                file=sys.stderr,
            )
        return True


def _claim_stdio() -> tuple[int, int]:
    """Private descriptors of the wire; fd 0 then reads /dev/null and fd 1 writes to stderr, as
    under the SDK's ``stdio_server``, so that a stray print or a child cannot corrupt it."""
    try:
        in_fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
        out_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        return 0, 1
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
    return in_fd, out_fd


def _record_directory() -> Path | None:
    from ..paths import cache_dir
    from ..safe_paths import UnsafeDirectoryError

    try:
        return cache_dir(CACHE)
    except (OSError, UnsafeDirectoryError):
        return None


def serve() -> int:
    """Run the MCP server on stdio until the client goes away."""
    in_fd, out_fd = _claim_stdio()
    directory = _record_directory()
    key = handshake.record_key()
    record = handshake.load(directory, key) if directory is not None else None
    front = Front(in_fd, out_fd, record)
    front.start()
    if record is not None:
        front.opened.wait(OPENING_WAIT)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(IMPORT_SWITCH_INTERVAL)
    try:
        import asyncio
        import logging

        from .backend import make_backend
        from .server import build_server, run_on
    finally:
        sys.setswitchinterval(previous)
    # Logs must never reach the wire.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    backend = make_backend()
    server = build_server(backend)
    # The SDK's hundreds of thousands of objects stay for the process's life: out of the
    # collector's sight, a full collection no longer walks them (tens of ms in a tool call).
    import gc

    gc.collect()
    gc.freeze()

    async def main() -> None:
        lines = front.hand_over(asyncio.get_running_loop())
        writer = LineWriter(front.send, front.write_lock, front.held_back)
        recording = None
        if record is None and directory is not None and key is not None:
            recording = asyncio.create_task(_record(directory, key))
        try:
            await run_on(server, lines, writer)
        finally:
            await backend.close()
            if recording is not None:
                await recording
        if front.stale and directory is not None:
            handshake.drop(directory)

    import anyio

    anyio.run(main)
    return 0


async def _record(directory: Path, key: str) -> None:
    """Record the SDK's replies for the next start; a failure only costs that start its speed."""
    from .recording import record

    try:
        handshake.save(directory, key, await record())
    except Exception as exc:
        print(f"aegis-mcp: could not record the MCP handshake: {exc!r}", file=sys.stderr)
