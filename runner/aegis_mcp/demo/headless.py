"""Headless mode (``-p``/``--print``): one turn, then exit, with Claude's output formats.

``text`` prints the reply. ``json`` prints only the final result object. ``stream-json``
prints one event per line as Claude does: a ``system``/``init`` event, ``assistant``
events (text and ``tool_use`` blocks), ``user`` events carrying ``tool_result`` blocks,
and the ``result`` event. Informational lines go to stderr in the JSON formats.
"""

from __future__ import annotations

import json
import os
import sys
import time

from aegis_mcp.demo import scenario
from aegis_mcp.demo.agent import Agent, reply_for
from aegis_mcp.demo.output import Console, TextSink, format_tool_line
from aegis_mcp.demo.steps import MaxTurnsExceeded

NO_INPUT = (
    "Error: Input must be provided either through stdin or as a prompt argument when using --print"
)


class JsonSink(TextSink):
    """Collects the reply and, for stream-json, emits Claude-style events as it goes."""

    def __init__(self, console: Console, stream: bool, session_id: str, model: str) -> None:
        super().__init__(console)
        self.stream = stream
        self.session_id = session_id
        self.model = model
        self.started = time.monotonic()
        self._ids = 0

    def _emit(self, event: dict) -> None:
        self.console.out(json.dumps(event, ensure_ascii=False))

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_demo_{self._ids:04d}"

    def _assistant(self, block: dict) -> None:
        message = {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [block],
            "stop_reason": None,
        }
        self._emit(
            {
                "type": "assistant",
                "message": message,
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )

    def init(self, tools: list[str], servers: list[dict], permission_mode: str) -> None:
        """The ``system``/``init`` event (stream-json only)."""
        if not self.stream:
            return
        event = {
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "session_id": self.session_id,
            "tools": tools,
            "mcp_servers": servers,
            "model": self.model,
            "permissionMode": permission_mode,
            "apiKeySource": "none",
        }
        self._emit(event)

    def say(self, text: str) -> None:
        """One line of the reply: an assistant text block when streaming."""
        self.lines.append(text)
        if self.stream:
            self._assistant({"type": "text", "text": text})

    def write_partial(self, fragment: str) -> None:
        """Kept until the line is complete: events carry whole lines."""
        self._partial.append(fragment)

    def end_line(self) -> None:
        """The streamed line, as one text block."""
        text = "".join(self._partial)
        self._partial = []
        self.say(text)

    def status(self, text: str) -> None:
        """No spinner on a JSON stream."""

    def tool_use(self, name: str, args: dict) -> str:
        """An assistant ``tool_use`` block when streaming."""
        use_id = self._next_id("toolu")
        if self.stream:
            self._assistant({"type": "tool_use", "id": use_id, "name": name, "input": args})
        return use_id

    def tool_result(
        self, use_id: str, name: str, text: str, is_error: bool, plain: bool = False
    ) -> None:
        """A ``user`` event with the ``tool_result`` block when streaming."""
        self.lines.append(
            text if plain and not is_error else format_tool_line(name, text, is_error)
        )
        if self.stream:
            block: dict[str, object] = {
                "type": "tool_result",
                "tool_use_id": use_id,
                "content": text,
            }
            if is_error:
                block["is_error"] = True
            self._emit(
                {
                    "type": "user",
                    "message": {"role": "user", "content": [block]},
                    "parent_tool_use_id": None,
                    "session_id": self.session_id,
                }
            )

    def finish(self, subtype: str, num_turns: int) -> None:
        """The ``result`` object: the whole output in json mode, the last event in stream."""
        self._emit(
            {
                "type": "result",
                "subtype": subtype,
                "is_error": subtype != "success",
                "duration_ms": int((time.monotonic() - self.started) * 1000),
                "duration_api_ms": 0,
                "num_turns": num_turns,
                "result": self.text,
                "session_id": self.session_id,
                "total_cost_usd": 0.0,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        )


def read_prompt(given: str | None, have_steps: bool) -> str | None:
    """The prompt: the argument, else stdin when it is not a terminal (as Claude does)."""
    if given is not None or have_steps:
        return given
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return None
        text = sys.stdin.read().strip()
    except (OSError, ValueError):
        return None
    return text or None


def run(agent: Agent, steps: list[scenario.Step]) -> int:
    """Run the one headless turn; returns the exit code."""
    opts, console = agent.opts, agent.console
    prompt = read_prompt(opts.prompt, bool(steps))
    if prompt is None and not steps:
        console.err(NO_INPUT)
        return 1
    is_command = prompt is not None and prompt.lstrip().startswith("/")
    if opts.continuing:
        # stderr: stdout carries only the reply in print mode.
        console.err(f"continuing conversation ({len(agent.conversation.turns)} turns)")
    if agent.hub is not None:
        # Claude connects its MCP servers before the first turn in print mode.
        agent.hub.wait_settled()
    sink = agent.sink
    if isinstance(sink, JsonSink):
        sink.init(_tool_list(agent), _server_list(agent), _permission_mode(agent))
    if prompt is not None and not is_command:
        agent.conversation.append("user", prompt)
    agent.begin_turn()
    subtype = "success"
    try:
        if steps:
            agent.runner.run(steps)
        if prompt is not None and is_command:
            agent.command(prompt)
        elif prompt is not None and not steps:
            sink.say(reply_for(prompt))
    except scenario.ScenarioError as exc:
        console.err(f"demo: invalid scenario: {exc}")
        return 2
    except MaxTurnsExceeded as exc:
        subtype = "error_max_turns"
        if not isinstance(sink, JsonSink):
            console.err(agent.max_turns_message(exc))
    if sink.text:
        agent.conversation.append("assistant", sink.text)
    if isinstance(sink, JsonSink):
        sink.finish(subtype, 1 + agent.runner.tool_calls)
    return 0 if subtype == "success" else 1


def _tool_list(agent: Agent) -> list[str]:
    if agent.hub is None:
        return []
    return [f"mcp__{server}__{tool}" for server, tool, _ in agent.hub.tool_names()]


def _server_list(agent: Agent) -> list[dict]:
    if agent.hub is None:
        return []
    return [{"name": st.spec.name, "status": st.status} for st in agent.hub.states]


def _permission_mode(agent: Agent) -> str:
    return "bypassPermissions" if agent.opts.skip_permissions else "default"
