r"""The scenario language: scripted agent behaviour for tests and demonstrations.

A scenario comes from ``--scenario SPEC``, the ``AEGIS_DEMO_SCENARIO`` environment
variable, or the ``/scenario SPEC`` command. SPEC is a list of steps separated by ``;``
and run in order; a step is a keyword, optionally followed by ``:`` and arguments that
are themselves separated by ``:`` (the last argument takes the rest of the text, so
``say:a:b`` says ``a:b``). Whitespace around steps is ignored, and so are empty steps.
Write ``\;`` for a literal ``;`` (and ``\|`` inside ``repeat``).

==============================  =========================================================
``say:TEXT``                    print TEXT as a line of the reply
``sleep:SECS``                  sleep (fractions allowed)
``quiet``                       sleep forever, printing nothing (signals still work)
``spin[:SECS]``                 burn CPU without output, forever without SECS
``grow:MB[:STEP_MB]``           allocate MB megabytes, STEP_MB at a time (0.1 s apart),
                                touching every page so RSS grows; the memory is kept
``exit[:CODE]``                 exit at once with CODE (default 0)
``crash``                       die by SIGSEGV (core dumps disabled first)
``tool:NAME[:JSON]``            call MCP tool NAME (``tool``, ``server.tool`` or
                                ``mcp__server__tool``) with a JSON object of arguments;
                                prints ``tool NAME -> TEXT`` or ``tool NAME error: ...``
``connect:HOST:PORT[:BYTES]``   TCP connect, send BYTES bytes, read until EOF or 1 s;
                                prints ``connect HOST:PORT ok sent=N recv=M`` or
                                ``connect HOST:PORT error: ...`` (IPv6 as ``[::1]``)
``ignore-sigint``               ignore SIGINT from now on
``ignore-sigterm``              ignore SIGTERM from now on
``stop-self``                   send itself SIGSTOP (continues after SIGCONT)
``spawn-child:SECS``            start a child process living SECS seconds; prints
                                ``spawned child PID``
``print-env:NAME``              print ``NAME=value`` (or ``NAME is unset``)
``write:PATH:TEXT``             write TEXT to PATH (relative to the working directory)
``repeat:N:STEP[|STEP...]``     run the ``|``-separated sub-steps N times (N may be
                                ``forever``)
``spinner[:SECS]``              Claude Code's "waiting for the model" line
                                (``✻ Thinking… (3s · esc to interrupt)``) redrawn in
                                place at 10 Hz, forever without SECS (on a terminal;
                                elsewhere it only waits)
``stream:SECS:TEXT``            print TEXT word by word, spread over SECS seconds, as
                                a model's streamed reply appears
``ask:HOST:PORT[:PROMPT]``      a model round trip: TCP connect, send PROMPT (default
                                ``hello``) and a newline, show the spinner until the
                                server closes, printing each line it sends as it
                                arrives; ``ask HOST:PORT error: ...`` on failure
``background-io:SECS[:BYTES]``  from now on, in the background, write and read back
                                BYTES bytes (default 64) of a scratch file every SECS
                                seconds: the trickle of I/O of an agent idle at its
                                prompt
==============================  =========================================================

Example: ``say:starting;tool:watchdog_ping:{};grow:200:20;sleep:1;exit:3``.

A malformed scenario is rejected as a whole before any step runs; the caller reports it
on stderr and exits 2 (``/scenario`` at the interactive prompt only prints the error).
Runtime failures (a tool error, a refused connection) print a line and carry on.
"""

from __future__ import annotations

import json

FOREVER = -1


class ScenarioError(ValueError):
    """The scenario text does not follow the grammar."""


class Step:
    """One parsed step: its keyword and validated arguments."""

    __slots__ = ("args", "kind", "text")

    def __init__(self, kind: str, args: tuple, text: str) -> None:
        self.kind = kind
        self.args = args
        self.text = text

    def __repr__(self) -> str:
        return f"Step({self.kind!r}, {self.args!r})"


def split_unescaped(text: str, sep: str) -> list[str]:
    r"""Split on ``sep`` except where written ``\sep``; only that escape is removed."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith(sep, i + 1):
            current.append(sep)
            i += 1 + len(sep)
            continue
        if text.startswith(sep, i):
            parts.append("".join(current))
            current = []
            i += len(sep)
            continue
        current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _number(value: str, what: str, step: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ScenarioError(f"{step}: {what} must be a number, got {value!r}") from None
    if number < 0 or number != number or number == float("inf"):
        raise ScenarioError(f"{step}: {what} must be a finite number >= 0")
    return number


def _integer(value: str, what: str, step: str, low: int = 0, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ScenarioError(f"{step}: {what} must be an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ScenarioError(f"{step}: {what} must be {bound}")
    return number


def _split_host_port(rest: str, step: str) -> tuple[str, str, str | None]:
    """``HOST:PORT[:BYTES]`` with HOST optionally ``[ipv6]``."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1 : end + 2] != ":":
            raise ScenarioError(f"{step}: expected [ADDR]:PORT")
        host, tail = rest[1:end], rest[end + 2 :]
    else:
        host, sep, tail = rest.partition(":")
        if not sep:
            raise ScenarioError(f"{step}: expected HOST:PORT[:BYTES]")
    port, has_bytes, nbytes = tail.partition(":")
    return host, port, (nbytes if has_bytes else None)


def parse_step(text: str) -> Step | None:
    """Parse one step; None for an empty one.

    Raises:
        ScenarioError: unknown keyword or bad arguments.
    """
    text = text.strip()
    if not text:
        return None
    kind, has_args, rest = text.partition(":")
    kind = kind.strip()

    def need_args() -> str:
        if not has_args or rest == "":
            raise ScenarioError(f"{text}: missing argument")
        return rest

    def no_args() -> None:
        if has_args:
            raise ScenarioError(f"{text}: takes no argument")

    args: tuple
    if kind == "say":
        args = (rest,)
    elif kind == "sleep":
        args = (_number(need_args(), "SECS", text),)
    elif kind == "spin":
        args = (_number(rest, "SECS", text) if has_args else None,)
    elif kind == "grow":
        mb, _, step_mb = need_args().partition(":")
        total = _number(mb, "MB", text)
        step = _number(step_mb, "STEP_MB", text) if step_mb else total
        if step <= 0 and total > 0:
            raise ScenarioError(f"{text}: STEP_MB must be > 0")
        args = (total, step)
    elif kind == "exit":
        args = (_integer(rest, "CODE", text, 0, 255) if has_args else 0,)
    elif kind == "tool":
        name, _, raw = need_args().partition(":")
        if not name:
            raise ScenarioError(f"{text}: missing tool name")
        try:
            tool_args = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise ScenarioError(f"{text}: arguments are not JSON: {exc}") from None
        if not isinstance(tool_args, dict):
            raise ScenarioError(f"{text}: arguments must be a JSON object")
        args = (name, tool_args)
    elif kind == "connect":
        host, port, nbytes = _split_host_port(need_args(), text)
        if not host:
            raise ScenarioError(f"{text}: missing host")
        args = (
            host,
            _integer(port, "PORT", text, 1, 65535),
            _integer(nbytes, "BYTES", text) if nbytes is not None else 0,
        )
    elif kind == "spinner":
        args = (_number(rest, "SECS", text) if has_args else None,)
    elif kind == "stream":
        secs, sep, words = need_args().partition(":")
        if not sep:
            raise ScenarioError(f"{text}: expected stream:SECS:TEXT")
        args = (_number(secs, "SECS", text), words)
    elif kind == "ask":
        host, port, prompt = _split_host_port(need_args(), text)
        if not host:
            raise ScenarioError(f"{text}: missing host")
        args = (host, _integer(port, "PORT", text, 1, 65535), prompt or "hello")
    elif kind == "background-io":
        secs, _, nbytes = need_args().partition(":")
        period = _number(secs, "SECS", text)
        if period <= 0:
            raise ScenarioError(f"{text}: SECS must be > 0")
        args = (period, _integer(nbytes, "BYTES", text, 1, 1 << 20) if nbytes else 64)
    elif kind in ("quiet", "crash", "ignore-sigint", "ignore-sigterm", "stop-self"):
        no_args()
        args = ()
    elif kind == "spawn-child":
        args = (_number(need_args(), "SECS", text),)
    elif kind == "print-env":
        args = (need_args(),)
    elif kind == "write":
        path, sep, content = need_args().partition(":")
        if not path or not sep:
            raise ScenarioError(f"{text}: expected write:PATH:TEXT")
        args = (path, content)
    elif kind == "repeat":
        count, sep, body = need_args().partition(":")
        times = FOREVER if count == "forever" else _integer(count, "N", text)
        if not sep:
            raise ScenarioError(f"{text}: expected repeat:N:STEP")
        sub = [s for s in (parse_step(p) for p in split_unescaped(body, "|")) if s]
        if not sub:
            raise ScenarioError(f"{text}: nothing to repeat")
        args = (times, sub)
    else:
        raise ScenarioError(f"unknown step {kind!r} in {text!r}")
    return Step(kind, args, text)


def parse(spec: str) -> list[Step]:
    """Parse a whole scenario.

    Raises:
        ScenarioError: any step is malformed (nothing has run yet).
    """
    return [s for s in (parse_step(part) for part in split_unescaped(spec, ";")) if s]
