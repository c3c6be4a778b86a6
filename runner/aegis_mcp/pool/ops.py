"""Control operations of the pool and the file locks (the ``agent_*`` and ``file_lock_*`` tools).

The same table is served by the runner over its control socket and in
process by the MCP server when no runner is there. Arguments arrive as
decoded JSON: ``null`` counts as absent, and anything unknown or of the wrong
type is refused with a message that names the argument. The pool's own
errors get their protocol codes here (:data:`ERROR_CODES`).
"""

from __future__ import annotations

from typing import Any

from ..control import validate
from ..control.boundary import ErrorCodes, with_codes
from ..control.protocol import NOT_FOUND, PRIMARY_AGENT_ID, UNAVAILABLE, OpHandler
from .errors import AgentNotFound, PoolUnavailable
from .locks import DEFAULT_TTL_SECS, FileLocks
from .manager import AgentPool

DEFAULT_AWAIT_SECS = 300.0
MAX_AWAIT_SECS = 3_600
DEFAULT_HOLDER = PRIMARY_AGENT_ID
"""The holder name of the interactive agent (pool agents use their agent id)."""
ERROR_CODES: ErrorCodes = {AgentNotFound: NOT_FOUND, PoolUnavailable: UNAVAILABLE}


def _args(op: str, args: dict[str, Any], accepted: tuple[str, ...]) -> dict[str, Any]:
    """``args`` without nulls, after refusing unknown names."""
    if not isinstance(args, dict):
        raise validate.invalid(f"{op}: arguments must be a JSON object")
    validate.reject_unknown(op, args, accepted)
    return {k: v for k, v in args.items() if v is not None}


def _required(op: str, args: dict[str, Any], name: str) -> Any:
    if name not in args:
        raise validate.invalid(f"{op}: argument {name} is required")
    return args[name]


def pool_ops(pool: AgentPool, locks: FileLocks) -> dict[str, OpHandler]:
    """The operation table for ``pool`` and ``locks``.

    Locks held by a pool agent (its agent id as holder) are released when it ends.
    """
    pool.add_listener(lambda record: locks.release_holder(record.agent_id))

    async def agent_spawn(args: dict[str, Any]) -> Any:
        a = _args(
            "agent_spawn",
            args,
            (
                "description",
                "agent_type",
                "working_directory",
                "max_iterations",
                "timeout_secs",
                "sandbox",
                "isolation",
            ),
        )
        # The values are checked by the pool (``requests.check_spawn``); agent_type here
        # too, to say "must be a string" rather than list the profiles.
        return await pool.spawn(
            _required("agent_spawn", a, "description"),
            agent_type=validate.string("agent_type", a.get("agent_type", "claude")),
            working_directory=a.get("working_directory"),
            max_iterations=a.get("max_iterations"),
            timeout_secs=a.get("timeout_secs"),
            sandbox=a.get("sandbox", "none"),
            isolation=a.get("isolation", "none"),
        )

    async def agent_list(args: dict[str, Any]) -> Any:
        _args("agent_list", args, ())
        return {"agents": pool.list()}

    async def agent_status(args: dict[str, Any]) -> Any:
        a = _args("agent_status", args, ("agent_id",))
        return pool.status(validate.string("agent_id", _required("agent_status", a, "agent_id")))

    async def agent_await(args: dict[str, Any]) -> Any:
        a = _args("agent_await", args, ("agent_id", "timeout_secs"))
        agent_id = validate.string("agent_id", _required("agent_await", a, "agent_id"))
        timeout = validate.number(
            "timeout_secs", a.get("timeout_secs", DEFAULT_AWAIT_SECS), 0, MAX_AWAIT_SECS
        )
        return await pool.await_agent(agent_id, timeout)

    async def agent_stop(args: dict[str, Any]) -> Any:
        a = _args("agent_stop", args, ("agent_id",))
        return await pool.stop(validate.string("agent_id", _required("agent_stop", a, "agent_id")))

    async def agent_pool_stats(args: dict[str, Any]) -> Any:
        _args("agent_pool_stats", args, ())
        return pool.stats()

    async def agent_file_locks(args: dict[str, Any]) -> Any:
        _args("agent_file_locks", args, ())
        return {"root": locks.root, "locks": locks.list()}

    async def file_lock_acquire(args: dict[str, Any]) -> Any:
        a = _args(
            "file_lock_acquire", args, ("path", "ttl_secs", "wait_secs", "holder", "holder_pid")
        )
        # The values are checked by the locks.
        return await locks.acquire(
            _required("file_lock_acquire", a, "path"),
            a.get("holder", DEFAULT_HOLDER),
            a.get("holder_pid"),
            ttl_secs=a.get("ttl_secs", DEFAULT_TTL_SECS),
            wait_secs=a.get("wait_secs", 0),
        )

    async def file_lock_release(args: dict[str, Any]) -> Any:
        a = _args("file_lock_release", args, ("path", "holder"))
        return locks.release(
            _required("file_lock_release", a, "path"), a.get("holder", DEFAULT_HOLDER)
        )

    table = {
        "agent_spawn": agent_spawn,
        "agent_list": agent_list,
        "agent_status": agent_status,
        "agent_await": agent_await,
        "agent_stop": agent_stop,
        "agent_pool_stats": agent_pool_stats,
        "agent_file_locks": agent_file_locks,
        "file_lock_acquire": file_lock_acquire,
        "file_lock_release": file_lock_release,
    }
    return with_codes(table, ERROR_CODES)
