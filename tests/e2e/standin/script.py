"""What a stand-in model answers: a list of rules, each a match and the turns to reply.

A request is first reduced to a :class:`Conversation` (the same shape for every wire
protocol); the first rule that matches it and still has uses left gives the reply.
Scripts are plain data: :meth:`Script.to_json` / :meth:`Script.from_json` carry one
to a server running in another process (or network namespace).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

# -- the turns a reply is made of -------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Assistant text, streamed in one piece."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A call of the offered tool named ``name`` (or ending in ``__name``, ``_name``...).

    An argument value ``{"$ref": REGEX}`` is replaced by group 1 of the regex's last
    match in the conversation's text (e.g. the ``agent_id`` an earlier tool returned).
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlowText:
    """Text streamed in ``chunks`` pieces, ``interval`` seconds apart (headers at once)."""

    text: str
    chunks: int = 10
    interval: float = 0.5


@dataclass(frozen=True)
class Stall:
    """Accept the request and send nothing, not even headers, for ``seconds`` (None:
    until the client goes away or the server stops). With ``keepalive_every``, a streamed
    answer starts and then sends only keep-alives that often: a model stalled behind a
    live connection (Anthropic: headers, ``message_start``, then ``ping`` events; the
    other protocols: headers, then SSE comments, as a proxy sends; a request that is not
    streamed gets the plain stall)."""

    seconds: float | None = None
    keepalive_every: float | None = None


@dataclass(frozen=True)
class HttpError:
    """An error response of the protocol's own shape (e.g. 400 ``invalid_request_error``)."""

    status: int = 400
    message: str = "scripted error"


Turn = Text | ToolCall | SlowText | Stall | HttpError
_TURNS = {cls.__name__: cls for cls in (Text, ToolCall, SlowText, Stall, HttpError)}


# -- the conversation a request carries -------------------------------------------


@dataclass(frozen=True)
class Item:
    """One piece of a conversation: user or assistant text, a tool call or its result."""

    role: str
    """``user``, ``assistant`` or ``system``."""
    kind: str
    """``text``, ``tool_call`` or ``tool_result``."""
    text: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def call(cls, role: str, tool: str, arguments: Any) -> Item:
        """A call of ``tool`` (arguments that are not an object count as none)."""
        return cls(
            role, "tool_call", tool=tool, arguments=arguments if isinstance(arguments, dict) else {}
        )


@dataclass(frozen=True)
class Conversation:
    """A request reduced to what scripts match on."""

    items: tuple[Item, ...]
    tools: tuple[str, ...]
    """Names of the tools offered, as the client spelled them."""
    model: str = ""
    stream: bool = True

    def texts(self) -> str:
        """Every text, argument and result of the conversation, one per line."""
        parts = []
        for item in self.items:
            parts.append(item.text)
            if item.arguments:
                parts.append(json.dumps(item.arguments))
        return "\n".join(parts)

    def last_turn(self) -> tuple[str, list[Item]]:
        """The kind of the final turn, ``user`` or ``tool_result``, and its items."""
        tail: list[Item] = []
        for item in reversed(self.items):
            if item.role == "assistant":
                break
            tail.insert(0, item)
        if any(i.kind == "tool_result" for i in tail):
            return "tool_result", [i for i in tail if i.kind == "tool_result"]
        return "user", [i for i in tail if i.role == "user"]

    def tool_calls(self) -> list[Item]:
        """The assistant's tool calls, in order."""
        return [i for i in self.items if i.kind == "tool_call"]

    def offered(self, name: str) -> str | None:
        """The offered tool that ``name`` means: itself, or a name ending in a
        separator and ``name`` (``mcp__aegis-mcp__server_status``)."""
        if name in self.tools:
            return name
        for tool in self.tools:
            if re.search(rf"(^|[_.:/-]){re.escape(name)}$", tool):
                return tool
        return None


def tool_matches(offered: str, name: str) -> bool:
    """Whether a tool spelled ``offered`` by the client is the script's ``name``."""
    return offered == name or re.search(rf"(^|[_.:/-]){re.escape(name)}$", offered) is not None


# -- rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Conditions on a request, all of which must hold (none: always)."""

    user_says: str | None = None
    """The final turn is the user's and its text contains this."""
    after_tool: str | None = None
    """The final turn holds the result of this tool."""
    result_has: str | None = None
    """... and that result's text contains this."""
    anywhere: str | None = None
    """Some text of the conversation contains this."""
    model_has: str | None = None
    """The requested model's name contains this."""
    nth: int | None = None
    """Only the server's ``nth`` request (1-based)."""

    def holds(self, conv: Conversation, number: int) -> bool:
        """Whether ``conv``, the server's request ``number``, satisfies every condition."""
        if self.nth is not None and number != self.nth:
            return False
        if self.model_has is not None and self.model_has not in conv.model:
            return False
        if self.anywhere is not None and self.anywhere not in conv.texts():
            return False
        kind, items = conv.last_turn()
        said = any(self.user_says in i.text for i in items) if self.user_says else True
        if self.user_says is not None and (kind != "user" or not said):
            return False
        if self.after_tool is not None:
            results = [i for i in items if kind == "tool_result"]
            if not any(tool_matches(i.tool, self.after_tool) for i in results):
                return False
            if self.result_has is not None and not any(
                self.result_has in i.text for i in results if tool_matches(i.tool, self.after_tool)
            ):
                return False
        return True


@dataclass(frozen=True)
class Rule:
    """When ``when`` holds (and the tools called are offered), answer ``reply``."""

    when: Match
    reply: tuple[Turn, ...]
    times: int | None = None
    """How many requests this rule may answer (None: any number)."""
    name: str = ""


@dataclass
class Script:
    """Rules tried in order; ``default`` answers what no rule matches."""

    rules: list[Rule] = field(default_factory=list)
    default: tuple[Turn, ...] = (Text("ok"),)
    _used: dict[int, int] = field(default_factory=dict, repr=False)

    def on(
        self, when: Match | None = None, *reply: Turn, times: int | None = None, name: str = ""
    ) -> Script:
        """Add a rule; chainable: ``.on(Match(user_says="go"), ToolCall("server_status"))``."""
        self.rules.append(Rule(when or Match(), tuple(reply), times, name))
        return self

    def answer(self, conv: Conversation, number: int) -> tuple[str, list[Turn]]:
        """The name of the rule that answers ``conv`` (``default``) and its turns, resolved."""
        for index, rule in enumerate(self.rules):
            if rule.times is not None and self._used.get(index, 0) >= rule.times:
                continue
            if not rule.when.holds(conv, number):
                continue
            turns = _resolve(rule.reply, conv)
            if turns is None:
                continue
            self._used[index] = self._used.get(index, 0) + 1
            return rule.name or f"rule {index}", turns
        return "default", _resolve(self.default, conv) or [Text("ok")]

    def to_json(self) -> str:
        """The script as JSON (for a server in another process)."""
        return json.dumps(
            {
                "rules": [
                    {
                        "when": dataclasses.asdict(r.when),
                        "reply": [_turn_json(t) for t in r.reply],
                        "times": r.times,
                        "name": r.name,
                    }
                    for r in self.rules
                ],
                "default": [_turn_json(t) for t in self.default],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Script:
        """The script :meth:`to_json` wrote."""
        data = json.loads(text)
        rules = [
            Rule(
                Match(**r["when"]), tuple(_turn_from(t) for t in r["reply"]), r["times"], r["name"]
            )
            for r in data["rules"]
        ]
        return cls(rules, tuple(_turn_from(t) for t in data["default"]))


def _turn_json(turn: Turn) -> dict[str, Any]:
    return {"type": type(turn).__name__, **dataclasses.asdict(turn)}


def _turn_from(data: dict[str, Any]) -> Turn:
    data = dict(data)
    return _TURNS[data.pop("type")](**data)


def _resolve(turns: tuple[Turn, ...], conv: Conversation) -> list[Turn] | None:
    """``turns`` with tool names as offered and ``$ref`` arguments filled in; None
    when a tool is not offered or a reference finds nothing (the rule does not apply)."""
    out: list[Turn] = []
    for turn in turns:
        if isinstance(turn, ToolCall):
            offered = conv.offered(turn.name)
            if offered is None:
                return None
            arguments = {}
            for key, value in turn.arguments.items():
                if isinstance(value, dict) and set(value) == {"$ref"}:
                    found = re.findall(value["$ref"], conv.texts())
                    if not found:
                        return None
                    value = found[-1]
                arguments[key] = value
            turn = ToolCall(offered, arguments)
        out.append(turn)
    return out
