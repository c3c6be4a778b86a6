"""Property-based fuzzing of every MCP tool through the real ``mcp`` client, against
``aegis-mcp --mcp-server`` under a live runner (issue 9, "Bad input on every surface").

Every call comes back as a result or a tool error that names what to change
(never the SDK's bare "Error executing tool X" of a crash, never an ``internal``
error from the runner); the server and the runner stay up and print no traceback.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FUZZ, arguments, json_values, start_runner, tame
from helpers import AEGIS, call, runner_socket

STOP = object()


class McpSession(threading.Thread):
    """A real MCP client session (stdio) run by its own event loop in a thread, so that
    hypothesis can drive it with plain calls; the server's stderr goes to ``errlog``."""

    def __init__(self, env: dict[str, str], errlog: Path) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.errlog = errlog
        self.requests: queue.Queue[Any] = queue.Queue()
        self.replies: queue.Queue[Any] = queue.Queue()

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from mcp.client import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=AEGIS[0], args=[*AEGIS[1:], "--mcp-server"], env=self.env
        )
        with self.errlog.open("w") as errlog:
            try:
                async with Client(stdio_client(params, errlog=errlog)) as client:
                    self.replies.put(await client.list_tools())
                    while (request := await asyncio.to_thread(self.requests.get)) is not STOP:
                        name, args = request
                        try:
                            self.replies.put(await client.call_tool(name, args))
                        except Exception as exc:  # reported to the test, which fails on it
                            self.replies.put(exc)
            except Exception as exc:
                self.replies.put(exc)

    def call(self, name: str, args: dict[str, Any]) -> Any:
        self.requests.put((name, args))
        reply = self.replies.get(timeout=60)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        self.requests.put(STOP)
        self.join(timeout=30)


def _encodable(value: Any) -> bool:
    # The client cannot put a lone surrogate on the wire (it is not UTF-8): such a
    # call is the client's failure, not the server's. The socket fuzz sends them.
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def test_every_mcp_tool_through_the_real_client(aegis_env, runtime_dir, tmp_path):
    runner_err = tmp_path / "runner.stderr"
    proc = start_runner(aegis_env, tmp_path, runner_err)
    session: McpSession | None = None
    try:
        sock = runner_socket(runtime_dir)
        session = McpSession(dict(aegis_env, AEGIS_MCP_SOCKET=str(sock)), tmp_path / "mcp.stderr")
        session.start()
        listed = session.replies.get(timeout=60)
        assert not isinstance(listed, Exception), listed
        tools = {
            tool.name: sorted(tool.input_schema.get("properties", {})) for tool in listed.tools
        }
        assert len(tools) >= 20 and "restart_claude" in tools and "agent_spawn" in tools
        names = sorted(tools)
        # Every tool, not only those the fuzzing happens to draw, refuses a name it does
        # not take and says which it takes.
        for name in names:
            result = session.call(name, {"no_such_argument": 1})
            text = result.content[0].text if result.content else ""
            assert result.is_error, f"{name} accepted an unknown argument: {text}"
            assert "unknown argument 'no_such_argument'" in text, text
            assert all(known in text for known in tools[name]), text
        # Known argument names of the tool often, random ones sometimes.
        calls = st.sampled_from(names).flatmap(
            lambda name: st.tuples(
                st.just(name),
                st.one_of(
                    arguments,
                    st.dictionaries(st.sampled_from(tools[name] or ["x"]), json_values, max_size=4),
                ),
            )
        )

        @FUZZ
        @given(calls.filter(lambda c: _encodable(c[1])))
        def one_call(tool_call):
            name, args = tool_call
            op = {"restart_claude": "restart", "restart_agent": "restart"}.get(name, name)
            result = session.call(name, tame(op, args))
            text = result.content[0].text if result.content else ""
            if result.is_error:
                assert text.strip() and text != f"Error executing tool {name}", text
                assert "(internal)" not in text, text
            else:
                assert isinstance(json.loads(text), dict)

        one_call()
        # Still serving, both of them.
        assert not session.call("server_status", {}).is_error
        assert proc.poll() is None
        assert call(sock, "hello")["runner_pid"] == proc.pid
    finally:
        if session is not None:
            session.close()
        proc.terminate()
        proc.wait(timeout=30)
    for log in (runner_err, tmp_path / "mcp.stderr"):
        text = log.read_text()
        assert "Traceback" not in text and "unexpected exception" not in text, text[-3000:]
