"""One agent session: what a turn can do, shared by the interactive and headless modes.

A turn is either a plain prompt (answered ``demo: you said: ...`` and recorded in the
conversation) or a slash command: ``/tool NAME [JSON]``, ``/tools``, ``/scenario SPEC``,
``/help``, ``/exit [CODE]`` (``/quit`` too).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aegis_mcp.demo import scenario
from aegis_mcp.demo.cli import Options
from aegis_mcp.demo.conversation import Conversation
from aegis_mcp.demo.output import Console, TextSink
from aegis_mcp.demo.signals import SignalState, StepInterrupted
from aegis_mcp.demo.steps import MaxTurnsExceeded, StepRunner

# typing is not imported at run time (start-up cost); only type checkers look here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from aegis_mcp.demo.tools import ToolHub

COMMAND_HELP = """\
/tool NAME [JSON]   call an MCP tool (NAME, server.NAME or mcp__server__NAME)
/tools              list the MCP tools
/scenario SPEC      run scenario steps (grammar: aegis_mcp.demo.scenario)
/exit [CODE]        leave (also /quit)
anything else       a prompt; the demo echoes it"""


def reply_for(prompt: str) -> str:
    """The demo's whole intelligence."""
    return f"demo: you said: {prompt}"


class Agent:
    """The parts of a running demo agent that a turn touches."""

    def __init__(
        self,
        opts: Options,
        console: Console,
        sink: TextSink,
        conversation: Conversation,
        signals: SignalState,
        hub: ToolHub | None,
    ) -> None:
        self.opts = opts
        self.console = console
        self.sink = sink
        self.conversation = conversation
        self.signals = signals
        self.hub = hub
        self.runner = StepRunner(sink, hub, opts.max_turns)

    def begin_turn(self) -> None:
        """Reset per-turn state: the reply text and the tool-call budget."""
        self.sink.begin_turn()
        self.runner.tool_calls = 0

    def interruptible(self, action: Callable[..., None], *args: object) -> None:
        """Run ``action(*args)`` so that one Ctrl-C aborts it (interactive mode).

        Raises:
            MaxTurnsExceeded: passed on for the caller to report in its own way.
        """
        try:
            self.signals.busy = True
            action(*args)
        except StepInterrupted:
            pass
        finally:
            self.signals.busy = False

    def answer(self, prompt: str) -> None:
        """Answer a plain prompt and record both sides in the conversation."""
        self.conversation.append("user", prompt)
        reply = reply_for(prompt)
        self.sink.say(reply)
        self.conversation.append("assistant", reply)

    def command(self, line: str) -> None:
        """Run a slash command.

        Raises:
            scenario.ScenarioError: ``/scenario`` was given a malformed SPEC.
            MaxTurnsExceeded: the tool-call budget ran out.
            SystemExit: ``/exit``.
        """
        name, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if name in ("/exit", "/quit"):
            try:
                code = int(rest) if rest else 0
            except ValueError:
                self.console.err(f"/exit: not a number: {rest!r}")
                return
            raise SystemExit(code)
        if name == "/tool":
            self._tool_command(rest)
        elif name == "/tools":
            self._list_tools()
        elif name == "/scenario":
            self.runner.run(scenario.parse(rest))
        elif name == "/help":
            for text in COMMAND_HELP.splitlines():
                self.sink.say(text)
        else:
            self.sink.say(f"unknown command: {name} (try /help)")

    def _tool_command(self, rest: str) -> None:
        tool, _, raw = rest.partition(" ")
        if not tool:
            self.console.err("usage: /tool NAME [JSON-args]")
            return
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            self.console.err(f"/tool: arguments are not JSON: {exc}")
            return
        if not isinstance(args, dict):
            self.console.err("/tool: arguments must be a JSON object")
            return
        self.runner.call_tool(tool, args, plain=True)

    def _list_tools(self) -> None:
        if self.hub is None:
            self.sink.say("(no MCP servers configured)")
            return
        self.hub.wait_settled()
        for server, tool, description in self.hub.tool_names():
            self.sink.say(f"{server}.{tool}" + (f" — {description}" if description else ""))
        for st in self.hub.states:
            if st.status != "connected":
                self.sink.say(f"mcp: {st.spec.name} failed: {st.error}")

    def max_turns_message(self, exc: MaxTurnsExceeded) -> str:
        """Claude's wording for a spent ``--max-turns`` budget."""
        return f"Error: Reached max turns ({exc.limit})"
