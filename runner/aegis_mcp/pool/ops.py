"""Control operations of the pool and the file locks (the ``agent_*`` and ``file_lock_*`` tools).

The same table is served by the runner over its control socket and in
process by the MCP server when no runner is there. Arguments arrive as
decoded JSON: ``null`` counts as absent, and anything unknown or of the wrong
type is refused with a message that names the argument. The pool's own
errors get their protocol codes here (:data:`ERROR_CODES`).

Each handler also gets the caller (:class:`~aegis_mcp.control.authority.Caller`)
and acts within its grant (:data:`~aegis_mcp.control.authority.AUTHORITY`): a
pool agent spawns within the depth limit, sees and acts on only itself and
the agents it spawned, and holds locks as itself.
"""

from __future__ import annotations

from typing import Any

from ..control import authority, validate
from ..control.authority import LOCAL, POOL, USER, Caller
from ..control.boundary import ErrorCodes, with_codes
from ..control.protocol import NOT_FOUND, PRIMARY_AGENT_ID, UNAVAILABLE, OpHandler
from .errors import AgentNotFound, PoolUnavailable
from .locks import DEFAULT_TTL_SECS, FileLocks
from .manager import AgentPool
from .records import AgentRecord

DEFAULT_AWAIT_SECS = 300.0
MAX_AWAIT_SECS = 3_600
DEFAULT_HOLDER = PRIMARY_AGENT_ID
"""The holder name of the interactive agent (pool agents use their agent id)."""
MAX_AGENTS_LIMIT = 1024
MAX_DEPTH_LIMIT = 16
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


def _spawner(caller: Caller) -> str:
    """How ``caller`` is recorded as an agent's ``spawned_by``."""
    return caller.agent_id if caller.agent_id is not None else USER


def _in_scope(caller: Caller, record: AgentRecord) -> bool:
    """Whether a pool agent ``caller`` may act on ``record``: itself, or one it spawned."""
    return caller.kind != POOL or caller.agent_id in (record.agent_id, record.spawned_by)


def _holder(caller: Caller, given: Any) -> Any:
    """The lock holder a request acts as: an agent is always itself."""
    if not caller.is_agent:
        return given if given is not None else DEFAULT_HOLDER
    if given is not None and given != caller.agent_id:
        raise authority.refused(
            caller,
            f"hold or release locks as {given!r}",
            f"it holds locks as itself ({caller.agent_id!r})",
        )
    return caller.agent_id


def pool_ops(pool: AgentPool, locks: FileLocks) -> dict[str, OpHandler]:
    """The operation table for ``pool`` and ``locks``.

    Locks held by a pool agent (its agent id as holder) are released when it ends.
    Handlers take the request's arguments and its caller (default: the agent of an
    in-process pool, see :data:`~aegis_mcp.control.authority.LOCAL`).
    """
    pool.add_listener(lambda record: locks.release_holder(record.agent_id))

    def scoped(op: str, caller: Caller, agent_id: str) -> AgentRecord:
        """The agent ``caller`` names, refused when it lies outside its grant."""
        record = pool.record(agent_id)
        if not _in_scope(caller, record):
            mine = [a["agent_id"] for a in pool.list() if a.get("spawned_by") == caller.agent_id]
            raise authority.refused(
                caller,
                f"{op.removeprefix('agent_')} agent {agent_id}, which it did not spawn",
                "a background agent acts only on itself and the agents it spawned"
                + (f" ({', '.join(mine)})" if mine else " (none yet)"),
            )
        return record

    async def agent_spawn(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
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
        depth = 1
        if caller.kind == POOL:
            parent = pool.record(caller.agent_id or "").depth
            if parent >= pool.max_depth:
                raise authority.spawn_depth_refusal(caller, parent, pool.max_depth)
            depth = parent + 1
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
            spawned_by=_spawner(caller),
            depth=depth,
        )

    async def agent_list(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        _args("agent_list", args, ())
        agents = pool.list()
        if caller.kind == POOL:
            agents = [a for a in agents if caller.agent_id in (a["agent_id"], a.get("spawned_by"))]
        return {"agents": agents}

    def agent_id_of(op: str, a: dict[str, Any], caller: Caller) -> str:
        agent_id = validate.string("agent_id", _required(op, a, "agent_id"))
        scoped(op, caller, agent_id)
        return agent_id

    async def agent_status(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        a = _args("agent_status", args, ("agent_id",))
        return pool.status(agent_id_of("agent_status", a, caller))

    async def agent_await(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        a = _args("agent_await", args, ("agent_id", "timeout_secs"))
        timeout = validate.number(
            "timeout_secs", a.get("timeout_secs", DEFAULT_AWAIT_SECS), 0, MAX_AWAIT_SECS
        )
        return await pool.await_agent(agent_id_of("agent_await", a, caller), timeout)

    async def agent_stop(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        a = _args("agent_stop", args, ("agent_id",))
        return await pool.stop(agent_id_of("agent_stop", a, caller))

    async def agent_pool_stats(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        _args("agent_pool_stats", args, ())
        return pool.stats()

    async def agent_pool_configure(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        a = _args("agent_pool_configure", args, ("max_agents", "max_spawn_depth"))
        if not a:
            raise validate.invalid(
                "agent_pool_configure: give max_agents and/or max_spawn_depth to change"
            )
        max_agents = a.get("max_agents")
        depth = a.get("max_spawn_depth")
        pool.configure(
            max_agents=None
            if max_agents is None
            else validate.integer("max_agents", max_agents, 1, MAX_AGENTS_LIMIT),
            max_depth=None
            if depth is None
            else validate.integer("max_spawn_depth", depth, 1, MAX_DEPTH_LIMIT),
        )
        return pool.stats()

    async def agent_file_locks(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        _args("agent_file_locks", args, ())
        return {"root": locks.root, "locks": locks.list()}

    async def file_lock_acquire(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        a = _args(
            "file_lock_acquire", args, ("path", "ttl_secs", "wait_secs", "holder", "holder_pid")
        )
        # The values are checked by the locks.
        return await locks.acquire(
            _required("file_lock_acquire", a, "path"),
            _holder(caller, a.get("holder")),
            a.get("holder_pid"),
            ttl_secs=a.get("ttl_secs", DEFAULT_TTL_SECS),
            wait_secs=a.get("wait_secs", 0),
        )

    async def file_lock_release(args: dict[str, Any], caller: Caller = LOCAL) -> Any:
        a = _args("file_lock_release", args, ("path", "holder"))
        return locks.release(
            _required("file_lock_release", a, "path"), _holder(caller, a.get("holder"))
        )

    table = {
        "agent_spawn": agent_spawn,
        "agent_list": agent_list,
        "agent_status": agent_status,
        "agent_await": agent_await,
        "agent_stop": agent_stop,
        "agent_pool_stats": agent_pool_stats,
        "agent_pool_configure": agent_pool_configure,
        "agent_file_locks": agent_file_locks,
        "file_lock_acquire": file_lock_acquire,
        "file_lock_release": file_lock_release,
    }
    return with_codes(table, ERROR_CODES)
