"""The SDK's own replies to a client's opening requests, recorded once, so that they can be
given before the SDK is imported.

Importing the ``mcp`` SDK takes about half a second (its pydantic models), and agents do not
wait long: Codex starts its first turn without the MCP servers that are not up within about a
second. The SDK stays the protocol implementation: every reply given from here is one the SDK
wrote itself in a private session of the real server (:mod:`.recording`), with the request's id
spliced in. Only requests whose shape plainly gets that reply are answered (:meth:`Record.answer`:
``initialize``, ``notifications/initialized`` and the tool, prompt and resource lists of the 2025
handshake; ``server/discover`` and the same lists in the 2026 envelope); anything else waits for
the SDK.
The front (:mod:`.front`) later replays every request to the SDK and compares the SDK's replies
to what it sent: a difference drops the record, and the next start records anew.

The record lives in the user's cache directory under a key made of this package's tool-list
sources and the installed SDK's files (size and modification time), so that an upgrade of
either makes it stale without a lookup of package metadata.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
HEAD = '{"jsonrpc":"2.0","id":'
"""What every recorded reply starts with: the SDK writes ``jsonrpc`` then ``id`` first."""
RECORD_FILE = "mcp-handshake.json"
UNKNOWN_VERSION = "0000-00-00"
"""A protocol version no SDK knows: its ``initialize`` reply is that of every unknown one."""

# This package's files whose text decides the tool list and the server's description.
_OWN_FILES = (
    "__init__.py",
    "mcp_server/server.py",
    "mcp_server/backend.py",
    "mcp_server/handshake.py",
    "mcp_server/recording.py",
    "sandbox/kinds.py",
    "control/protocol.py",
)
# The SDK's files whose change (an upgrade) makes a record stale.
_SDK_FILES = (
    "mcp/__init__.py",
    "mcp/server/runner.py",
    "mcp/server/stdio.py",
    "mcp/server/mcpserver/server.py",
    "mcp/server/lowlevel/server.py",
    "mcp_types/__init__.py",
    "mcp_types/version.py",
    "mcp_types/_types.py",
    "pydantic/version.py",
    "pydantic_core/__init__.py",
)

LISTS = ("tools/list", "prompts/list", "resources/list")
"""The lists clients ask for as they start (their first page: no cursor)."""
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_INFO = "io.modelcontextprotocol/clientInfo"
META_CAPS = "io.modelcontextprotocol/clientCapabilities"

# Request ids spliced into a reply as they are: pydantic writes these exactly so.
_PLAIN_ID = re.compile(r"[\x20-\x7e]*").fullmatch
_SURROGATE = re.compile("[\ud800-\udfff]").search
_MAX_DEPTH = 32
_MAX_ID = 1 << 53


class _Unplain(ValueError):
    """The message is not one the record answers."""


@dataclass(frozen=True)
class Answer:
    """What to do with one opening message: ``reply`` (bytes, or None for a notification
    that needs none) to the request ``request_id`` (as the JSON of the reply writes it), and
    the connection's era after it."""

    reply: bytes | None
    era: str
    request_id: str = ""


def record_key() -> str | None:
    """The key a record must carry to be used here, or None when the SDK is not found: each
    source file's size and checksum, each SDK file's size and time (no hashlib: its OpenSSL
    would cost this start milliseconds)."""
    parts = [str(FORMAT), sys.version]
    package = Path(__file__).resolve().parents[1]
    for name in _OWN_FILES:
        try:
            data = (package / name).read_bytes()
        except OSError:
            return None
        parts.append(f"{name}:{len(data)}:{zlib.crc32(data):08x}")
    for name in _SDK_FILES:
        info = _find(name)
        if info is None:
            return None
        parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


def _find(name: str) -> os.stat_result | None:
    # The first sys.path entry that has it is the one the import would use.
    for entry in sys.path:
        with contextlib.suppress(OSError):
            return os.stat(os.path.join(entry or ".", name))
    return None


class Record:
    """The recorded replies (see the module docstring)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.handshake_versions: list[str] = data["handshake_versions"]
        self.modern_versions: list[str] = data["modern_versions"]
        self.known_versions: list[str] = data["known_versions"]
        self.replies: dict[str, str] = data["replies"]
        self.latest_handshake = self.handshake_versions[-1]

    # ---- answering -----------------------------------------------------------------------------

    def answer(self, line: str, era: str) -> Answer | None:
        """The recorded reply to ``line`` (one line the client sent) in a connection whose
        era is ``era`` (``""`` before any request, ``legacy <version>`` after ``initialize``,
        ``modern``), or None when only the SDK may answer it."""
        try:
            message = json.loads(
                line,
                object_pairs_hook=_unique_keys,
                parse_constant=_refuse,
                parse_float=_finite,
            )
            return self._answer(message, era)
        except (ValueError, RecursionError):
            return None

    def _answer(self, message: Any, era: str) -> Answer | None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return None
        method = message.get("method")
        params = message.get("params")
        if "id" not in message:
            # notifications/initialized of the handshake, which the SDK answers with nothing
            if (
                set(message) <= {"jsonrpc", "method", "params"}
                and era.startswith("legacy ")
                and method == "notifications/initialized"
                and params in (None, {})
                and (params is not None or "params" not in message)
            ):
                return Answer(None, era)
            return None
        if set(message) - {"jsonrpc", "id", "method", "params"} or (
            "params" in message and params is None
        ):
            return None
        request_id = id_text(message["id"])
        if request_id is None:
            return None
        key, era = self._key(method, params, era)
        tail = self.replies.get(key) if key else None
        if tail is None:
            return None
        return Answer((HEAD + request_id + tail).encode(), era, request_id)

    def _key(self, method: Any, params: Any, era: str) -> tuple[str | None, str]:
        if era == "" and method == "initialize" and _plain_initialize(params):
            version = params["protocolVersion"]
            if version in self.handshake_versions:
                return f"initialize {version}", f"legacy {version}"
            if version not in self.known_versions:
                return "initialize *", f"legacy {self.latest_handshake}"
            return None, era
        if era.startswith("legacy ") and method in LISTS and _plain_list_params(params):
            return f"{method} {era[7:]}", era
        if era in ("", "modern") and (method == "server/discover" or method in LISTS):
            version = _plain_envelope(params)
            if version in self.modern_versions:
                return f"{method} modern {version}", "modern"
        return None, era

    # ---- storing -------------------------------------------------------------------------------

    def to_json(self, key: str) -> bytes:
        """The record as stored, under ``key``."""
        return json.dumps(
            {
                "format": FORMAT,
                "key": key,
                "handshake_versions": self.handshake_versions,
                "modern_versions": self.modern_versions,
                "known_versions": self.known_versions,
                "replies": self.replies,
            },
            indent=1,
        ).encode()


def recorded_tail(line: str, request_id: int) -> str | None:
    """The part of a reply the SDK wrote after ``request_id``, or None when the reply does not
    start as the record expects (then that request is left to the SDK)."""
    start = f"{HEAD}{request_id},"
    return line[len(start) - 1 :] if line.startswith(start) and line.endswith("\n") else None


def load(directory: Path, key: str | None) -> Record | None:
    """The record stored in ``directory`` under ``key``; None when missing, stale or unsafe
    (its replies go to the agent as they are: it must be ours and nobody else's to change)."""
    if key is None:
        return None
    from ..files import read_own_json

    data = read_own_json(directory / RECORD_FILE, 1 << 22)
    try:
        if data.get("format") != FORMAT or data.get("key") != key:  # type: ignore[union-attr]
            return None
        return Record(data)  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def save(directory: Path, key: str, record: Record) -> None:
    """Store ``record`` under ``key`` (atomically, 0600)."""
    from ..files import write_atomic

    write_atomic(directory / RECORD_FILE, record.to_json(key))


def drop(directory: Path) -> None:
    """Remove the stored record (the SDK answered differently: it is stale)."""
    with contextlib.suppress(OSError):
        os.unlink(directory / RECORD_FILE)


# ---- the shapes answered -------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Unplain("a key given twice")
    return result


def _refuse(constant: str) -> Any:
    raise _Unplain(constant)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unplain(text)
    return value


def id_text(value: Any) -> str | None:
    """A request id as the SDK writes it in a reply, for the ids spliced as they are."""
    if type(value) is int and -_MAX_ID < value < _MAX_ID:
        return str(value)
    if type(value) is str and _PLAIN_ID(value) and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return None


def _plain_initialize(params: Any) -> bool:
    return (
        isinstance(params, dict)
        and set(params) == {"protocolVersion", "capabilities", "clientInfo"}
        and _plain_text(params["protocolVersion"])
        and _plain_capabilities(params["capabilities"])
        and _plain_info(params["clientInfo"])
    )


def _plain_envelope(params: Any) -> str | None:
    """The protocol version of a plain 2026 request envelope (``{"_meta": {...}}``), or None."""
    if not isinstance(params, dict) or set(params) != {"_meta"}:
        return None
    meta = params["_meta"]
    if not isinstance(meta, dict) or not {META_VERSION} <= set(meta) <= {
        META_VERSION,
        META_INFO,
        META_CAPS,
    }:
        return None
    if META_INFO in meta and not _plain_info(meta[META_INFO]):
        return None
    if META_CAPS in meta and not _plain_capabilities(meta[META_CAPS]):
        return None
    version = meta[META_VERSION]
    return version if _plain_text(version) else None


def _plain_list_params(params: Any) -> bool:
    """No params, ``{}``, or only a progress token (Codex sends one with ``tools/list``)."""
    if params is None or params == {}:
        return True
    if not isinstance(params, dict) or set(params) != {"_meta"}:
        return False
    meta = params["_meta"]
    return (
        isinstance(meta, dict)
        and set(meta) == {"progressToken"}
        and (type(meta["progressToken"]) is int or _plain_text(meta["progressToken"]))
    )


def _plain_text(value: Any) -> bool:
    return isinstance(value, str) and _SURROGATE(value) is None


def _plain_info(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and {"name", "version"}
        <= set(value)
        <= {"name", "version", "title", "description", "websiteUrl"}
        and all(_plain_text(v) for v in value.values())
    )


_EMPTY_FLAGS = {"sampling": {"context", "tools"}, "elicitation": {"form", "url"}}


def _plain_capabilities(value: Any) -> bool:
    if not isinstance(value, dict) or not set(value) <= {
        "roots",
        "sampling",
        "elicitation",
        "experimental",
    }:
        return False
    for name, item in value.items():
        if not isinstance(item, dict):
            return False
        if name == "roots":
            if set(item) - {"listChanged"} or not all(type(v) is bool for v in item.values()):
                return False
        elif name == "experimental":
            if not all(isinstance(v, dict) and _plain_json(v, 0) for v in item.values()):
                return False
        elif set(item) - _EMPTY_FLAGS[name] or any(v != {} for v in item.values()):
            return False
    return True


def _plain_json(value: Any, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, str):
        return _SURROGATE(value) is None
    if isinstance(value, dict):
        return all(
            _plain_json(k, depth + 1) and _plain_json(v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    return True
