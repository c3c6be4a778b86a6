"""The netmon control operations (``netmon_status``, ``netmon_log``) as an op table.

The runner serves the table over its control socket; the MCP server can serve
it in process too. Stats come from a callable so that the table works the
same whether netmon is on (a :class:`NetmonStats`), off (None), or was
switched on after the table was built. A caller whose grant is its own
traffic (a pool agent) sees only the events and totals of its processes,
which ``pids_of(caller)`` names (None: the whole run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..control import validate
from ..control.authority import LOCAL, Caller
from ..control.protocol import OpHandler
from .stats import NetmonStats

PidsOf = Callable[[Caller], "set[int] | None"]
"""The processes whose traffic a caller may see; None for all of them."""

DEFAULT_LOG_COUNT = 20
MAX_LOG_COUNT = 1000
OFF_HINT = (
    "network monitoring is off; start the agent with `aegis-mcp AGENT --netmon` to turn it on"
)


def log_count(args: dict[str, Any]) -> int:
    """The validated ``count`` of a netmon_log request (default 20, 1..1000)."""
    count = args.get("count")
    if count is None:
        return DEFAULT_LOG_COUNT
    return validate.integer("count", count, 1, MAX_LOG_COUNT)


def netmon_ops(
    stats_source: Callable[[], NetmonStats | None],
    mode: str,
    pids_of: PidsOf | None = None,
    context: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, OpHandler]:
    """Handlers for netmon_status and netmon_log.

    ``stats_source`` returns the live stats, or None when netmon is off;
    ``mode`` is the netmon mode the runner was asked for (``preload``, ...);
    ``pids_of`` limits what each caller sees (default: everything);
    ``context`` adds to the status what the sources are not seeing and why
    (``reason``, ``coverage``: control/snapshot.py's NetmonInfo).
    """

    def scope(caller: Caller) -> set[int] | None:
        return pids_of(caller) if pids_of is not None else None

    async def status(args: dict[str, Any], caller: Caller = LOCAL) -> dict[str, Any]:
        validate.reject_unknown("netmon_status", args, ())
        stats = stats_source()
        extra = context() if context is not None else {}
        if stats is None:
            # Off because a source could not start: that reason is the message.
            message = extra.get("reason") or OFF_HINT
            return {"enabled": False, "mode": mode, **extra, "message": message}
        pids = scope(caller)
        if pids is not None:
            own = {**stats.status_of(pids), "scope": "own processes", "pids": sorted(pids)}
            # The coverage check names the primary agent's processes: not this caller's.
            extra.pop("coverage", None)
            return {**own, "enabled": True, "mode": mode, **extra}
        return {**stats.status(), "enabled": True, "mode": mode, **extra}

    async def log(args: dict[str, Any], caller: Caller = LOCAL) -> dict[str, Any]:
        validate.reject_unknown("netmon_log", args, ("count",))
        count = log_count(args)
        stats = stats_source()
        if stats is None:
            return {"enabled": False, "mode": mode, "events": [], "message": OFF_HINT}
        pids = scope(caller)
        events = stats.recent(count, pids)
        reply = {
            "enabled": True,
            "mode": mode,
            "count": len(events),
            "total_events": stats.events,
            "events": events,
        }
        if pids is not None:
            reply.update(scope="own processes", total_events=None)
        return reply

    return {
        "netmon_status": status,
        "netmon_log": log,
    }
