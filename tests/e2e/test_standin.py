"""The stand-in model server itself, spoken to over plain HTTP: each protocol's shape,
rules and references, stalls, slow streams, errors and the record."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from e2e.standin import (
    HttpError,
    Match,
    Script,
    SlowText,
    Stall,
    StandInServer,
    Text,
    ToolCall,
    read_record,
)
from helpers import REPO

TOOLS = [{"name": "mcp__aegis-mcp__agent_spawn"}, {"name": "mcp__aegis-mcp__agent_await"}]


def post(url: str, body: dict, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def events(raw: bytes) -> list[dict]:
    return [
        json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")
    ]


@pytest.fixture
def server():
    wait = ToolCall("agent_await", {"agent_id": {"$ref": r'"agent_id": "(\w+)"'}})
    spawn = ToolCall("agent_spawn", {"description": "x"})
    script = (
        Script()
        .on(Match(after_tool="agent_spawn"), wait)
        .on(Match(user_says="spawn"), Text("spawning"), spawn, name="spawn")
        .on(Match(user_says="missing tool"), ToolCall("no_such_tool"), name="never")
        .on(Match(user_says="fail"), HttpError(400, "nope"))
        .on(Match(user_says="slow"), SlowText("abcdef", chunks=3, interval=0.05), name="slow")
        .on(Match(user_says="stall"), Stall(), name="stall")
    )
    with StandInServer(script) as s:
        yield s


def test_anthropic_messages_stream_a_tool_call_and_resolve_references(server):
    body = {
        "model": "m",
        "stream": True,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "spawn it"}],
    }
    status, raw = post(f"{server.url}/v1/messages?beta=true", body)
    assert status == 200
    got = events(raw)
    use = next(
        e["content_block"]
        for e in got
        if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"
    )
    assert use["name"] == "mcp__aegis-mcp__agent_spawn"
    assert got[-2]["delta"]["stop_reason"] == "tool_use"
    # The tool's result names an agent: the next call refers to it.
    body["stream"] = False
    body["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": use["name"], "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": '{"agent_id": "abc123"}'}
            ],
        },
    ]
    status, raw = post(f"{server.url}/v1/messages", body)
    content = json.loads(raw)["content"]
    assert content == [
        {
            "type": "tool_use",
            "id": content[0]["id"],
            "name": "mcp__aegis-mcp__agent_await",
            "input": {"agent_id": "abc123"},
        }
    ]
    assert [r.rule for r in server.requests] == ["spawn", "rule 0"]
    assert server.requests[1].conversation.last_turn()[0] == "tool_result"


def test_a_rule_whose_tool_is_not_offered_does_not_apply(server):
    body = {"model": "m", "messages": [{"role": "user", "content": "missing tool"}]}
    _status, raw = post(f"{server.url}/v1/messages", body)
    assert json.loads(raw)["content"] == [{"type": "text", "text": "ok"}]
    assert server.requests[-1].rule == "default"


def test_openai_responses_and_chat_completions(server):
    ns = [
        {
            "type": "namespace",
            "name": "mcp__aegis_mcp",
            "tools": [{"type": "function", "name": "agent_spawn"}],
        }
    ]
    status, raw = post(
        f"{server.url}/v1/responses",
        {
            "model": "m",
            "tools": ns,
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "spawn"}],
                }
            ],
        },
    )
    done = events(raw)[-1]
    assert done["type"] == "response.completed"
    call = done["response"]["output"][1]
    assert (call["type"], call["namespace"], call["name"]) == (
        "function_call",
        "mcp__aegis_mcp",
        "agent_spawn",
    )
    chat = {"model": "m", "messages": [{"role": "user", "content": "slow"}], "stream": True}
    status, raw = post(f"{server.url}/v1/chat/completions", chat)
    assert raw.decode().rstrip().endswith("data: [DONE]")
    pieces = [c["choices"][0]["delta"].get("content") for c in events(raw)]
    assert [p for p in pieces if p] == ["ab", "cd", "ef"]
    chat["stream"] = False
    chat["messages"][0]["content"] = "fail"
    status, raw = post(f"{server.url}/v1/chat/completions", chat)
    assert status == 400 and json.loads(raw)["error"]["message"] == "nope"


def test_gemini_generate_content_and_its_json_side_requests(server):
    body = {
        "contents": [{"role": "user", "parts": [{"text": "spawn"}]}],
        "tools": [{"functionDeclarations": [{"name": "mcp_aegis-mcp_agent_spawn"}]}],
    }
    status, raw = post(f"{server.url}/v1beta/models/g:streamGenerateContent?alt=sse", body)
    assert status == 200
    parts = [p for e in events(raw) for p in e["candidates"][0]["content"]["parts"]]
    assert {
        "functionCall": {"name": "mcp_aegis-mcp_agent_spawn", "args": {"description": "x"}}
    } in parts
    schema = {
        "type": "OBJECT",
        "properties": {"score": {"type": "INTEGER"}, "why": {"type": "STRING"}},
    }
    body["generationConfig"] = {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    _status, raw = post(f"{server.url}/v1beta/models/g:generateContent", body)
    text = json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"score": 1, "why": "standin"}
    assert server.requests[-1].rule == "json-schema"


def test_a_stall_sends_nothing_until_the_server_stops(server):
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "stall"}]}
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        post(f"{server.url}/v1/messages", body, timeout=0.5)
    stalled = server.wait_for(lambda r: r.rule == "stall", 5)
    assert stalled.bytes_sent == 0 and not stalled.finished


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/messages",
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "pings"}]},
            ([{"type": "message_start"}], {"type": "ping"}),
        ),
        (
            "/v1/chat/completions",
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "pings"}]},
            ([], ": keep-alive"),
        ),
        (
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            {"contents": [{"role": "user", "parts": [{"text": "pings"}]}]},
            ([], ": keep-alive"),
        ),
    ],
)
def test_a_stall_with_keep_alives_starts_a_stream_and_sends_only_those(path, body, expected):
    script = Script().on(Match(user_says="pings"), Stall(0.25, keepalive_every=0.1))
    with StandInServer(script) as server:
        status, raw = post(f"{server.url}{path}", body)
    assert status == 200
    seen = [
        {"type": json.loads(line[6:])["type"]} if line.startswith("data: ") else line
        for line in raw.decode().splitlines()
        if line and not line.startswith("event: ")
    ]
    head, keepalive = expected
    assert seen[: len(head)] == head, raw
    assert len(seen) > len(head) and all(e == keepalive for e in seen[len(head) :]), raw


def test_a_stall_with_keep_alives_on_a_request_not_streamed_is_a_plain_stall():
    script = Script().on(Match(user_says="pings"), Stall(0.2, keepalive_every=0.05))
    with StandInServer(script) as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "pings"}]}
        # The stall's time passes with nothing sent; then (no turns left) it hangs up.
        with pytest.raises(ConnectionError):
            post(f"{server.url}/v1/chat/completions", body)
        assert server.requests[-1].bytes_sent == 0


def test_a_server_in_another_process_records_every_request(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(Script().on(Match(user_says="hi"), Text("hello")).to_json())
    record, ready = tmp_path / "record.jsonl", tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "e2e.standin",
            *map(str, ["--script", script, "--record", record, "--ready", ready]),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        port = int(ready.read_text())
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        _status, raw = post(f"http://127.0.0.1:{port}/v1/messages", body)
        assert json.loads(raw)["content"][0]["text"] == "hello"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    (request,) = read_record(record)
    assert request.body == body and request.body_bytes == len(json.dumps(body))
    assert request.conversation.items[-1].text == "hi" and request.finished
