"""Wire format of the control socket.

One JSON object per line in each direction. A request is
``{"v": 1, "id": N, "op": "name", "args": {...}}``; the reply carries the same
``id`` and either ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": ..., "message": ...}}``. A request may set
``"activity": true`` when it is made on behalf of the agent (an MCP tool
call): the runner's watchdog counts it as a sign of life. This module knows
the format only, no implementation of any operation.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20

# Error codes a reply can carry.
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
INVALID_ARGUMENT = "invalid_argument"
NOT_FOUND = "not_found"
VERSION_MISMATCH = "version_mismatch"
UNAVAILABLE = "unavailable"
FORBIDDEN = "forbidden"
INTERNAL = "internal"


# The agent id of the runner's own (primary) agent; pool agents have generated ids.
PRIMARY_AGENT_ID = "primary"

# Operations served by tables from other packages, named here so that a host
# can register them before (lazily) importing the package that serves them.
POOL_OPS = (
    "agent_spawn",
    "agent_list",
    "agent_status",
    "agent_await",
    "agent_stop",
    "agent_pool_stats",
    "agent_file_locks",
    "file_lock_acquire",
    "file_lock_release",
)
NETMON_OPS = ("netmon_status", "netmon_log")
NAMESPACE_OPS = ("netmon_namespace_list", "netmon_namespace_cleanup")

OpHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""An operation implementation: takes the request's ``args``, returns a JSON-able
result or raises ControlError. Packages that serve operations (pool, netmon)
export tables of these, served by the runner or in process by the MCP server."""


class ControlError(Exception):
    """An operation failed; ``code`` is one of the module's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Request:
    """A decoded, shape-checked request."""

    id: int | str | None
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    activity: bool = False


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a line."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def make_request(req_id: int, op: str, args: dict[str, Any], activity: bool = False) -> bytes:
    """A request line."""
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": req_id, "op": op, "args": args}
    if activity:
        msg["activity"] = True
    return encode(msg)


def ok_reply(req_id: Any, result: Any) -> bytes:
    """A success reply line."""
    return encode({"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result})


def error_reply(req_id: Any, code: str, message: str) -> bytes:
    """An error reply line."""
    error = {"code": code, "message": message}
    return encode({"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": error})


def decode_request(line: bytes) -> Request:
    """Parse and check a request line; raises ControlError with a reason."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(BAD_REQUEST, f"not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ControlError(BAD_REQUEST, "a request must be a JSON object")
    version = msg.get("v")
    if version != PROTOCOL_VERSION:
        raise ControlError(
            VERSION_MISMATCH,
            f"protocol version {version!r} not supported (runner speaks {PROTOCOL_VERSION})",
        )
    req_id = msg.get("id")
    if req_id is not None and not isinstance(req_id, int | str):
        raise ControlError(BAD_REQUEST, "'id' must be an integer or a string")
    op = msg.get("op")
    if not isinstance(op, str) or not op:
        raise ControlError(BAD_REQUEST, "'op' must be a non-empty string")
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise ControlError(BAD_REQUEST, "'args' must be a JSON object")
    return Request(id=req_id, op=op, args=args, activity=msg.get("activity") is True)


def request_id_of(line: bytes) -> Any:
    """Best-effort id of a request that failed to decode, to address the error reply."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return msg.get("id") if isinstance(msg, dict) else None


def decode_reply(line: bytes) -> Any:
    """Parse a reply line: the result, or ControlError for an error reply."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(BAD_REQUEST, f"runner sent invalid JSON: {exc}") from None
    if not isinstance(msg, dict) or "ok" not in msg:
        raise ControlError(BAD_REQUEST, "runner sent a malformed reply")
    if msg["ok"]:
        return msg.get("result")
    error = msg.get("error") or {}
    raise ControlError(str(error.get("code", INTERNAL)), str(error.get("message", "unknown error")))


# -- streams -------------------------------------------------------------------
# A stream op (``subscribe``) answers with an ordinary reply, then sends more
# lines on the same connection, each ``{"v": 1, "id": <request id>, "stream":
# <message>}``, until a message of type ``end`` or ``dropped``, then closes it.

STREAM_OPS = ("subscribe",)
STREAM_END_TYPES = ("end", "dropped")


def stream_line(req_id: Any, message: dict[str, Any]) -> bytes:
    """One message of a stream as a line."""
    return encode({"v": PROTOCOL_VERSION, "id": req_id, "stream": message})


def decode_stream(line: bytes) -> dict[str, Any]:
    """Parse a stream line: its message (ControlError for an error reply or a bad line)."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(BAD_REQUEST, f"runner sent invalid JSON: {exc}") from None
    if isinstance(msg, dict) and isinstance(msg.get("stream"), dict):
        return msg["stream"]
    if isinstance(msg, dict) and msg.get("ok") is False:
        decode_reply(line)  # raises the error it carries
    raise ControlError(BAD_REQUEST, "runner sent a malformed stream line")
