"""Stand-in model servers for the real agent CLIs, offline.

One :class:`StandInServer` speaks every wire protocol the supported agents use:
Anthropic Messages (JSON and SSE; Claude Code), OpenAI Responses (Codex) and Chat
Completions (aider through litellm), and Gemini ``generateContent`` /
``streamGenerateContent`` (Gemini CLI). Point an agent at ``server.url``.

What it answers is a :class:`Script`: rules tried in order, each a :class:`Match` on
the request's conversation (the user's words, the tool whose result just came back,
the model asked for, the request's number) and the turns to answer with:

- :class:`Text` and :class:`SlowText` (streamed in pieces, seconds apart);
- :class:`ToolCall` by the tool's plain name (``server_status``): the server finds
  the name the client offered (``mcp__aegis-mcp__server_status``); a rule whose tool
  is not offered does not apply, so side requests without tools fall through;
- :class:`Stall` (accept and send nothing, for a while or until stopped; or start
  the stream and send only keep-alives: Anthropic pings, SSE comments elsewhere);
- :class:`HttpError` (the protocol's error shape, e.g. to end a headless run).

Every request is kept (:attr:`StandInServer.requests`, or a JSONL record file for a
server in another process, :func:`read_record`) with its body, size, normalized
conversation and the rule that answered, so a test can check that a resumed agent's
request carried its earlier turn, or count the bytes an agent sent.

Example::

    script = (
        Script()
        .on(Match(user_says="go"), ToolCall("server_status"), name="status")
        .on(Match(after_tool="server_status"), Text("done"), name="done")
    )
    with StandInServer(script) as server:
        ...  # ANTHROPIC_BASE_URL=server.url claude -p go
        request = server.wait_for(lambda r: r.rule == "done")
        assert "runner_pid" in request.conversation.texts()
"""

from .script import (
    Conversation,
    HttpError,
    Item,
    Match,
    Rule,
    Script,
    SlowText,
    Stall,
    Text,
    ToolCall,
)
from .server import Request, StandInServer, read_record

__all__ = [
    "Conversation",
    "HttpError",
    "Item",
    "Match",
    "Request",
    "Rule",
    "Script",
    "SlowText",
    "Stall",
    "StandInServer",
    "Text",
    "ToolCall",
    "read_record",
]
