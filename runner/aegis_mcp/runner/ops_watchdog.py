"""Control operations for the watchdog (``watchdog_*`` MCP tools)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..control import validate
from ..control.protocol import INVALID_ARGUMENT, ControlError, Request
from ..watchdog.config import MAX_TIMEOUT_SECS, WatchdogConfigError, number_in_range

if TYPE_CHECKING:
    from .supervisor import Supervisor

CONFIGURABLE = (
    "enabled",
    "heartbeat_timeout_secs",
    "lockup_action",
    "max_memory_mb",
    "check_interval_secs",
)


def register(sup: Supervisor) -> None:
    """Serve the watchdog operations of ``sup``."""

    async def status(request: Request) -> dict[str, Any]:
        validate.reject_unknown("watchdog_status", request.args, ())
        return sup.watchdog.status()

    async def configure(request: Request) -> dict[str, Any]:
        changes = {k: v for k, v in request.args.items() if v is not None}
        unknown = set(changes) - set(CONFIGURABLE)
        if unknown:
            raise ControlError(
                INVALID_ARGUMENT, f"unknown setting(s): {', '.join(sorted(unknown))}"
            )
        try:
            result = sup.watchdog.configure(**changes)
        except WatchdogConfigError as exc:
            raise ControlError(INVALID_ARGUMENT, str(exc)) from None
        sup.events.emit("watchdog.configured", f"watchdog settings changed: {changes}")
        return result

    async def disable(request: Request) -> dict[str, Any]:
        validate.reject_unknown("watchdog_disable", request.args, ("duration_secs",))
        try:
            duration = number_in_range(
                "duration_secs", request.args.get("duration_secs", 300), 1, MAX_TIMEOUT_SECS
            )
        except WatchdogConfigError as exc:
            raise ControlError(INVALID_ARGUMENT, str(exc)) from None
        sup.events.emit("watchdog.disabled", f"watchdog disabled for {duration:g}s")
        return sup.watchdog.disable(duration)

    async def ping(request: Request) -> dict[str, Any]:
        validate.reject_unknown("watchdog_ping", request.args, ())
        return sup.watchdog.ping()

    sup.server.register("watchdog_status", status)
    sup.server.register("watchdog_configure", configure)
    sup.server.register("watchdog_disable", disable)
    sup.server.register("watchdog_ping", ping)
