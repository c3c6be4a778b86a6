"""MCP client side: connects to the configured servers in the background.

Importing the ``mcp`` SDK costs about half a second, so it happens on a background
thread that runs an asyncio loop holding one ``mcp.client.Client`` per server: the
prompt appears at once, as Claude Code's does, and tool calls wait for the connection
they need. Every failure (missing command, a server that dies or never answers the
handshake within ``MCP_TIMEOUT`` ms, as in Claude) becomes a status line, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any

from aegis_mcp import __version__
from aegis_mcp.demo.mcpconfig import ServerSpec

DEFAULT_CONNECT_TIMEOUT = 30.0


class ToolError(Exception):
    """A tool could not be called (unknown name, server down, transport failure)."""


class ServerState:
    """One server's connection as seen from both threads."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.status = "pending"
        self.error: str | None = None
        self.tools: list[Any] = []
        self.client: Any = None
        # Set once the server is connected or has failed: tool calls wait on it.
        self.settled = threading.Event()


def _reason(exc: BaseException) -> str:
    """A one-line reason, digging through the exception groups anyio produces."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _ms_env(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    try:
        return float(value) / 1000 if value else default
    except ValueError:
        return default


def result_text(result: Any) -> str:
    """The text of a ``CallToolResult``: text blocks joined, other blocks named."""
    parts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


class ToolHub:
    """The MCP servers of this agent and the thread that talks to them."""

    def __init__(self, servers: list[ServerSpec], on_status: Callable[[str], None]) -> None:
        self.states = [ServerState(spec) for spec in servers]
        self._on_status = on_status
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        # Set by close(): servers cut off by the shutdown are not reported as failures.
        self._closing = False
        self._thread = threading.Thread(target=self._thread_main, name="mcp", daemon=True)
        self.connect_timeout = _ms_env("MCP_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
        self.call_timeout = _ms_env("MCP_TOOL_TIMEOUT", None)

    # -- the MCP thread -------------------------------------------------------------

    def start(self) -> None:
        """Start connecting; returns immediately."""
        self._thread.start()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._fail_pending(f"MCP client stopped: {_reason(exc)}")
        finally:
            self._fail_pending("MCP client stopped")
            self._loop_ready.set()

    def _fail_pending(self, reason: str) -> None:
        for st in self.states:
            if not st.settled.is_set():
                self._settle(st, "failed", reason)

    def _settle(self, st: ServerState, status: str, error: str | None = None) -> None:
        st.status, st.error = status, error
        # Reported before waiters are released, so the status line precedes any output
        # that depended on the connection.
        if not self._closing:
            if status == "connected":
                self._on_status(f"mcp: {st.spec.name} connected ({len(st.tools)} tools)")
            else:
                self._on_status(f"mcp: {st.spec.name} failed: {error}")
        st.settled.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._loop_ready.set()
        try:
            # Inside the thread: this import is the slow part the prompt must not wait for.
            from mcp.client import Client
            from mcp.client.stdio import StdioServerParameters
            from mcp.types import Implementation
        except ImportError as exc:
            self._fail_pending(f"the mcp package is not available ({exc})")
            return
        if self._stop.is_set():
            # Closed during the import: starting servers now would only mean stopping them.
            return
        info = Implementation(name="aegis-demo-agent", version=__version__)
        tasks = [
            asyncio.create_task(self._serve(st, Client, StdioServerParameters, info))
            for st in self.states
        ]
        await self._stop.wait()
        # Connected sessions end on their own once stop is set; a handshake still in
        # progress would hold the exit up to the connect timeout.
        for task, st in zip(tasks, self.states, strict=True):
            if not st.settled.is_set():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, st: ServerState, client_cls: Any, params_cls: Any, info: Any) -> None:
        spec = st.spec
        try:
            if spec.transport == "stdio":
                # Claude hands its whole environment to MCP servers (the SDK's default is a
                # short allow-list); aegis relies on AEGIS_MCP_SOCKET reaching them.
                target = params_cls(
                    command=spec.command, args=spec.args, env={**os.environ, **spec.env}
                )
            elif spec.transport == "http":
                target = spec.url
            else:
                self._settle(
                    st, "failed", f"the demo does not speak the {spec.transport} transport"
                )
                return
            async with contextlib.AsyncExitStack() as stack:
                async with asyncio.timeout(self.connect_timeout):
                    client = await stack.enter_async_context(client_cls(target, client_info=info))
                    st.tools = await self._list_tools(client)
                st.client = client
                self._settle(st, "connected")
                assert self._stop is not None
                await self._stop.wait()
        except Exception as exc:
            if not st.settled.is_set():
                self._settle(st, "failed", _reason(exc))
            else:
                st.status, st.error = "failed", _reason(exc)
        finally:
            st.client = None

    @staticmethod
    async def _list_tools(client: Any) -> list[Any]:
        tools: list[Any] = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools

    # -- the caller's side ----------------------------------------------------------

    def wait_settled(self, timeout: float | None = None) -> None:
        """Block until every server has connected or failed."""
        for st in self.states:
            st.settled.wait(timeout)

    def tool_names(self) -> list[tuple[str, str, str]]:
        """``(server, tool, description)`` for every connected server's tools, in order."""
        return [
            (st.spec.name, t.name, (t.description or "").strip().split("\n")[0])
            for st in self.states
            if st.status == "connected"
            for t in st.tools
        ]

    def qualified_name(self, name: str) -> str:
        """Claude's name for a tool (``mcp__server__tool``); waits for the connection.

        Raises:
            ToolError: no connected server offers the tool.
        """
        st, tool = self._resolve(name)
        return f"mcp__{st.spec.name}__{tool}"

    def _resolve(self, name: str) -> tuple[ServerState, str]:
        """Find the server for ``server.tool``, ``mcp__server__tool`` or a plain tool name."""
        for st in self.states:
            server = st.spec.name
            for prefix in (f"{server}.", f"mcp__{server}__"):
                if name.startswith(prefix) and len(name) > len(prefix):
                    st.settled.wait()
                    if st.status != "connected":
                        raise ToolError(f"MCP server {server} is not connected: {st.error}")
                    return st, name[len(prefix) :]
        failures = []
        for st in self.states:
            st.settled.wait()
            if st.status == "connected" and any(t.name == name for t in st.tools):
                return st, name
            if st.status != "connected":
                failures.append(f"{st.spec.name}: {st.error}")
        detail = f" (unavailable: {'; '.join(failures)})" if failures else ""
        raise ToolError(f"no MCP tool named {name!r}{detail}")

    def call(self, name: str, args: dict) -> tuple[str, bool]:
        """Call a tool and wait for it; returns ``(text, is_error)``.

        Raises:
            ToolError: the tool cannot be reached or the call failed in transport.
        """
        st, tool = self._resolve(name)
        client, loop = st.client, self._loop
        if client is None or loop is None:
            raise ToolError(f"MCP server {st.spec.name} is not connected")
        future = asyncio.run_coroutine_threadsafe(client.call_tool(tool, args), loop)
        try:
            result = future.result(self.call_timeout)
        except BaseException as exc:
            # Interrupted (Ctrl-C, SIGTERM) or timed out: do not leave the call running.
            future.cancel()
            if isinstance(exc, Exception):
                raise ToolError(_reason(exc)) from exc
            raise
        return result_text(result), bool(result.is_error)

    def close(self, timeout: float = 3.0) -> bool:
        """Close every session (the SDK stops each server); True if done within ``timeout``."""
        self._closing = True
        if not self._thread.is_alive():
            return True
        self._loop_ready.wait(timeout)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)
        return not self._thread.is_alive()
