"""Recording the SDK's replies to the opening requests (see :mod:`.handshake`).

A private session of the real server (the same tools, the same SDK, the same stdio framing),
one per protocol version: the replies it writes are the record. Imports the SDK.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from . import handshake
from .wire import LineQueue, LineWriter

CLIENT_INFO = {"name": "aegis-mcp-recording", "version": "0"}


class _NoCalls:
    """The recording's backend: listing tools calls nothing."""

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        raise RuntimeError(f"no tool is called while recording ({op})")

    async def close(self) -> None:
        """Nothing to release."""


def _line(request_id: int | None, method: str, params: dict[str, Any] | None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params is not None:
        message["params"] = params
    return json.dumps(message) + "\n"


Request = tuple[str, int | None, str, Any]


def _sessions(versions: Any) -> list[list[Request]]:
    """Each session: its requests (record key, id, method, params) in order."""
    sessions = []
    for version in [*versions.HANDSHAKE_PROTOCOL_VERSIONS, handshake.UNKNOWN_VERSION]:
        negotiated = (
            version
            if version in versions.HANDSHAKE_PROTOCOL_VERSIONS
            else versions.LATEST_HANDSHAKE_VERSION
        )
        init = {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO}
        opened = "initialize *" if version == handshake.UNKNOWN_VERSION else f"initialize {version}"
        requests: list[Request] = [
            (opened, 1, "initialize", init),
            ("", None, "notifications/initialized", None),
        ]
        requests += [(f"{m} {negotiated}", 2 + i, m, None) for i, m in enumerate(handshake.LISTS)]
        sessions.append(requests)
    for version in versions.MODERN_PROTOCOL_VERSIONS:
        meta = {
            "_meta": {
                handshake.META_VERSION: version,
                handshake.META_INFO: CLIENT_INFO,
                handshake.META_CAPS: {},
            }
        }
        methods = ("server/discover", *handshake.LISTS)
        sessions.append([(f"{m} modern {version}", 1 + i, m, meta) for i, m in enumerate(methods)])
    return sessions


async def record() -> handshake.Record:
    """Run the recording sessions; the record of every reply that starts as expected."""
    import mcp_types.version as versions

    from .server import build_server, run_on

    loop = asyncio.get_running_loop()
    replies: dict[str, str] = {}
    # One server, a connection per session: a connection holds the session's state.
    server = build_server(_NoCalls())  # type: ignore[arg-type]
    for requests in _sessions(versions):
        out: list[bytes] = []
        replied = asyncio.Event()

        def send(data: bytes, out: list[bytes] = out, replied: asyncio.Event = replied) -> None:
            out.append(data)
            loop.call_soon_threadsafe(replied.set)

        lines = LineQueue(loop)
        task = asyncio.create_task(run_on(server, lines, LineWriter(send, threading.Lock())))
        for _key, request_id, method, params in requests:
            replied.clear()
            lines.push(_line(request_id, method, params))
            if request_id is not None:
                # One at a time, as a client does: each reply before the next request.
                await asyncio.wait_for(replied.wait(), 10)
        lines.push(None)
        await asyncio.wait_for(task, 10)
        by_id = {json.loads(line).get("id"): line.decode() for line in out}
        for key, request_id, _method, _params in requests:
            if request_id is None or request_id not in by_id:
                continue
            tail = handshake.recorded_tail(by_id[request_id], request_id)
            if tail is not None:
                replies[key] = tail
    return handshake.Record(
        {
            "handshake_versions": list(versions.HANDSHAKE_PROTOCOL_VERSIONS),
            "modern_versions": list(versions.MODERN_PROTOCOL_VERSIONS),
            "known_versions": list(versions.KNOWN_PROTOCOL_VERSIONS),
            "replies": replies,
        }
    )
