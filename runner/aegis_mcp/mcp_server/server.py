"""The aegis-mcp MCP server (stdio): the tools an agent uses to drive its supervisor.

Tool names and parameters are the original aegis-mcp's (plus ``restart_agent``
and the file-lock tools). Each tool is a thin call into a backend (the runner
over its control socket, or an in-process pool); results come back as JSON
objects, errors as MCP tool errors whose text says what to change. Nothing but
protocol is written to stdout.

This module imports the SDK. ``aegis-mcp --mcp-server`` starts in :mod:`.front`, which
answers the client's opening requests before it imports this.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from pydantic import ConfigDict, Field, ValidationError

from .. import __version__
from ..control.protocol import PRIMARY_AGENT_ID, ControlError
from ..sandbox.kinds import SandboxKind
from .backend import Backend

INSTRUCTIONS = """\
aegis-mcp supervises this coding agent. Use restart_claude/restart_agent after changing MCP
server configuration (the agent comes back with its conversation), watchdog_* to keep the
lockup detector out of the way during long silent work, agent_* to run background agents on
tasks, file_lock_* to coordinate edits between agents, and netmon_* to see network activity.
Every tool acts on the agent that calls it: in a background agent, restart_claude restarts
that background agent and watchdog_* is its own; it sees and stops only the agents it
spawned. server_status shows who you are and what you may do ("caller").
"""

LockupAction = Literal["warn", "restart", "restart_with_backoff", "kill", "notify_and_wait"]
Reason = Annotated[str | None, Field(description="why (for the record)", max_length=2000)]
Prompt = Annotated[
    str | None, Field(description="prompt to start the new session with", max_length=100_000)
]
AgentId = Annotated[str, Field(min_length=1, max_length=100)]


# Tools without arguments: each forwards to the operation of the same name.
SIMPLE_TOOLS: dict[str, str] = {
    "server_status": (
        "Status of the wrapper and the agent: runner pid and uptime, agent command, "
        "pid, user, restarts (with reasons and times), MCP injection, watchdog summary, netmon "
        "mode, refused requests. Use it to check how this session is supervised. In a "
        "background agent it shows that agent (its command, restarts, who spawned it, its "
        "depth). 'caller' says who you are to the runner and what you may do, by tool."
    ),
    "watchdog_status": (
        "Health of the agent as the watchdog sees it: state (Active, Idle, "
        "Unresponsive, HighResource) with the reason, seconds since the last activity and what "
        "it was, consecutive unresponsive checks, memory and CPU of the agent's process tree, "
        "pending action, backoff state and the current settings."
    ),
    "watchdog_ping": (
        "Tell the watchdog you are alive (resets the activity timer and ends a "
        "notify_and_wait pause). Call it during long silent work."
    ),
    "agent_list": (
        "List the background agents started with agent_spawn, by every runner on "
        "this machine's state directory and by earlier runs, with their id, status (queued, "
        "running, completed, failed, stopped, timed_out; orphaned = still running but its "
        "runner died; lost = its runner died and it is gone), task, times, who spawned each "
        "and at what depth. A background agent sees itself and the agents it spawned."
    ),
    "agent_pool_stats": (
        "Pool statistics: max agents, spawn depth limit, active, queued, running, "
        "completed, failed, stopped, timed out, mean run time."
    ),
    "agent_file_locks": (
        "File locks held by agents: path, holder, since, expiry. Check before "
        "editing files other agents may be working on."
    ),
    "netmon_status": (
        "Network monitoring summary for the agent and everything it started: mode, "
        "connections, failed connects, unique addresses, bytes sent and received, top targets "
        "with host names where known, and coverage: what the monitoring source sees of each "
        "process (full, partial, blind) and why not. Bytes it could not see are null, not 0. "
        "A background agent sees its own processes' traffic."
    ),
    "netmon_namespace_list": (
        "aegis network namespaces on this machine (aegis-<runner pid>[-agent]) "
        "with their owner pid and whether the owner is alive."
    ),
    "netmon_namespace_cleanup": (
        "Remove everything runners that crashed left, as `aegis-mcp cleanup` does: network "
        "namespaces (killing what still runs in them), veths, nft tables, agent cgroups with "
        "their BPF programs, containers and private podman services, dead runners' agent "
        "processes, runtime files. Never a live runner's, nor an orphaned pool agent. Needs "
        "root; not open to background agents."
    ),
}


class _AsSent(FuncMetadata):
    """Arguments exactly as the client sent them. The SDK's default re-parses strings
    that look like JSON, so that ``prompt="null"`` would arrive as None and
    ``count="123"`` as a number: a client speaks JSON, and its types are kept."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


def strict_tool(fn: Callable[..., Any], name: str, description: str) -> Tool:
    """A tool whose arguments are checked strictly: unknown names are refused (the
    schema says ``additionalProperties: false``) and nothing is coerced (``true`` is
    not an integer, ``"123"`` not a number)."""
    tool = Tool.from_function(fn, name=name, description=description)
    loose = tool.fn_metadata

    class Arguments(loose.arg_model):  # type: ignore[name-defined,misc]
        model_config = ConfigDict(extra="forbid", strict=True, title=loose.arg_model.__name__)

    metadata = _AsSent(
        arg_model=Arguments,
        output_schema=loose.output_schema,
        output_model=loose.output_model,
        wrap_output=loose.wrap_output,
    )
    schema = Arguments.model_json_schema(by_alias=True)
    return tool.model_copy(update={"fn_metadata": metadata, "parameters": schema})


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(tool: str, error: ValidationError, accepted: list[str]) -> str:
    """One line per bad argument, saying what to change (the caller is a model)."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        if item["type"] == "extra_forbidden":
            takes = f"it takes {', '.join(accepted)}" if accepted else "it takes no arguments"
            problems.append(f"unknown argument {where!r} ({takes})")
        elif item["type"] == "missing":
            problems.append(f"missing required argument {where!r}")
        else:
            problems.append(f"{where}: {item['msg']}, got {_shown(item['input'])}")
    return f"{tool}: invalid arguments: " + "; ".join(problems)


class StrictServer(MCPServer):
    """An MCPServer whose argument errors name each bad argument and what it takes."""

    def __init__(self, tools: list[Tool], **kwargs: Any) -> None:
        super().__init__(tools=tools, **kwargs)
        self._accepted = {t.name: sorted(t.parameters.get("properties", {})) for t in tools}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """Call a tool; a ValidationError becomes a ToolError that explains it."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(explain(name, cause, self._accepted.get(name, []))) from cause
            raise


def build_server(backend: Backend) -> MCPServer:
    """An MCPServer whose tools call ``backend``."""
    tools: list[Tool] = []

    def tool(description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tools.append(strict_tool(fn, fn.__name__, description))
            return fn

        return register

    async def call(op: str, **args: Any) -> dict[str, Any]:
        try:
            result = await backend.call(op, {k: v for k, v in args.items() if v is not None})
        except ControlError as exc:
            raise ToolError(f"{op} failed ({exc.code}): {exc.message}") from None
        return result if isinstance(result, dict) else {"result": result}

    # -- hot reload ----------------------------------------------------------

    restart_doc = (
        "Restart the coding agent (this session) so that it reconnects to all MCP servers, "
        "e.g. after adding or changing one. The conversation is continued (the agent is "
        "started again with its continue flag, same arguments). This call answers first, then "
        "the agent is stopped (SIGINT twice, then SIGTERM, then SIGKILL) and started again. "
        "`reason` is recorded; `prompt` replaces the original command-line prompt for the "
        "new start. Returns the restart number. Restarts are limited (by default 5 within "
        "60 s): past the limit the call fails with the reason and the agent keeps running, "
        "so do not ask again in a loop. Called by a background agent, it "
        "restarts that background agent (headless, its conversation continued), never the "
        "user's session."
    )

    def restart_tool(by: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def restart(reason: Reason = None, prompt: Prompt = None) -> dict[str, Any]:
            return await call("restart", reason=reason, prompt=prompt, by=by)

        return restart

    tools.append(strict_tool(restart_tool("restart_claude"), "restart_claude", restart_doc))
    tools.append(
        strict_tool(
            restart_tool("restart_agent"),
            "restart_agent",
            restart_doc + " Same as restart_claude, for any agent.",
        )
    )

    # -- watchdog ------------------------------------------------------------

    @tool(
        "Change watchdog settings now (only the ones given). enabled: on/off. "
        "heartbeat_timeout_secs: seconds without output, tool calls or I/O before the agent "
        "counts as unresponsive (0.1 to 604800). lockup_action: what to do after 3 unresponsive "
        "checks — warn, restart (hot reload), restart_with_backoff, kill, notify_and_wait. "
        "max_memory_mb: resident memory limit for the agent's whole process tree, 0 for none. "
        "Returns the new status. A background agent has a watchdog of its own, off until it "
        "turns it on here with enabled=true."
    )
    async def watchdog_configure(
        enabled: bool | None = None,
        heartbeat_timeout_secs: Annotated[float | None, Field(gt=0, le=604800)] = None,
        lockup_action: LockupAction | None = None,
        max_memory_mb: Annotated[int | None, Field(ge=0, le=1 << 22)] = None,
    ) -> dict[str, Any]:
        return await call(
            "watchdog_configure",
            enabled=enabled,
            heartbeat_timeout_secs=heartbeat_timeout_secs,
            lockup_action=lockup_action,
            max_memory_mb=max_memory_mb,
        )

    @tool(
        "Disable the watchdog for duration_secs (default 300, 1 to 604800) before a "
        "long operation that prints nothing (a big build, a long download); it re-enables "
        "itself afterwards. Returns the status."
    )
    async def watchdog_disable(
        duration_secs: Annotated[float, Field(ge=1, le=604800)] = 300,
    ) -> dict[str, Any]:
        return await call("watchdog_disable", duration_secs=duration_secs)

    # -- agent pool ----------------------------------------------------------

    @tool(
        "Start a background agent on a task; returns at once with its agent_id "
        "(status queued or running). It runs headless (e.g. claude -p) in working_directory "
        "(default: the current one). agent_type is a profile name: claude, aider, cursor, "
        "codex, gemini, demo, or one from the config file. max_iterations bounds its turns; "
        "timeout_secs stops it after that long. isolation='worktree' runs it in its own git "
        "worktree on a new branch aegis/<agent_id> (kept afterwards; the final status says "
        "where and what changed). sandbox: none (default), netns or container where this "
        "runner offers them. Follow up with agent_status or agent_await. A background agent "
        "may spawn agents of its own down to the pool's spawn depth limit (agent_pool_stats)."
    )
    async def agent_spawn(
        description: Annotated[str, Field(min_length=1, max_length=100_000)],
        agent_type: str = "claude",
        working_directory: str | None = None,
        max_iterations: Annotated[int | None, Field(ge=1, le=10_000)] = None,
        timeout_secs: Annotated[float | None, Field(ge=1, le=86_400)] = None,
        isolation: Literal["none", "worktree"] = "none",
        sandbox: SandboxKind = "none",
    ) -> dict[str, Any]:
        return await call(
            "agent_spawn",
            description=description,
            agent_type=agent_type,
            working_directory=working_directory,
            max_iterations=max_iterations,
            timeout_secs=timeout_secs,
            isolation=isolation,
            sandbox=sandbox,
        )

    @tool(
        "Change the pool's limits (only the ones given): max_agents running at once (1 "
        "to 1024; more start from the queue at once), max_spawn_depth, how many levels of "
        "background agents may spawn agents (1 to 16). Open to the primary agent (the user's "
        "session) and the user, not to background agents. Returns the pool statistics."
    )
    async def agent_pool_configure(
        max_agents: Annotated[int | None, Field(ge=1, le=1024)] = None,
        max_spawn_depth: Annotated[int | None, Field(ge=1, le=16)] = None,
    ) -> dict[str, Any]:
        return await call(
            "agent_pool_configure", max_agents=max_agents, max_spawn_depth=max_spawn_depth
        )

    @tool(
        "Details of one background agent: status, pid, times, exit code, last "
        "output lines, the result text when it finished, its full log file, a note on why "
        "it is orphaned or lost, and for worktree isolation the branch and its changes."
    )
    async def agent_status(
        agent_id: AgentId,
    ) -> dict[str, Any]:
        return await call("agent_status", agent_id=agent_id)

    @tool(
        "Wait up to timeout_secs (default 300, at most 3600) for a background "
        "agent to finish; returns its final status and result, or done=false if it is still "
        "running."
    )
    async def agent_await(
        agent_id: AgentId,
        timeout_secs: Annotated[float | None, Field(ge=0, le=3600)] = None,
    ) -> dict[str, Any]:
        return await call("agent_await", agent_id=agent_id, timeout_secs=timeout_secs)

    @tool(
        "Stop a background agent (SIGINT, then SIGTERM, then SIGKILL to its whole "
        "process tree) or drop it from the queue. Returns its final status. A background "
        "agent may stop only the agents it spawned."
    )
    async def agent_stop(
        agent_id: AgentId,
    ) -> dict[str, Any]:
        return await call("agent_stop", agent_id=agent_id)

    holder = os.environ.get("AEGIS_MCP_AGENT_ID", PRIMARY_AGENT_ID)

    @tool(
        "Lock a file (path inside the working tree) so that other agents leave it "
        "alone while you edit it. ttl_secs (default 300) bounds how long the lock lives; "
        "wait_secs (default 0) waits for another agent's lock to go. Locks of agents that "
        "exited are released. Release with file_lock_release when done."
    )
    async def file_lock_acquire(
        path: Annotated[str, Field(min_length=1, max_length=4096)],
        ttl_secs: Annotated[float, Field(gt=0, le=86_400)] = 300,
        wait_secs: Annotated[float, Field(ge=0, le=3600)] = 0,
    ) -> dict[str, Any]:
        return await call(
            "file_lock_acquire",
            path=path,
            ttl_secs=ttl_secs,
            wait_secs=wait_secs,
            holder=holder,
            holder_pid=os.getppid(),
        )

    @tool(
        "Release a file lock you hold (acquired with file_lock_acquire), so that "
        "other agents waiting for the file get it. Releasing another agent's lock is refused."
    )
    async def file_lock_release(
        path: Annotated[str, Field(min_length=1, max_length=4096)],
    ) -> dict[str, Any]:
        return await call("file_lock_release", path=path, holder=holder)

    # -- network monitoring --------------------------------------------------

    @tool(
        "The most recent network events (connect, close, send, recv, dns, "
        "blocked), newest last; count 1 to 1000, default 20."
    )
    async def netmon_log(count: Annotated[int, Field(ge=1, le=1000)] = 20) -> dict[str, Any]:
        return await call("netmon_log", count=count)

    for name, description in SIMPLE_TOOLS.items():
        tools.append(strict_tool(_forwarding(call, name), name, description))
    return StrictServer(
        tools,
        name="aegis-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )


def _forwarding(
    call: Callable[..., Awaitable[dict[str, Any]]], op: str
) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def tool() -> dict[str, Any]:
        return await call(op)

    return tool


async def run_on(server: MCPServer, stdin: Any, stdout: Any) -> None:
    """Serve ``server`` over the given line streams (:mod:`.wire`'s), as ``run_stdio_async``
    does over the process's own stdin and stdout."""
    from mcp.server.stdio import stdio_server

    # What MCPServer.run_stdio_async does, with streams it does not take.
    lowlevel = server._lowlevel_server
    async with stdio_server(stdin, stdout) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
