"""The runner's side of the control socket.

Only root and the agent's user may talk to it: the socket file is ``0600``
and owned by the agent user, and every connection's peer credentials
(``SO_PEERCRED``) are checked as well, so a permissive umask or a changed mode
cannot open it up. Every failure (bad JSON, unknown op, a handler that
raises) becomes an error reply; the runner keeps serving.
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

from ..control import protocol
from ..control.protocol import ControlError, OpHandler, Request, RequestError

Handler = Callable[[Request], Awaitable[Any]]


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
        on_request: Callable[[Request], None] | None = None,
    ) -> None:
        self.path = path
        self.allowed_uids = allowed_uids | {0}
        self._owner = owner
        self._handlers: dict[str, Handler] = {}
        self._on_request = on_request
        self._server: asyncio.Server | None = None
        self.rejected_peers = 0
        self.requests = 0

    def register(self, op: str, handler: Handler) -> None:
        """Serve ``op`` with ``handler`` (an async function of the request)."""
        self._handlers[op] = handler

    def register_lazy(
        self, ops: Iterable[str], factory: Callable[[], dict[str, OpHandler]]
    ) -> None:
        """Serve ``ops`` from the table ``factory`` builds on the first call of any of them
        (the packages behind them cost start-up time most runs never need)."""
        table: dict[str, OpHandler] | None = None

        def serving(op: str) -> Handler:
            async def serve(request: Request) -> Any:
                nonlocal table
                if table is None:
                    table = factory()
                return await table[op](request.args)

            return serve

        for op in ops:
            self.register(op, serving(op))

    @property
    def ops(self) -> list[str]:
        """Operations served."""
        return sorted(self._handlers)

    async def start(self) -> None:
        """Bind and listen; the socket is private before it can accept anyone."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=protocol.MAX_MESSAGE_BYTES + 2
            )
        finally:
            os.umask(old_umask)
        # The umask made it 0600. A socket's owner cannot be set through its
        # descriptor: lchown, which never follows a link, in the checked runtime
        # directory that nobody else can write to.
        if self._owner is not None:
            os.chown(self.path, *self._owner, follow_symlinks=False)

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
            _, uid, _ = peer_credentials(sock)
        except OSError:
            uid = -1
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
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> bytes:
        self.requests += 1
        try:
            request = protocol.decode_request(line)
        except RequestError as exc:
            return protocol.error_reply(exc.request_id, exc.code, exc.message)
        handler = self._handlers.get(request.op)
        if handler is None:
            return protocol.error_reply(
                request.id, protocol.UNKNOWN_OP, f"unknown operation {request.op!r}"
            )
        if self._on_request is not None:
            self._on_request(request)
        try:
            result = await handler(request)
        except ControlError as exc:
            return protocol.error_reply(request.id, exc.code, exc.message)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            return protocol.error_reply(
                request.id, protocol.INTERNAL, f"{type(exc).__name__}: {exc}"
            )
        return protocol.ok_reply(request.id, result)
