"""Clients of the control socket, for the CLI, the MCP server and the dashboard.

A client started by one of a run's agents (its MCP server, ``aegis-mcp status``
typed in its shell) speaks for that agent: it sends the agent id and token the
runner put in its environment with every request (:func:`identity_from_env`).
Anywhere else it speaks for the user, with no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from . import protocol
from .protocol import ControlError

SOCKET_ENV = "AEGIS_MCP_SOCKET"
AGENT_ID_ENV = "AEGIS_MCP_AGENT_ID"
TOKEN_ENV = "AEGIS_MCP_AGENT_TOKEN"


def identity_from_env(env: Mapping[str, str] | None = None) -> protocol.AgentIdentity | None:
    """The agent this process speaks for: its id and token from the environment, or None
    (the user) without a token. An id alone is sent as a bare claim, which the runner
    refuses: a label is not an identity."""
    env = os.environ if env is None else env
    agent, token = env.get(AGENT_ID_ENV) or None, env.get(TOKEN_ENV) or None
    return (agent, token) if agent or token else None


def _unreachable(path: str | os.PathLike[str], exc: OSError) -> ControlError:
    return ControlError(
        protocol.UNAVAILABLE, f"cannot reach the aegis-mcp runner at {path}: {exc.strerror or exc}"
    )


class ControlClient:
    """Blocking client: one connection, requests answered in order."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        timeout: float | None = 30.0,
        identity: protocol.AgentIdentity | None = None,
    ) -> None:
        """``identity``: the agent to speak for (default: this process's, if any)."""
        self.path = str(path)
        self._ids = itertools.count(1)
        self._identity = identity or identity_from_env()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise _unreachable(path, exc) from None
        self._file = self._sock.makefile("rb")

    def call(self, op: str, activity: bool = False, **args: Any) -> Any:
        """Send one request and return its result (ControlError on failure)."""
        try:
            self._sock.sendall(self._request(op, args, activity))
            line = self._file.readline(protocol.MAX_MESSAGE_BYTES + 1)
        except OSError as exc:
            raise _unreachable(self.path, exc) from None
        if not line:
            raise ControlError(protocol.UNAVAILABLE, "the runner closed the connection")
        return protocol.decode_reply(line)

    def subscribe(self) -> Iterator[dict[str, Any]]:
        """The state stream (see :mod:`.snapshot`): the state message, then every message
        up to the last (``end`` or ``dropped``). The connection serves nothing else after."""
        try:
            self._sock.sendall(self._request("subscribe", {}))
            yield protocol.decode_reply(self._readline())
            while True:
                message = protocol.decode_stream(self._readline())
                yield message
                if message.get("type") in protocol.STREAM_END_TYPES:
                    return
        except OSError as exc:
            raise _unreachable(self.path, exc) from None

    def _request(self, op: str, args: dict[str, Any], activity: bool = False) -> bytes:
        return protocol.make_request(next(self._ids), op, args, activity, self._identity)

    def _readline(self) -> bytes:
        line = self._file.readline(protocol.MAX_MESSAGE_BYTES + 1)
        if not line:
            raise ControlError(protocol.UNAVAILABLE, "the runner closed the connection")
        return line

    def close(self) -> None:
        """Close the connection."""
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncControlClient:
    """Asyncio client keeping a small set of connections.

    A request that waits (``agent_await``) holds its connection, so concurrent
    calls each take an idle connection or open another one; each connection
    carries one request at a time, as the protocol answers in order.
    """

    MAX_IDLE = 4

    def __init__(
        self,
        path: str | os.PathLike[str],
        identity: protocol.AgentIdentity | None = None,
    ) -> None:
        """``identity``: the agent to speak for (default: this process's, if any)."""
        self.path = str(path)
        self._ids = itertools.count(1)
        self._identity = identity or identity_from_env()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing():
                return reader, writer
        try:
            return await asyncio.open_unix_connection(
                self.path, limit=protocol.MAX_MESSAGE_BYTES + 2
            )
        except OSError as exc:
            raise _unreachable(self.path, exc) from None

    async def call(self, op: str, activity: bool = False, **args: Any) -> Any:
        """Send one request and return its result (ControlError on failure).

        A failed request is not re-sent (it may have been carried out); its
        connection is dropped and the next call opens a fresh one.
        """
        reader, writer = await self._connection()
        try:
            writer.write(protocol.make_request(next(self._ids), op, args, activity, self._identity))
            await writer.drain()
            line = await reader.readline()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            writer.close()
            raise ControlError(protocol.UNAVAILABLE, f"lost the runner connection: {exc}") from None
        except BaseException:
            # Cancelled mid-request: the reply would arrive on a reused connection.
            writer.close()
            raise
        if not line:
            writer.close()
            raise ControlError(protocol.UNAVAILABLE, "the runner closed the connection")
        if len(self._idle) < self.MAX_IDLE:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return protocol.decode_reply(line)

    async def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def subscribe(path: str | os.PathLike[str]) -> AsyncIterator[dict[str, Any]]:
    """:meth:`ControlClient.subscribe` for asyncio clients (the dashboard), on its own
    connection, closed when the iteration ends."""
    try:
        reader, writer = await asyncio.open_unix_connection(
            str(path), limit=protocol.MAX_MESSAGE_BYTES + 2
        )
    except OSError as exc:
        raise _unreachable(path, exc) from None
    try:
        writer.write(protocol.make_request(1, "subscribe", {}, identity=identity_from_env()))
        line = await reader.readline()
        if not line:
            raise ControlError(protocol.UNAVAILABLE, "the runner closed the connection")
        yield protocol.decode_reply(line)
        while line := await reader.readline():
            message = protocol.decode_stream(line)
            yield message
            if message.get("type") in protocol.STREAM_END_TYPES:
                return
        raise ControlError(protocol.UNAVAILABLE, "the runner closed the connection")
    except (OSError, ValueError) as exc:
        raise ControlError(protocol.UNAVAILABLE, f"lost the runner connection: {exc}") from None
    finally:
        writer.close()


def socket_from_env() -> Path | None:
    """The runner socket this process was started under, if any."""
    value = os.environ.get(SOCKET_ENV)
    return Path(value) if value else None
