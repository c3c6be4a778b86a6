"""Anthropic Messages API (``POST /v1/messages``, JSON or SSE), as Claude Code speaks it."""

from __future__ import annotations

import itertools
import json
from typing import Any

from .script import Conversation, Item, SlowText, Text, ToolCall, Turn
from .wire import Wire, stream_text

_ids = itertools.count(1)


def handles(method: str, path: str) -> bool:
    """Whether this protocol serves the request."""
    return method == "POST" and path.startswith("/v1/messages")


def conversation(path: str, body: dict[str, Any]) -> Conversation:
    """The request's conversation."""
    items: list[Item] = []
    names: dict[str, str] = {}
    system = body.get("system")
    if system:
        items.append(Item("system", "text", _text(system)))
    for message in body.get("messages", []):
        role = message.get("role", "user")
        content = message.get("content", "")
        if isinstance(content, str):
            items.append(Item(role, "text", content))
            continue
        for block in content:
            kind = block.get("type")
            if kind == "text":
                items.append(Item(role, "text", block.get("text", "")))
            elif kind == "tool_use":
                names[block.get("id", "")] = block.get("name", "")
                items.append(Item.call(role, block.get("name", ""), block.get("input")))
            elif kind == "tool_result":
                tool = names.get(block.get("tool_use_id", ""), "")
                items.append(Item(role, "tool_result", _text(block.get("content", "")), tool=tool))
    tools = tuple(t.get("name", "") for t in body.get("tools", []) if isinstance(t, dict))
    return Conversation(tuple(items), tools, body.get("model", ""), bool(body.get("stream")))


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """Answer of ``/v1/messages/count_tokens``: a rough count, four bytes a token."""
    return {"input_tokens": max(1, len(json.dumps(body)) // 4)}


def error(wire: Wire, status: int, message: str) -> None:
    """An API error of the Messages API's shape."""
    wire.json(
        status, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    )


def reply(wire: Wire, conv: Conversation, turns: list[Turn]) -> None:
    """The assistant message made of ``turns``, streamed if the request asked for it."""
    msg_id = f"msg_standin_{next(_ids)}"
    blocks = []
    for turn in turns:
        if isinstance(turn, ToolCall):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_standin_{next(_ids)}",
                    "name": turn.name,
                    "input": turn.arguments,
                }
            )
        elif isinstance(turn, (Text, SlowText)):
            blocks.append({"type": "text", "text": turn.text, "_turn": turn})
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    usage = {"input_tokens": max(1, len(conv.texts()) // 4), "output_tokens": 1}
    message = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": conv.model or "standin",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    if not conv.stream:
        content = [{k: v for k, v in b.items() if k != "_turn"} for b in blocks]
        wire.json(200, {**message, "content": content, "stop_reason": stop})
        return
    wire.begin_events()
    wire.event({"type": "message_start", "message": {**message, "content": []}}, "message_start")
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            wire.event(
                {"type": "content_block_start", "index": index, "content_block": start},
                "content_block_start",
            )

            def emit(piece: str, index: int = index) -> None:
                delta = {"type": "text_delta", "text": piece}
                wire.event(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )

            stream_text(wire, block["_turn"], emit)
        else:
            start = {**block, "input": {}}
            wire.event(
                {"type": "content_block_start", "index": index, "content_block": start},
                "content_block_start",
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            wire.event(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        wire.event({"type": "content_block_stop", "index": index}, "content_block_stop")
    wire.event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": 1},
        },
        "message_delta",
    )
    wire.event({"type": "message_stop"}, "message_stop")


def keepalive(wire: Wire, conv: Conversation, every: float, seconds: float | None) -> None:
    """A stream that starts and then sends only ``ping`` events, ``every`` seconds, for
    ``seconds`` (None: until the client goes away or the server stops)."""
    wire.begin_events()
    message = {
        "id": f"msg_standin_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": conv.model or "standin",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    wire.event({"type": "message_start", "message": message}, "message_start")
    wire.keep_alive(every, seconds, lambda: wire.event({"type": "ping"}, "ping"))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(c.get("text", "") if isinstance(c, dict) else c) for c in content)
    return str(content)
