"""The stand-in model server: one HTTP server for every wire protocol, a script, a record.

In the test process::

    with StandInServer(script) as server:
        env["ANTHROPIC_BASE_URL"] = server.url
        ...
        server.wait_for(lambda r: r.rule == "after restart")

In another process or network namespace: ``python -m e2e.standin --script FILE
--record FILE --ready FILE [--host H] [--port P]`` (see ``__main__``), then read the
record with :func:`read_record`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import anthropic, gemini, openai
from .script import Conversation, HttpError, Item, Script, Stall, Text, Turn
from .wire import Wire


@dataclass
class Request:
    """One request the server received, and what it answered."""

    number: int
    method: str
    path: str
    protocol: str
    """``anthropic``, ``responses``, ``chat``, ``gemini`` or ``other``."""
    headers: dict[str, str]
    body: Any
    body_bytes: int
    conversation: Conversation | None
    client: str = ""
    """The address the request came from."""
    rule: str = ""
    """Name of the rule that answered (``default``: none matched)."""
    reply: list[dict[str, Any]] = field(default_factory=list)
    bytes_sent: int = 0
    finished: bool = False
    received_at: float = 0.0
    """Wall-clock time the whole request had been read (the model's clock starts)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (for the record file)."""
        data = asdict(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        """The request :meth:`to_json` wrote."""
        conv = data.get("conversation")
        if conv is not None:
            conv = Conversation(
                tuple(Item(**i) for i in conv["items"]),
                tuple(conv["tools"]),
                conv["model"],
                conv["stream"],
            )
        return cls(**{**data, "conversation": conv})


class StandInServer:
    """A scripted model server on ``host:port`` (port 0: any free one)."""

    def __init__(
        self, script: Script, host: str = "127.0.0.1", port: int = 0, record: Path | None = None
    ) -> None:
        self.script = script
        self.record = record
        self._requests: list[Request] = []
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._httpd.server_address[1]

    def start(self) -> StandInServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled and slow answers end at once."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in order of arrival."""
        with self._lock:
            return list(self._requests)

    def model_requests(self) -> list[Request]:
        """The requests that carried a conversation."""
        return [r for r in self.requests if r.conversation is not None]

    def wait_for(
        self, predicate: Callable[[Request], bool], timeout: float = 60.0, what: str = ""
    ) -> Request:
        """The first request (already received or still to come) for which ``predicate``
        holds; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for request in self._requests:
                    if predicate(request):
                        return request
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.protocol, r.path, r.rule) for r in self._requests]
                    raise AssertionError(
                        f"no request {what or 'matching'} within {timeout}s; got {seen}"
                    )
                self._lock.wait(left)

    # -- serving ---------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        path = urlsplit(handler.path).path
        protocol, conv = _parse(handler.command, path, body)
        with self._lock:
            request = Request(
                len(self._requests) + 1,
                handler.command,
                handler.path,
                protocol,
                {k.lower(): v for k, v in handler.headers.items()},
                body,
                len(raw),
                conv,
                handler.client_address[0],
                received_at=time.time(),
            )
            schema = gemini.json_schema(body) if protocol == "gemini" else None
            if schema is not None:
                # The client's own side request (Gemini CLI's model router): it parses
                # the answer, so it gets what its schema asks for, not the script.
                request.rule = "json-schema"
                turns = [Text(json.dumps(gemini.schema_instance(schema)))]
            elif conv is not None:
                request.rule, turns = self.script.answer(conv, request.number)
                request.reply = [{"type": type(t).__name__, **asdict(t)} for t in turns]
            else:
                turns = []
            self._requests.append(request)
            self._lock.notify_all()
        wire = Wire(handler, self._stopping)
        try:
            self._answer(wire, protocol, path, body, conv, turns)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                request.bytes_sent = wire.bytes_sent
                request.finished = True
                self._lock.notify_all()
            if self.record is not None:
                with self._lock, open(self.record, "a") as out:
                    out.write(json.dumps(request.to_json()) + "\n")

    def _answer(
        self,
        wire: Wire,
        protocol: str,
        path: str,
        body: Any,
        conv: Conversation | None,
        turns: list[Turn],
    ) -> None:
        if conv is None:
            _side_answer(wire, protocol, path, body)
            return
        if turns and isinstance(turns[0], Stall):
            stall = turns[0]
            if stall.keepalive_every and conv.stream:
                every, seconds = stall.keepalive_every, stall.seconds
                if protocol == "anthropic":
                    anthropic.keepalive(wire, conv, every, seconds)
                else:
                    wire.begin_events()
                    wire.keep_alive(every, seconds, lambda: wire.comment("keep-alive"))
                return
            if not wire.pause(stall.seconds):
                return
            turns = turns[1:]
            if not turns:
                return
        errors = {"anthropic": anthropic.error, "gemini": gemini.error}
        if turns and isinstance(turns[0], HttpError):
            errors.get(protocol, openai.error)(wire, turns[0].status, turns[0].message)
            return
        replies = {
            "anthropic": anthropic.reply,
            "responses": openai.responses_reply,
            "chat": openai.chat_reply,
            "gemini": gemini.reply,
        }
        replies[protocol](wire, conv, turns)


def _parse(method: str, path: str, body: Any) -> tuple[str, Conversation | None]:
    """The protocol of a request and its conversation (None for side requests)."""
    if not isinstance(body, dict):
        return "other", None
    if anthropic.handles(method, path):
        return "anthropic", None if path.endswith("/count_tokens") else anthropic.conversation(
            path, body
        )
    if openai.handles_responses(method, path):
        return "responses", openai.responses_conversation(path, body)
    if openai.handles_chat(method, path):
        return "chat", openai.chat_conversation(path, body)
    if gemini.handles(method, path):
        wanted = gemini.method_of(path) in ("generateContent", "streamGenerateContent")
        return "gemini", gemini.conversation(path, body) if wanted else None
    return "other", None


def _side_answer(wire: Wire, protocol: str, path: str, body: Any) -> None:
    """Token counts and model lists; 404 for anything else."""
    if protocol == "anthropic":
        wire.json(200, anthropic.count_tokens(body))
    elif protocol == "gemini" and gemini.method_of(path) == "countTokens":
        wire.json(200, gemini.count_tokens(body))
    elif path.rstrip("/").endswith("/models"):
        wire.json(200, {"object": "list", "data": [], "models": []})
    else:
        wire.json(404, {"error": {"message": f"the stand-in does not serve {path}"}})


def _handler_class(server: StandInServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server._handle(self)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def read_record(path: Path) -> list[Request]:
    """The requests a server in another process recorded (finished ones)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [Request.from_json(json.loads(line)) for line in lines if line.strip()]
