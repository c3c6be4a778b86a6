"""Control operations for the watchdog (``watchdog_*`` MCP tools)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..control.protocol import INVALID_ARGUMENT, ControlError, Request
from ..watchdog.config import MAX_TIMEOUT_SECS, WatchdogConfigError

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
        duration = request.args.get("duration_secs", 300)
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise ControlError(
                INVALID_ARGUMENT, f"duration_secs must be a number, got {duration!r}"
            )
        if not 1 <= duration <= MAX_TIMEOUT_SECS:
            raise ControlError(
                INVALID_ARGUMENT,
                f"duration_secs must be between 1 and {MAX_TIMEOUT_SECS}, got {duration}",
            )
        sup.events.emit("watchdog.disabled", f"watchdog disabled for {duration:g}s")
        return sup.watchdog.disable(float(duration))

    async def ping(request: Request) -> dict[str, Any]:
        return sup.watchdog.ping()

    sup.server.register("watchdog_status", status)
    sup.server.register("watchdog_configure", configure)
    sup.server.register("watchdog_disable", disable)
    sup.server.register("watchdog_ping", ping)
