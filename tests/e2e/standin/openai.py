"""OpenAI's Responses API (``POST .../responses``, as Codex speaks it) and Chat
Completions (``POST .../chat/completions``, as aider's litellm speaks it)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from .script import Conversation, Item, SlowText, Text, ToolCall, Turn
from .wire import Wire, calls, full_text, stream_text

_ids = itertools.count(1)


def handles_responses(method: str, path: str) -> bool:
    """Whether the request is for the Responses API."""
    return method == "POST" and path.rstrip("/").endswith("/responses")


def handles_chat(method: str, path: str) -> bool:
    """Whether the request is for Chat Completions."""
    return method == "POST" and path.rstrip("/").endswith("/chat/completions")


def error(wire: Wire, status: int, message: str) -> None:
    """An API error of OpenAI's shape."""
    wire.json(
        status, {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    )


# -- Responses ---------------------------------------------------------------------


def responses_conversation(path: str, body: dict[str, Any]) -> Conversation:
    """The conversation of a Responses request."""
    items: list[Item] = []
    names: dict[str, str] = {}
    if body.get("instructions"):
        items.append(Item("system", "text", str(body["instructions"])))
    entries = body.get("input", [])
    if isinstance(entries, str):
        entries = [{"type": "message", "role": "user", "content": entries}]
    for entry in entries:
        kind = entry.get("type", "message")
        if kind == "message":
            role = {"developer": "system"}.get(entry.get("role", "user"), entry.get("role", "user"))
            items.append(Item(role, "text", _content_text(entry.get("content", ""))))
        elif kind in ("function_call", "custom_tool_call"):
            name = _qualified(entry.get("namespace"), entry.get("name", ""))
            names[entry.get("call_id", "")] = name
            items.append(Item.call("assistant", name, _arguments(entry)))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            tool = names.get(entry.get("call_id", ""), "")
            items.append(
                Item("user", "tool_result", _content_text(entry.get("output", "")), tool=tool)
            )
    return Conversation(
        tuple(items), _tool_names(body.get("tools", [])), body.get("model", ""), True
    )


def responses_reply(wire: Wire, conv: Conversation, turns: list[Turn]) -> None:
    """The response made of ``turns``, as Responses API events."""
    resp_id = f"resp_standin_{next(_ids)}"
    base = {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "model": conv.model,
        "status": "in_progress",
    }
    wire.begin_events()
    wire.event({"type": "response.created", "response": {**base, "output": []}}, "response.created")
    output: list[dict[str, Any]] = []
    for turn in turns:
        index = len(output)
        if isinstance(turn, (Text, SlowText)):
            item_id = f"msg_standin_{next(_ids)}"
            added = {
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            wire.event(
                {"type": "response.output_item.added", "output_index": index, "item": added},
                "response.output_item.added",
            )

            def emit(piece: str, item_id: str = item_id, index: int = index) -> None:
                wire.event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": 0,
                        "delta": piece,
                    },
                    "response.output_text.delta",
                )

            stream_text(wire, turn, emit)
            item = {
                **added,
                "status": "completed",
                "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
            }
        elif isinstance(turn, ToolCall):
            namespace, _, name = turn.name.rpartition("/")
            item = {
                "type": "function_call",
                "id": f"fc_standin_{next(_ids)}",
                "call_id": f"call_standin_{next(_ids)}",
                "name": name,
                "arguments": json.dumps(turn.arguments),
                "status": "completed",
            }
            if namespace:
                item["namespace"] = namespace
            wire.event(
                {"type": "response.output_item.added", "output_index": index, "item": item},
                "response.output_item.added",
            )
        else:
            continue
        wire.event(
            {"type": "response.output_item.done", "output_index": index, "item": item},
            "response.output_item.done",
        )
        output.append(item)
    usage = {
        "input_tokens": max(1, len(conv.texts()) // 4),
        "output_tokens": 1,
        "total_tokens": 1 + len(conv.texts()) // 4,
    }
    done = {**base, "status": "completed", "output": output, "usage": usage}
    wire.event({"type": "response.completed", "response": done}, "response.completed")


# -- Chat Completions ----------------------------------------------------------------


def chat_conversation(path: str, body: dict[str, Any]) -> Conversation:
    """The conversation of a Chat Completions request."""
    items: list[Item] = []
    names: dict[str, str] = {}
    for message in body.get("messages", []):
        role = message.get("role", "user")
        if role == "tool":
            tool = names.get(message.get("tool_call_id", ""), "")
            items.append(
                Item("user", "tool_result", _content_text(message.get("content", "")), tool=tool)
            )
            continue
        role = {"developer": "system"}.get(role, role)
        if message.get("content"):
            items.append(Item(role, "text", _content_text(message["content"])))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            names[call.get("id", "")] = function.get("name", "")
            items.append(Item.call(role, function.get("name", ""), _arguments(function)))
    return Conversation(
        tuple(items),
        _tool_names(body.get("tools", [])),
        body.get("model", ""),
        bool(body.get("stream")),
    )


def chat_reply(wire: Wire, conv: Conversation, turns: list[Turn]) -> None:
    """The completion made of ``turns``, streamed as chunks if the request asked for it."""
    chat_id = f"chatcmpl-standin-{next(_ids)}"
    tool_calls = [
        {
            "id": f"call_standin_{next(_ids)}",
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for c in calls(turns)
    ]
    finish = "tool_calls" if tool_calls else "stop"
    usage = {
        "prompt_tokens": max(1, len(conv.texts()) // 4),
        "completion_tokens": 1,
        "total_tokens": 1 + len(conv.texts()) // 4,
    }
    head = {"id": chat_id, "created": int(time.time()), "model": conv.model}
    if not conv.stream:
        message: dict[str, Any] = {"role": "assistant", "content": full_text(turns) or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice = {"index": 0, "message": message, "finish_reason": finish}
        wire.json(200, {**head, "object": "chat.completion", "choices": [choice], "usage": usage})
        return

    def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> None:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        wire.event({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})

    wire.begin_events()
    chunk({"role": "assistant", "content": ""})
    for turn in turns:
        if isinstance(turn, (Text, SlowText)):
            stream_text(wire, turn, lambda piece: chunk({"content": piece}))
    if tool_calls:
        chunk({"tool_calls": [{"index": n, **call} for n, call in enumerate(tool_calls)]})
    chunk({}, finish, usage=usage)
    wire.event("[DONE]")


# -- shared --------------------------------------------------------------------------


def _tool_names(tools: list[Any]) -> tuple[str, ...]:
    names: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            # A group of tools (how Codex offers an MCP server's): called by name
            # with the namespace beside it; spelled NAMESPACE/NAME here.
            prefix = tool.get("name", "")
            names.extend(
                _qualified(prefix, t.get("name", ""))
                for t in tool.get("tools", [])
                if isinstance(t, dict)
            )
        elif "function" in tool and isinstance(tool["function"], dict):
            names.append(tool["function"].get("name", ""))
        elif tool.get("name"):
            names.append(tool["name"])
    return tuple(names)


def _qualified(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _arguments(entry: dict[str, Any]) -> dict[str, Any]:
    raw = entry.get("arguments", entry.get("input", ""))
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"raw": raw}
    return value if isinstance(value, dict) else {"value": value}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
    return json.dumps(content)
