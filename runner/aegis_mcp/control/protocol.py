"""Wire format of the control socket.

One JSON object per line in each direction. A request is
``{"v": 1, "id": N, "op": "name", "args": {...}}``; the reply carries the same
``id`` and either ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": ..., "message": ...}}``. A request may set
``"activity": true`` when it is made on behalf of the agent (an MCP tool
call): the runner's watchdog counts it as a sign of life. A request made by
one of the run's agents carries ``"agent": ID`` and ``"token": SECRET``, the
pair the runner put in that agent's environment (``AEGIS_MCP_AGENT_ID``,
``AEGIS_MCP_AGENT_TOKEN``); the user's requests carry neither (see
:mod:`.authority`). This module knows the format only, no implementation of
any operation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
# Bounds of what a request may hold: deeper nesting or longer numbers are
# refused before they cost the runner a RecursionError or a quadratic int().
MAX_DEPTH = 32
MAX_INT_DIGITS = 20
MAX_NUMBER_CHARS = 64
MAX_ID_CHARS = 200
MAX_OP_CHARS = 100
MAX_AGENT_CHARS = 100
MAX_TOKEN_CHARS = 200
REQUEST_FIELDS = ("v", "id", "op", "args", "activity", "agent", "token")

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
    "agent_pool_configure",
    "agent_file_locks",
    "file_lock_acquire",
    "file_lock_release",
)
NETMON_OPS = ("netmon_status", "netmon_log")
NAMESPACE_OPS = ("netmon_namespace_list", "netmon_namespace_cleanup")

OpHandler = Callable[..., Awaitable[Any]]
"""An operation implementation: takes the request's ``args`` and its caller (an
:class:`~aegis_mcp.control.authority.Caller`; served in process, it may be left
out), returns a JSON-able result or raises ControlError. Packages that serve
operations (pool, netmon) export tables of these, served by the runner or in
process by the MCP server."""


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
    agent: str | None = None
    """The agent id the request says it comes from: a label until ``token`` proves it."""
    token: str | None = field(default=None, repr=False)
    """The agent's secret; never logged, never echoed."""


AgentIdentity = tuple[str | None, str | None]
"""``(agent id, token)`` of the agent a client speaks for (a missing part is not sent)."""


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a line."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def make_request(
    req_id: int,
    op: str,
    args: dict[str, Any],
    activity: bool = False,
    identity: AgentIdentity | None = None,
) -> bytes:
    """A request line (on behalf of the agent ``identity`` when given)."""
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": req_id, "op": op, "args": args}
    if activity:
        msg["activity"] = True
    agent, token = identity or (None, None)
    if agent is not None:
        msg["agent"] = agent
    if token is not None:
        msg["token"] = token
    return encode(msg)


def ok_reply(req_id: Any, result: Any) -> bytes:
    """A success reply line."""
    return encode({"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result})


def error_reply(req_id: Any, code: str, message: str) -> bytes:
    """An error reply line."""
    error = {"code": code, "message": message}
    return encode({"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": error})


class RequestError(ControlError):
    """A request that cannot be served as sent; ``request_id`` addresses the reply when
    the request got far enough to name one."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


class _Refused(Exception):
    """A value the protocol does not accept, found while checking a parsed request."""


@dataclass(frozen=True)
class _Unacceptable:
    """What the JSON parser left in place of a number it must not build (a huge
    integer, an infinite float, NaN), so that the check can say where it was."""

    why: str


def _parse_int(text: str) -> int | _Unacceptable:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Unacceptable(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float | _Unacceptable:
    if len(text) > MAX_NUMBER_CHARS:
        return _Unacceptable(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        return _Unacceptable(f"the number {text}, out of range")
    return value


def _parse_constant(name: str) -> _Unacceptable:
    return _Unacceptable(f"{name}, which is not a JSON value")


def _check_values(message: Any) -> None:
    """Refuse nesting beyond MAX_DEPTH, unacceptable numbers and strings that are not
    valid Unicode (lone surrogates such as ``"\\ud800"``, which no file name,
    database or peer accepts)."""
    pending: list[tuple[Any, int, str]] = [(message, 1, "the request")]
    while pending:
        value, depth, where = pending.pop()
        if isinstance(value, str):
            _check_string(value, where)
            continue
        if isinstance(value, _Unacceptable):
            raise _Refused(f"{_short(where)} is {value.why}")
        if isinstance(value, dict | list) and depth > MAX_DEPTH:
            raise _Refused(f"{_short(where)} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_string(key, f"a key of {where}")
                pending.append((item, depth + 1, key if depth == 1 else f"{where}.{key}"))
        elif isinstance(value, list):
            pending.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))


def _short(where: str) -> str:
    return where if len(where) <= 60 else where[:57] + "..."


def _check_string(value: str, where: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise _Refused(
            f"{_short(where)} holds a lone surrogate (\\u{code:04x}): not valid Unicode"
        ) from None


def _loads(line: bytes) -> Any:
    """Parse one line within the protocol's bounds; RequestError(BAD_REQUEST) says why not."""
    try:
        return json.loads(
            line,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(BAD_REQUEST, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(BAD_REQUEST, f"nested deeper than {MAX_DEPTH} levels") from None


def _describe(value: Any) -> str:
    text = json.dumps(value, default=lambda v: getattr(v, "why", repr(v)))
    return text if len(text) <= 40 else text[:37] + "..."


def decode_request(line: bytes) -> Request:
    """Parse and check a request line; raises RequestError with a reason.

    Strict: bounded nesting and numbers, valid Unicode, only the fields a
    request has, each of its type (``"v": true`` or ``1.0`` is not version 1).
    """
    msg = _loads(line)
    if not isinstance(msg, dict):
        raise RequestError(BAD_REQUEST, "a request must be a JSON object")
    req_id = msg.get("id")
    if req_id is not None and not (
        (type(req_id) is int and abs(req_id) < 2**63)
        or (isinstance(req_id, str) and len(req_id) <= MAX_ID_CHARS and req_id.isprintable())
    ):
        raise RequestError(
            BAD_REQUEST,
            f"'id' must be an integer or a string of at most {MAX_ID_CHARS} printable "
            f"characters, got {_describe(req_id)}",
        )
    try:
        _check_values(msg)
    except _Refused as exc:
        raise RequestError(BAD_REQUEST, f"refused: {exc}", req_id) from None
    unknown = sorted(set(msg) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(
            BAD_REQUEST,
            f"unknown request field(s) {', '.join(map(repr, unknown))}; a request has "
            f"{', '.join(REQUEST_FIELDS)}",
            req_id,
        )
    version = msg.get("v")
    if type(version) is not int:
        raise RequestError(
            BAD_REQUEST,
            f"'v' must be the protocol version, the integer {PROTOCOL_VERSION}, "
            f"got {_describe(version)}",
            req_id,
        )
    if version != PROTOCOL_VERSION:
        raise RequestError(
            VERSION_MISMATCH,
            f"protocol version {version} not supported (runner speaks {PROTOCOL_VERSION})",
            req_id,
        )
    op = msg.get("op")
    if not isinstance(op, str) or not op or len(op) > MAX_OP_CHARS:
        raise RequestError(
            BAD_REQUEST,
            f"'op' must be an operation name (a string of 1 to {MAX_OP_CHARS} characters), "
            f"got {_describe(op)}",
            req_id,
        )
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise RequestError(
            BAD_REQUEST, f"'args' must be a JSON object, got {_describe(args)}", req_id
        )
    activity = msg.get("activity", False)
    if not isinstance(activity, bool):
        raise RequestError(
            BAD_REQUEST, f"'activity' must be true or false, got {_describe(activity)}", req_id
        )
    agent = _label("agent", msg.get("agent"), MAX_AGENT_CHARS, req_id)
    token = _label("token", msg.get("token"), MAX_TOKEN_CHARS, req_id)
    return Request(id=req_id, op=op, args=args, activity=activity, agent=agent, token=token)


def _label(name: str, value: Any, limit: int, req_id: Any) -> str | None:
    """An optional identity field: a printable string of 1 to ``limit`` characters."""
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable():
        return value
    # Not the value: a token is a secret, even a wrong one.
    if not isinstance(value, str):
        shown = type(value).__name__
    elif not value.isprintable():
        shown = "a string with unprintable characters"
    else:
        shown = f"a string of {len(value)} characters"
    raise RequestError(
        BAD_REQUEST,
        f"{name!r} must be a string of 1 to {limit} printable characters, got {shown}",
        req_id,
    )


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
