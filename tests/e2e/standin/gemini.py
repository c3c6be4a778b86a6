"""Gemini API (``POST /v1beta/models/M:generateContent`` and ``:streamGenerateContent``)."""

from __future__ import annotations

import json
import re
from typing import Any

from .script import Conversation, Item, SlowText, Text, Turn
from .wire import Wire, calls, full_text, stream_text

_METHOD = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>\w+)")


def handles(method: str, path: str) -> bool:
    """Whether the request is a Gemini model method."""
    return method == "POST" and _METHOD.search(path) is not None


def method_of(path: str) -> str:
    """``generateContent``, ``streamGenerateContent``, ``countTokens``, ..."""
    found = _METHOD.search(path)
    return found.group("method") if found else ""


def conversation(path: str, body: dict[str, Any]) -> Conversation:
    """The request's conversation."""
    found = _METHOD.search(path)
    items: list[Item] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        items.append(Item("system", "text", _parts_text(system.get("parts", []))))
    for content in body.get("contents", []):
        role = "assistant" if content.get("role") == "model" else "user"
        for part in content.get("parts", []):
            if "text" in part:
                items.append(Item(role, "text", str(part["text"])))
            elif "functionCall" in part:
                call = part["functionCall"]
                items.append(Item.call(role, call.get("name", ""), call.get("args")))
            elif "functionResponse" in part:
                result = part["functionResponse"]
                items.append(
                    Item(
                        "user",
                        "tool_result",
                        _result_text(result.get("response")),
                        tool=result.get("name", ""),
                    )
                )
    tools = tuple(
        d.get("name", "")
        for group in body.get("tools", [])
        for d in (group.get("functionDeclarations") or group.get("function_declarations") or [])
    )
    stream = found is not None and found.group("method") == "streamGenerateContent"
    return Conversation(tuple(items), tools, found.group("model") if found else "", stream)


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """Answer of ``:countTokens``."""
    return {"totalTokens": max(1, len(json.dumps(body)) // 4)}


def error(wire: Wire, status: int, message: str) -> None:
    """An API error of Gemini's shape."""
    wire.json(status, {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}})


def reply(wire: Wire, conv: Conversation, turns: list[Turn]) -> None:
    """The candidate made of ``turns``; SSE for ``streamGenerateContent``."""
    usage = {
        "promptTokenCount": max(1, len(conv.texts()) // 4),
        "candidatesTokenCount": 1,
        "totalTokenCount": 1 + len(conv.texts()) // 4,
    }

    def body(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": conv.model}

    call_parts = [{"functionCall": {"name": c.name, "args": c.arguments}} for c in calls(turns)]
    if not conv.stream:
        text = full_text(turns)
        parts = ([{"text": text}] if text else []) + call_parts
        wire.json(200, body(parts, "STOP"))
        return
    wire.begin_events()
    for turn in turns:
        if isinstance(turn, (Text, SlowText)):
            stream_text(wire, turn, lambda piece: wire.event(body([{"text": piece}], None)))
    wire.event(body(call_parts or [{"text": ""}], "STOP"))


def json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of the JSON answer the request asks for (Gemini CLI's own side
    requests, such as its model router), if it asks for one."""
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") != "application/json":
        return None
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
    return schema if isinstance(schema, dict) else {}


def schema_instance(schema: dict[str, Any]) -> Any:
    """A small value that satisfies ``schema`` (types, enums, required properties)."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: schema_instance(sub) for name, sub in props.items()}
    return {"string": "standin", "integer": 1, "number": 1, "boolean": False, "array": []}.get(kind)


def _result_text(response: Any) -> str:
    """A function response as text: its ``output`` string (how Gemini CLI wraps a
    tool's text), else the JSON of the whole response."""
    if isinstance(response, dict) and isinstance(response.get("output"), str):
        return response["output"]
    return json.dumps(response)


def _parts_text(parts: list[Any]) -> str:
    return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
