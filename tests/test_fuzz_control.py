"""Property-based fuzzing of the control protocol: the decoder alone, then every op of a
live runner over one connection (issue 9, "Bad input on every surface").

Whatever a client sends, it gets one reply per line that is ``ok`` or an error with
a code and a message saying what is wrong (never ``internal``), the connection
stays open, the runner stays alive and prints no traceback.
"""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis_mcp.control import protocol
from aegis_mcp.control.protocol import RequestError, decode_request
from fuzzing import FUZZ, arguments, claims, json_values, start_runner, tame
from helpers import call, runner_socket

CLIENT_ERRORS = {
    protocol.BAD_REQUEST,
    protocol.UNKNOWN_OP,
    protocol.INVALID_ARGUMENT,
    protocol.NOT_FOUND,
    protocol.VERSION_MISMATCH,
    protocol.UNAVAILABLE,
}

deep = st.integers(0, 3000).map(
    lambda n: b'{"v":1,"op":"hello","args":{"x":' + b"[" * n + b"]" * n + b"}}"
)
huge = st.integers(1, 6000).map(lambda n: b'{"v":1,"id":' + b"9" * n + b',"op":"hello"}')
raw_lines = st.one_of(
    st.binary(max_size=200),
    deep,
    huge,
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["v", "id", "op", "args", "activity", "agent", "token", "x"]), json_values
    ).map(lambda v: json.dumps(v).encode()),
).map(lambda line: line.replace(b"\n", b" "))


@FUZZ
@given(raw_lines)
def test_decoder_accepts_or_says_why(line):
    try:
        request = decode_request(line)
    except RequestError as exc:
        assert exc.code in (protocol.BAD_REQUEST, protocol.VERSION_MISMATCH)
        assert exc.message
        reply = json.loads(protocol.error_reply(exc.request_id, exc.code, exc.message))
        assert reply["ok"] is False and reply["error"]["message"] == exc.message
    else:
        assert request.op and isinstance(request.args, dict)
        assert isinstance(request.activity, bool)


@pytest.mark.parametrize(
    "line, needle",
    [
        (b'{"v": true, "op": "hello"}', "'v' must be the protocol version"),
        (b'{"v": 1.0, "op": "hello"}', "'v' must be the protocol version"),
        (b'{"v": 1, "op": "hello", "activity": 1}', "'activity' must be true or false"),
        (b'{"v": 1, "op": "hello", "extra": 1}', "unknown request field(s) 'extra'"),
        (b'{"v": 1, "id": true, "op": "hello"}', "'id' must be an integer or a string"),
        (b'{"v": 1, "op": "agent_status", "args": {"agent_id": "\\ud800"}}', "lone surrogate"),
        (
            b'{"v": 1, "op": "x", "args": {"n": ' + b"1" * 5000 + b"}}",
            "args.n is an integer of 5000 digits",
        ),
        (b'{"v": 1, "op": "x", "args": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nested deeper"),
        (b'{"v": 1, "op": "x", "args": {"n": NaN}}', "args.n is NaN, which is not a JSON value"),
    ],
)
def test_decoder_names_what_is_wrong(line, needle):
    with pytest.raises(RequestError) as caught:
        decode_request(line)
    assert caught.value.code == protocol.BAD_REQUEST and needle in caught.value.message


STREAM_OPS = {"subscribe"}


class Connection:
    """One client connection, kept for the whole fuzz run: a dropped one fails the test."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")

    def exchange(self, line: bytes) -> dict[str, Any]:
        self.file.write(line + b"\n")
        self.file.flush()
        reply = self.file.readline()
        assert reply, "the runner dropped the connection"
        return json.loads(reply)


def check_reply(reply: dict[str, Any], req_id: Any = None, claimed: bool = False) -> None:
    """A well-formed reply; a client error (``forbidden`` too when the request claimed to
    be an agent: the fuzzer knows no token, so every claim is refused)."""
    assert reply["v"] == 1
    if req_id is not None:
        assert reply["id"] == req_id
    if claimed:
        assert reply["ok"] is False, reply
    if reply["ok"] is True:
        assert "result" in reply
    else:
        assert reply["ok"] is False
        error = reply["error"]
        allowed = CLIENT_ERRORS | {protocol.FORBIDDEN} if claimed else CLIENT_ERRORS
        assert error["code"] in allowed, error
        assert isinstance(error["message"], str) and error["message"].strip(), error


def test_every_op_of_a_live_runner(aegis_env, runtime_dir, tmp_path):
    stderr = tmp_path / "runner.stderr"
    proc = start_runner(aegis_env, tmp_path, stderr)
    try:
        sock = runner_socket(runtime_dir)
        ops = call(sock, "hello")["ops"]
        assert {"restart", "agent_spawn", "netmon_log", "watchdog_configure"} <= set(ops)
        conn = Connection(sock)
        # The cases of the issue, on the same connection as the fuzzing that follows.
        for op, args, code, needle in [
            ("restart", {"force": True}, "invalid_argument", "unknown argument(s) force"),
            ("restart", {"by": ""}, "invalid_argument", "by must not be empty"),
            ("restart", {"by": "a\0b"}, "invalid_argument", "by must not contain NUL"),
            ("restart", {"reason": "  "}, "invalid_argument", "reason must not be empty"),
            ("restart", {"reason": "\0"}, "invalid_argument", "reason must not contain NUL"),
            ("agent_status", {"agent_id": "\ud800"}, "bad_request", "lone surrogate"),
            ("file_lock_acquire", {"path": "\udfff"}, "bad_request", "lone surrogate"),
            (
                "agent_spawn",
                {"description": "x", "working_directory": "\ud800"},
                "bad_request",
                "args.working_directory holds a lone surrogate",
            ),
        ]:
            reply = conn.exchange(protocol.make_request(7, op, args).rstrip(b"\n"))
            assert reply["id"] == 7 and reply["error"]["code"] == code, reply
            assert needle in reply["error"]["message"], reply
        ids = itertools.count(1)
        requests = st.tuples(
            st.sampled_from([*ops, "no_such_op"]), arguments, st.booleans(), claims
        )

        @FUZZ
        @given(requests)
        def one_request(request):
            op, args, activity, claim = request
            req_id = next(ids)
            line = protocol.make_request(req_id, op, tame(op, args), activity, identity=claim)
            claimed = claim is not None and op in ops
            if op in STREAM_OPS and not claimed:
                # A stream takes over its connection: each one gets its own.
                stream = Connection(sock)
                check_reply(stream.exchange(line.rstrip(b"\n")), req_id)
                stream.sock.close()
                return
            check_reply(conn.exchange(line.rstrip(b"\n")), req_id, claimed)

        @FUZZ
        @given(raw_lines.filter(lambda line: line.strip()))
        def one_line(line):
            try:
                sent = json.loads(line)
            except (ValueError, RecursionError):
                sent = None
            claimed = isinstance(sent, dict) and any(
                sent.get(field) is not None for field in ("agent", "token")
            )
            check_reply(conn.exchange(line), claimed=claimed)

        one_request()
        one_line()
        assert proc.poll() is None, "the runner died"
        assert call(sock, "hello")["runner_pid"] == proc.pid
        # Each forged claim was refused and counted, none let through.
        audit = call(sock, "server_status")["authority"]
        assert audit["refused"] > 0
        assert all(r["who"]["kind"] == "unproven" for r in audit["recent_refusals"])
        conn.sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = stderr.read_text()
    assert "Traceback" not in text and "Exception in callback" not in text, text[-3000:]
