"""The runner's side of the control socket.

Only root and the agent's user may talk to it: the socket file is ``0600``
and owned by the agent user, and every connection's peer credentials
(``SO_PEERCRED``) are checked as well, so a permissive umask or a changed mode
cannot open it up. Every failure (bad JSON, unknown op, a handler that
raises) becomes an error reply; the runner keeps serving.

A stream op (``subscribe``) turns its connection into a one-way stream after
its reply: the runner writes lines to it through a :class:`StreamSink`, never
waiting for the client. A client that lets more than ``MAX_STREAM_BUFFER``
bytes pile up unread is dropped with a last ``dropped`` message, so that a
slow reader costs the runner neither time nor unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from .. import paths
from ..control import authority, protocol
from ..control.authority import Caller
from ..control.protocol import ControlError, OpHandler, Request, RequestError
from .identity import AgentTokens, Identifier, Peer

Handler = Callable[[Request, Caller], Awaitable[Any]]
"""An operation of the runner: the request, and who made it."""
Audit = Callable[[Request, Caller | None, Peer, bool, str | None], None]
"""Told of every request that names a served operation: the request, its caller
(None when its claim to be an agent was refused), the peer, whether it was
allowed, and the refusal's message."""
MAX_STREAM_BUFFER = 4 << 20
"""Bytes a stream client may leave unread (beyond the socket's own buffer)."""
DROP_GRACE_SECS = 5.0
"""How long a dropped client has to read its last lines before the connection is cut."""


class StreamSink:
    """One client's end of a stream: messages are written without waiting for it."""

    def __init__(
        self, writer: asyncio.StreamWriter, req_id: Any, max_buffered: int = MAX_STREAM_BUFFER
    ) -> None:
        self._writer = writer
        self._id = req_id
        self._max = max_buffered
        self._held: list[tuple[bytes, int | None]] | None = []
        self._seq: int | None = None
        """The ``seq`` of the last message written."""
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        """Resolved with the reason once the stream is over."""

    @property
    def active(self) -> bool:
        """Whether messages are still taken."""
        return not self.closed.done()

    def send(self, message: dict[str, Any]) -> bool:
        """Queue ``message`` for the client; False once the stream is over (or just dropped)."""
        if not self.active:
            return False
        line = protocol.stream_line(self._id, message)
        if self._held is not None:
            # The reply that opens the stream is not written yet: keep the order.
            self._held.append((line, message.get("seq")))
            return True
        self._write(line, message.get("seq"))
        return self.active

    def release(self) -> None:
        """The opening reply is out: write what waited for it."""
        held, self._held = self._held or [], None
        for line, seq in held:
            if self.active:
                self._write(line, seq)

    def end(self, kind: str, reason: str) -> None:
        """Send the last message (``end`` or ``dropped``) and close the stream."""
        if not self.active:
            return
        if self._held is not None:
            self.release()
        if not self.active:
            return
        # Numbered on from the last message this client got: it can tell it missed none.
        seq = (self._seq or 0) + 1
        self._writer.write(
            protocol.stream_line(self._id, {"type": kind, "seq": seq, "reason": reason})
        )
        self._finish(reason)

    def _write(self, line: bytes, seq: int | None) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            self._finish("the client went away")
        elif transport.get_write_buffer_size() + len(line) > self._max:
            self.end(
                "dropped",
                f"the client read too slowly: more than {self._max} bytes were waiting for it",
            )
        else:
            self._writer.write(line)
            self._seq = seq if seq is not None else self._seq

    def _finish(self, reason: str) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        transport = self._writer.transport
        # close() sends what is buffered first; a client that never reads is cut.
        transport.close()
        asyncio.get_running_loop().call_later(DROP_GRACE_SECS, transport.abort)


StreamOpener = Callable[[Request, StreamSink], Awaitable[Any]]
"""Opens a stream for ``sink`` and returns the reply's result (the first message)."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class ControlServer:
    """Serves control requests with the handlers registered by the runner."""

    def __init__(
        self,
        path: Path,
        allowed_uids: set[int],
        owner: tuple[int, int] | None = None,
        on_request: Audit | None = None,
        identifier: Identifier | None = None,
    ) -> None:
        """``identifier`` tells the callers apart (default: a runner of this process
        that issued no agent tokens: every caller is the user)."""
        self.path = path
        self.allowed_uids = allowed_uids | {0}
        self._owner = owner
        self.identifier = identifier or Identifier(os.getpid(), AgentTokens())
        self._handlers: dict[str, Handler] = {}
        self._streams: dict[str, StreamOpener] = {}
        self._on_request = on_request
        self._server: asyncio.Server | None = None
        self.rejected_peers = 0
        self.requests = 0

    def register(self, op: str, handler: Handler) -> None:
        """Serve ``op`` with ``handler`` (an async function of the request)."""
        self._handlers[op] = handler

    def register_stream(self, op: str, opener: StreamOpener) -> None:
        """Serve ``op`` as a stream: ``opener``'s result is the reply, then the sink's lines."""
        self._streams[op] = opener

    def register_lazy(
        self,
        ops: Iterable[str],
        factory: Callable[[], dict[str, OpHandler]],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Serve ``ops`` from the table ``factory`` builds on the first call of any of them
        (the packages behind them cost start-up time most runs never need). With
        ``ready``, a call waits for it first: an op whose subject is still being set
        up answers once it is, rather than being unknown for a moment."""
        table: dict[str, OpHandler] | None = None

        def serving(op: str) -> Handler:
            async def serve(request: Request, caller: Caller) -> Any:
                nonlocal table
                if ready is not None:
                    await ready.wait()
                if table is None:
                    table = factory()
                return await table[op](request.args, caller)

            return serve

        for op in ops:
            self.register(op, serving(op))

    @property
    def ops(self) -> list[str]:
        """Operations served."""
        return sorted([*self._handlers, *self._streams])

    async def start(self) -> None:
        """Bind and listen; the socket is private before it can accept anyone.

        It is made under a private name and renamed into place once it listens
        and has its owner: a client that connects the moment the name appears
        (another runner, the dashboard, the agent's MCP server) is never refused.
        """
        pending = paths.pending(self.path)
        for path in (pending, self.path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(pending), limit=protocol.MAX_MESSAGE_BYTES + 2
            )
        finally:
            os.umask(old_umask)
        # The umask made it 0600. A socket's owner cannot be set through its
        # descriptor: lchown, which never follows a link, in the checked runtime
        # directory that nobody else can write to.
        if self._owner is not None:
            os.chown(pending, *self._owner, follow_symlinks=False)
        os.rename(pending, self.path)

    async def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _ = peer_credentials(sock)
        except OSError:
            pid, uid = 0, -1
        if uid not in self.allowed_uids:
            self.rejected_peers += 1
            writer.write(
                protocol.error_reply(
                    None, protocol.FORBIDDEN, f"uid {uid} may not control this runner"
                )
            )
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        connection = _Connection(Peer(pid, uid), self.identifier)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    writer.write(
                        protocol.error_reply(
                            None,
                            protocol.BAD_REQUEST,
                            f"request longer than {protocol.MAX_MESSAGE_BYTES} bytes",
                        )
                    )
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                sink = self._stream_for(line, writer)
                if sink is not None and await self._stream(line, connection, reader, writer, sink):
                    break
                if sink is not None:
                    continue
                writer.write((await self._outcome(line, connection))[0])
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _stream_for(self, line: bytes, writer: asyncio.StreamWriter) -> StreamSink | None:
        """A sink when ``line`` asks for a stream op (decoded again by ``_outcome``)."""
        try:
            request = protocol.decode_request(line)
        except ControlError:
            return None
        if request.op not in self._streams:
            return None
        return StreamSink(writer, request.id)

    async def _stream(
        self,
        line: bytes,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sink: StreamSink,
    ) -> bool:
        """Serve a stream op until its stream ends; False when it was refused."""
        reply, ok = await self._outcome(line, connection, sink)
        writer.write(reply)
        if not ok:
            await writer.drain()
            return False
        sink.release()
        # Whatever the client sends now is ignored; its end of file ends the stream.
        while sink.active:
            reading = asyncio.ensure_future(reader.read(65536))
            await asyncio.wait({reading, sink.closed}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                break
            if not reading.result():
                sink.end("end", "the client closed the connection")
        return True

    async def _outcome(
        self, line: bytes, connection: _Connection, sink: StreamSink | None = None
    ) -> tuple[bytes, bool]:
        """The reply line to ``line``, and whether it is a success."""
        self.requests += 1
        try:
            request = protocol.decode_request(line)
        except RequestError as exc:
            return protocol.error_reply(exc.request_id, exc.code, exc.message), False
        handler: Handler | None = self._handlers.get(request.op)
        if sink is not None:
            opener = self._streams[request.op]

            async def handler(request: Request, caller: Caller) -> Any:
                return await opener(request, sink)

        if handler is None:
            message = f"unknown operation {request.op!r}"
            return protocol.error_reply(request.id, protocol.UNKNOWN_OP, message), False
        caller: Caller | None = None
        try:
            caller = connection.caller(request)
            authority.check(request.op, caller)
        except ControlError as exc:
            self._audit(connection, request, caller, False, exc.message)
            return protocol.error_reply(request.id, exc.code, exc.message), False
        try:
            result = await handler(request, caller)
        except ControlError as exc:
            # The operation itself may refuse what lies outside the caller's scope.
            refused = exc.code == protocol.FORBIDDEN
            self._audit(connection, request, caller, not refused, exc.message if refused else None)
            return protocol.error_reply(request.id, exc.code, exc.message), False
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            message = f"{type(exc).__name__}: {exc}"
            self._audit(connection, request, caller, True, None)
            return protocol.error_reply(request.id, protocol.INTERNAL, message), False
        self._audit(connection, request, caller, True, None)
        return protocol.ok_reply(request.id, result), True

    def _audit(
        self,
        connection: _Connection,
        request: Request,
        caller: Caller | None,
        allowed: bool,
        reason: str | None,
    ) -> None:
        if self._on_request is not None:
            self._on_request(request, caller, connection.peer, allowed, reason)


class _Connection:
    """One client connection: its peer, and who its requests without a token are from
    (established on the first such request, for the connection's life)."""

    def __init__(self, peer: Peer, identifier: Identifier) -> None:
        self.peer = peer
        self._identifier = identifier
        self._tokenless: Caller | ControlError | None = None

    def caller(self, request: Request) -> Caller:
        """The proven caller of ``request``; FORBIDDEN for an unproven claim."""
        if request.agent is not None or request.token is not None:
            return self._identifier.claimed(request, self.peer)
        if self._tokenless is None:
            self._tokenless = self._identifier.tokenless(self.peer)
        if isinstance(self._tokenless, ControlError):
            raise self._tokenless
        return self._tokenless
