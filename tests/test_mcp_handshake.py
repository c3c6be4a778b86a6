"""The MCP server's fast start (issue 14): the opening requests answered from the record of
the SDK's own replies before the SDK is imported, byte for byte what the SDK sends."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis_mcp.mcp_server import handshake, recording
from aegis_mcp.mcp_server.server import build_server, run_on
from aegis_mcp.mcp_server.wire import LineQueue, LineWriter
from helpers import AEGIS

VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28", "2099-01-01"]


@pytest.fixture(scope="module")
def record() -> handshake.Record:
    return asyncio.run(recording.record())


class _Sdk:
    """The real server on the SDK, one private session per call of :meth:`replies`."""

    def __init__(self) -> None:
        self.server = build_server(recording._NoCalls())  # type: ignore[arg-type]

    def replies(self, lines: list[str]) -> dict[Any, bytes]:
        """Each line sent in turn (a request's reply awaited before the next line); the
        replies by request id."""

        async def session() -> dict[Any, bytes]:
            loop = asyncio.get_running_loop()
            out: list[bytes] = []
            got = asyncio.Event()

            def send(data: bytes) -> None:
                out.append(data)
                loop.call_soon_threadsafe(got.set)

            queue = LineQueue(loop)
            task = asyncio.create_task(
                run_on(self.server, queue, LineWriter(send, threading.Lock()))
            )
            for line in lines:
                got.clear()
                queue.push(line)
                if _request_id(line) is not None:
                    await asyncio.wait_for(got.wait(), 10)
            queue.push(None)
            await asyncio.wait_for(task, 10)
            return {json.loads(data).get("id"): data for data in out}

        return asyncio.run(session())


def _request_id(line: str) -> Any:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message.get("id") if isinstance(message, dict) and "method" in message else None


@pytest.fixture(scope="module")
def sdk() -> _Sdk:
    return _Sdk()


def _fast_replies(record: handshake.Record, lines: list[str]) -> dict[Any, bytes]:
    """What the front answers by itself, as it does: in the 2025 handshake until the first line
    it cannot answer, in the 2026 envelope every line it can."""
    era, out = "", {}
    for line in lines:
        answer = record.answer(line, era)
        if answer is None:
            if era != "modern":
                break
            continue
        era = answer.era
        if answer.reply is not None:
            out[json.loads(line)["id"]] = answer.reply
    return out


def _line(message: dict[str, Any]) -> str:
    return json.dumps(message) + "\n"


def _initialize(request_id: Any, version: str, caps: Any = None, info: Any = None) -> str:
    params = {
        "protocolVersion": version,
        "capabilities": {} if caps is None else caps,
        "clientInfo": {"name": "test", "version": "1"} if info is None else info,
    }
    return _line({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params})


INITIALIZED = _line({"jsonrpc": "2.0", "method": "notifications/initialized"})


def _tools_list(request_id: Any) -> str:
    return _line({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"})


def _modern(request_id: Any, method: str, version: str, caps: Any = None, info: Any = None) -> str:
    meta: dict[str, Any] = {handshake.META_VERSION: version}
    if info is not None:
        meta[handshake.META_INFO] = info
    if caps is not None:
        meta[handshake.META_CAPS] = caps
    return _line({"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"_meta": meta}})


CLAUDE_META = {
    handshake.META_VERSION: "2026-07-28",
    handshake.META_INFO: {
        "name": "claude-code",
        "title": "Claude Code",
        "version": "2.1.332",
        "description": "Anthropic's agentic coding tool",
        "websiteUrl": "https://claude.com/claude-code",
    },
    handshake.META_CAPS: {"roots": {"listChanged": True}, "elicitation": {"form": {}, "url": {}}},
}


def _claude(request_id: Any, method: str) -> str:
    return _line(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"_meta": CLAUDE_META}}
    )


# What the real CLIs open with (recorded from Claude Code 2.1.332, Codex 0.171, Gemini CLI 0.61).
REAL_OPENINGS = {
    "claude": [
        _claude("server-discover-probe-1", "server/discover"),
        _claude("listen:0", "subscriptions/listen"),  # a stream: the SDK's, the rest is answered
        _claude(0, "server/discover"),
        _claude(1, "prompts/list"),
        _claude(2, "resources/list"),
        _claude(3, "tools/list"),
    ],
    "codex": [
        _initialize(
            0,
            "2025-06-18",
            {"experimental": {"codex/auth-change": {}}, "elicitation": {"form": {}, "url": {}}},
            {"name": "codex-mcp-client", "title": "Codex", "version": "0.171.0"},
        ),
        INITIALIZED,
        _line(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/list",
                "params": {"_meta": {"progressToken": 0}},
            }
        ),
    ],
    "gemini": [
        _initialize(
            0,
            "2025-06-18",
            {"roots": {"listChanged": True}},
            {"name": "gemini-cli-mcp-client", "version": "0.61.0"},
        ),
        INITIALIZED,
        _line({"jsonrpc": "2.0", "id": 1, "method": "prompts/list", "params": {}}),
        _line({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}),
        _line({"jsonrpc": "2.0", "id": 3, "method": "resources/list", "params": {}}),
    ],
}


@pytest.mark.parametrize("agent", sorted(REAL_OPENINGS))
def test_real_clients_openings_are_answered_as_the_sdk_does(
    record: handshake.Record, sdk: _Sdk, agent: str
) -> None:
    lines = REAL_OPENINGS[agent]
    fast = _fast_replies(record, lines)
    # Every request but Claude Code's subscription stream is answered before the SDK is up.
    assert len(fast) == sum(1 for line in lines if _request_id(line) is not None) - (
        agent == "claude"
    )
    expected = sdk.replies([line for line in lines if "subscriptions/listen" not in line])
    for request_id, reply in fast.items():
        assert reply == expected[request_id]


def test_every_recorded_reply_is_the_sdks(record: handshake.Record, sdk: _Sdk) -> None:
    """Each protocol version, both eras, ids of both types: exactly as the SDK answers."""
    lists = [
        _line({"jsonrpc": "2.0", "id": 10 + i, "method": m}) for i, m in enumerate(handshake.LISTS)
    ]
    sessions = [[_initialize(0, v, {"roots": {}}), INITIALIZED, *lists] for v in VERSIONS[:4]]
    sessions += [
        [_initialize("a-1", "2099-01-01"), INITIALIZED, _tools_list(7)],
        [
            _modern(1 + i, m, "2026-07-28", {}, {"name": "mcp", "version": "0.1.0"})
            for i, m in enumerate(("server/discover", *handshake.LISTS))
        ],
    ]
    for lines in sessions:
        fast = _fast_replies(record, lines)
        assert len(fast) == sum(1 for line in lines if _request_id(line) is not None), lines
        expected = sdk.replies(lines)
        for request_id, reply in fast.items():
            assert reply == expected[request_id]


def test_unusual_openings_are_left_to_the_sdk(record: handshake.Record) -> None:
    left = [
        _initialize(1, "2025-06-18", {"tasks": {}}),  # a capability the record does not know
        _initialize(1, "2025-06-18", {"roots": {"listChanged": "yes"}}),
        _initialize(1, "2026-07-28"),  # a 2026 version through the 2025 handshake
        _initialize(True, "2025-06-18"),
        _initialize(1 << 60, "2025-06-18"),
        _initialize('a"b', "2025-06-18"),
        _initialize(1, "2025-06-18", info={"name": "x"}),
        '{"jsonrpc":"2.0","id":1,"id":2,"method":"initialize","params":{}}\n',
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":NaN}}\n',
        _tools_list(1),  # before initialize
        "not json\n",
    ]
    for line in left:
        assert record.answer(line, "") is None, line


_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
_flags = st.dictionaries(
    st.sampled_from(["context", "tools", "form", "url", "x"]), st.just({}) | _json, max_size=2
)
# Mostly the shapes the record answers, with the odd value or key that it must not answer.
_plain_caps = st.fixed_dictionaries(
    {},
    optional={
        "roots": st.just({}) | st.fixed_dictionaries({"listChanged": st.booleans()}),
        "sampling": st.just({}) | _flags,
        "elicitation": st.just({}) | _flags,
        "experimental": st.dictionaries(
            _texts, st.dictionaries(_texts, _json, max_size=2), max_size=2
        ),
    },
)


def _mostly(plain: st.SearchStrategy[dict], odd_keys: list[str]) -> st.SearchStrategy[dict]:
    """Mostly ``plain``; now and then one of ``odd_keys`` added or changed to any JSON value."""
    odd = plain.flatmap(
        lambda value: st.dictionaries(st.sampled_from(odd_keys), _json, max_size=1).map(
            lambda more: {**value, **more}
        )
    )
    return st.one_of(plain, plain, odd)


_caps = _mostly(_plain_caps, ["roots", "tasks", "extensions", "sampling"])
_plain_info = st.fixed_dictionaries(
    {"name": _texts, "version": _texts},
    optional={"title": _texts, "description": _texts, "websiteUrl": _texts},
)
_info = _mostly(_plain_info, ["title", "websiteUrl", "icons", "name"])
_ids = st.one_of(
    st.integers(-1000, 1000),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6),
    st.integers(),
    _texts,
    st.booleans(),
    st.none(),
)


_list_params = st.one_of(
    st.just(None),
    st.just({}),
    st.fixed_dictionaries({"_meta": st.fixed_dictionaries({"progressToken": _ids})}),
    st.dictionaries(st.sampled_from(["cursor", "_meta", "x"]), _json, max_size=2),
)


@settings(
    max_examples=int(os.environ.get("AEGIS_FUZZ_EXAMPLES", "150")) // 4 or 1,
    deadline=None,
    database=None,
)
@given(
    request_id=_ids,
    version=st.sampled_from(VERSIONS) | st.sampled_from(VERSIONS) | _texts,
    caps=_caps,
    info=_info,
    modern=st.booleans(),
    listing=st.sampled_from(handshake.LISTS),
    list_params=_list_params,
)
def test_what_is_answered_early_is_what_the_sdk_sends(
    record: handshake.Record,
    sdk: _Sdk,
    request_id: Any,
    version: str,
    caps: Any,
    info: Any,
    modern: bool,
    listing: str,
    list_params: Any,
) -> None:
    """Fuzzed opening requests: whatever the record answers, the SDK answers byte for byte so."""
    if modern:
        lines = [
            _modern(request_id, "server/discover", version, caps, info),
            _modern(9, listing, version, caps, info),
        ]
    else:
        listed: dict[str, Any] = {"jsonrpc": "2.0", "id": 9, "method": listing}
        if list_params is not None:
            listed["params"] = list_params
        lines = [_initialize(request_id, version, caps, info), INITIALIZED, _line(listed)]
    fast = _fast_replies(record, lines)
    if not fast:
        return
    expected = sdk.replies(lines)
    for rid, reply in fast.items():
        assert reply == expected.get(rid), (lines, rid)


# ---- the server process ----------------------------------------------------------------------


def _server(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*AEGIS, "--mcp-server"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_lines(proc: subprocess.Popen, count: int, timeout: float = 30) -> list[bytes]:
    lines: list[bytes] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        lines += [line + b"\n" for line in done]
    return lines


def _session(env: dict[str, str], lines: list[str], replies: int) -> tuple[list[bytes], str]:
    proc = _server(env)
    try:
        proc.stdin.write("".join(lines).encode())  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        out = _read_lines(proc, replies)
        proc.stdin.close()  # type: ignore[union-attr]
        err = proc.stderr.read()  # type: ignore[union-attr]
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err.decode()


CALL = _line(
    {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "server_status", "arguments": {}},
    }
)
BAD_CALL = _line(
    {
        "jsonrpc": "2.0",
        "id": 4,
        "method": "tools/call",
        "params": {"name": "netmon_log", "arguments": {"count": "5"}},
    }
)


def test_first_start_records_and_the_next_answers_from_the_record(
    aegis_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**aegis_env, "AEGIS_MCP_CACHE_DIR": str(tmp_path / "cache")}
    stored = tmp_path / "cache" / "mcp" / handshake.RECORD_FILE
    opening = [
        _initialize(1, "2025-06-18", {"roots": {}}),
        INITIALIZED,
        _tools_list(2),
        CALL,
        BAD_CALL,
    ]
    first, _ = _session(env, opening, 4)
    assert stored.exists() and stored.stat().st_mode & 0o777 == 0o600
    second, err = _session(env, opening, 4)
    assert "differs" not in err
    # The same bytes, each id answered once, in both starts: the tool calls by the SDK.
    assert sorted(first) == sorted(second)
    by_id = {json.loads(line)["id"]: json.loads(line) for line in second}
    assert sorted(by_id) == [1, 2, 3, 4]
    assert by_id[1]["result"]["serverInfo"]["name"] == "aegis-mcp"
    assert len(by_id[2]["result"]["tools"]) >= 17
    assert by_id[3]["result"]["isError"] is True  # no runner: it says how to get one
    # The strict input model still refuses a string for an integer.
    assert by_id[4]["result"]["isError"] is True
    assert "count" in by_id[4]["result"]["content"][0]["text"]


def test_a_record_that_differs_from_the_sdk_is_dropped(
    aegis_env: dict[str, str], tmp_path: Path
) -> None:
    """The reply comes from the record (a planted change shows it), the SDK's own reply to the
    replayed request is compared with it, and the record is dropped for the next start."""
    cache = tmp_path / "cache"
    env = {**aegis_env, "AEGIS_MCP_CACHE_DIR": str(cache)}
    _session(env, [_initialize(1, "2025-06-18")], 1)
    stored = cache / "mcp" / handshake.RECORD_FILE
    data = json.loads(stored.read_text())
    key = "initialize 2025-06-18"
    data["replies"][key] = data["replies"][key].replace(
        "aegis-mcp supervises", "PLANTED supervises"
    )
    stored.write_text(json.dumps(data))
    stored.chmod(0o600)
    out, err = _session(env, [_initialize(1, "2025-06-18"), INITIALIZED, _tools_list(2)], 2)
    assert b"PLANTED" in out[0]
    assert len(out) == 2  # the SDK's reply to the replayed initialize is held back
    assert "differs from the SDK's" in err
    assert not stored.exists()


def test_record_is_refused_when_stale_or_unsafe(record: handshake.Record, tmp_path: Path) -> None:
    handshake.save(tmp_path, "key-1", record)
    assert handshake.load(tmp_path, "key-1") is not None
    assert handshake.load(tmp_path, "key-2") is None  # the sources or the SDK changed
    assert handshake.load(tmp_path, None) is None  # no SDK found
    path = tmp_path / handshake.RECORD_FILE
    path.chmod(0o620)
    assert handshake.load(tmp_path, "key-1") is None  # others could have written it
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        assert handshake.load(tmp_path, "key-1") is None  # someone else's
        os.chown(path, 0, 0)
    path.write_text("{not json")
    path.chmod(0o600)
    assert handshake.load(tmp_path, "key-1") is None


def test_record_key_follows_the_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A changed tool list (a source file) or another SDK installation gives another key."""
    key = handshake.record_key()
    assert key is not None and key == handshake.record_key()
    monkeypatch.setattr(handshake, "_OWN_FILES", (*handshake._OWN_FILES, "mcp_server/front.py"))
    assert handshake.record_key() not in (None, key)
    monkeypatch.setattr(handshake, "_OWN_FILES", handshake._OWN_FILES[:-1])
    # Another mcp package first on the path (an upgrade shows as other sizes and times).
    fake = tmp_path / "mcp"
    fake.mkdir()
    (fake / "__init__.py").write_text("# another version\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert handshake.record_key() not in (None, key)
