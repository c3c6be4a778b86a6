"""Reading a headless agent's output: its last lines and its result.

Claude-style agents (``--output-format stream-json``) print one JSON event per
line and end with ``{"type": "result", "result": ..., "is_error": ...}``; that
event is the result. Other agents print text, and their last lines are the
best result there is. Stream-json events are shown in the tail as short
readable lines rather than raw JSON, which would fill the tail with one
``system`` event listing every tool.
"""

from __future__ import annotations

import json
import signal
from collections import deque
from dataclasses import dataclass
from typing import Any

from .records import COMPLETED, FAILED

TAIL_LINES = 50
FALLBACK_RESULT_LINES = 20
MAX_LINE_CHARS = 2000
MAX_RESULT_CHARS = 200_000
MAX_PENDING_BYTES = 8 << 20
"""A line longer than this is cut: a runaway agent must not grow our memory without bound."""
SNIPPET_CHARS = 200

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class Outcome:
    """What the output says about how the run went."""

    text: str
    is_error: bool | None
    """From the result event; None when there was none."""
    subtype: str | None = None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _content_text(content: Any) -> str:
    """Text of a tool result's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(block.get("text", "")) for block in content if isinstance(block, dict)
        ).strip()
    return "" if content is None else str(content)


def event_lines(event: dict[str, Any]) -> list[str]:
    """Readable tail lines for one stream-json event."""
    kind = event.get("type")
    message = event.get("message")
    blocks = message.get("content") if isinstance(message, dict) else None
    if kind == "assistant" and isinstance(blocks, list):
        lines: list[str] = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                lines.extend(str(block.get("text", "")).splitlines())
            elif block.get("type") == "tool_use":
                args = json.dumps(block.get("input"), ensure_ascii=False, default=str)
                lines.append(f"[tool_use] {block.get('name')} {_clip(args, SNIPPET_CHARS)}")
        return lines
    if kind == "user" and isinstance(blocks, list):
        return [
            f"[tool_result{' error' if block.get('is_error') else ''}] "
            + _clip(_content_text(block.get("content")), SNIPPET_CHARS)
            for block in blocks
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
    if kind == "result":
        error = " (error)" if event.get("is_error") else ""
        return [f"[result] {event.get('subtype', '')}{error}".rstrip()]
    if kind == "system":
        return [f"[system] {event.get('subtype', '')}".rstrip()]
    return [json.dumps(event, ensure_ascii=False, default=str)]


def parse_event(line: str) -> tuple[str, dict[str, Any]] | None:
    """``(text before it, event)`` when ``line`` carries a stream-json event.

    Text before the object is tolerated because the agent's stderr shares our
    output callback with its stdout, so a stderr chunk can land in front of a
    stdout line.
    """
    if '"type"' not in line:
        return None
    start = line.find("{")
    if start < 0:
        return None
    try:
        event, end = _decoder.raw_decode(line, start)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    if line[end:].strip():
        return None
    return line[:start], event


class OutputScanner:
    """Fed the agent's output chunk by chunk; keeps the tail and the result event."""

    def __init__(self, tail_lines: int = TAIL_LINES) -> None:
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.result_event: dict[str, Any] | None = None
        self.bytes_seen = 0
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        """Take one chunk of output."""
        self.bytes_seen += len(data)
        self._pending += data
        while True:
            newline = self._pending.find(b"\n")
            if newline < 0:
                break
            line = bytes(self._pending[:newline])
            del self._pending[: newline + 1]
            self._line(line)
        if len(self._pending) > MAX_PENDING_BYTES:
            self._line(bytes(self._pending))
            self._pending.clear()

    def finish(self) -> None:
        """The output ended: take a last line that had no newline."""
        if self._pending:
            self._line(bytes(self._pending))
            self._pending.clear()

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        parsed = parse_event(text)
        if parsed is None:
            self._add(text)
            return
        before, event = parsed
        self._add(before)
        if event.get("type") == "result":
            self.result_event = event
        for line in event_lines(event):
            self._add(line)

    def _add(self, line: str) -> None:
        if line.strip():
            self.tail.append(_clip(line.rstrip(), MAX_LINE_CHARS))

    def outcome(self) -> Outcome:
        """The result: the result event's, else the last lines of output."""
        event = self.result_event
        if event is not None:
            result = event.get("result")
            text = result if isinstance(result, str) else _content_text(result)
            subtype = event.get("subtype")
            is_error = bool(event.get("is_error")) or (
                isinstance(subtype, str) and subtype.startswith("error")
            )
            return Outcome(
                _clip(text, MAX_RESULT_CHARS),
                is_error,
                subtype if isinstance(subtype, str) else None,
            )
        lines = list(self.tail)[-FALLBACK_RESULT_LINES:]
        return Outcome(_clip("\n".join(lines), MAX_RESULT_CHARS), None)


def _signal_note(exit_code: int) -> str:
    """A note naming the signal behind a shell-style 128+N exit code."""
    try:
        return f" (killed by {signal.Signals(exit_code - 128).name})" if exit_code > 128 else ""
    except ValueError:
        return ""


def final_status(exit_code: int, outcome: Outcome) -> tuple[str, str | None]:
    """Status and error of an agent that ended on its own (not stopped by the pool)."""
    if outcome.is_error:
        detail = f" ({outcome.subtype})" if outcome.subtype else ""
        return FAILED, f"the agent reported an error{detail}, exit code {exit_code}"
    if exit_code != 0:
        return FAILED, f"the agent exited with code {exit_code}{_signal_note(exit_code)}"
    return COMPLETED, None
