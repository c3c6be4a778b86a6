"""The runner's own control operations: its remote surface, apart from its life cycle.

``hello``, ``server_status``, ``restart``, ``events`` and the ``subscribe``
stream (:mod:`.feed`), and the watchdog's
(``watchdog_status``, ``watchdog_configure``, ``watchdog_disable``,
``watchdog_ping``). Each checks its arguments (:mod:`aegis_mcp.control.validate`);
the errors of the run and the watchdog get their protocol codes here
(:data:`ERROR_CODES`). The run itself is reached
through :class:`OpsTarget`, so that this module needs no supervisor.
The pool, netmon and namespace operations are served from their packages'
tables (see :mod:`.supervisor`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import __version__
from ..agents.command import restart_args
from ..agents.syntax import PromptNotAccepted
from ..control import validate
from ..control.boundary import ErrorCodes, with_codes
from ..control.protocol import INVALID_ARGUMENT, UNAVAILABLE, Request
from ..watchdog.config import MAX_TIMEOUT_SECS, WatchdogConfigError, number_in_range
from .control_server import StreamOpener, StreamSink
from .errors import RestartRefused
from .feed import StateFeed
from .status import RunView, status_data

MAX_REASON = 2000
MAX_PROMPT = 100_000
MAX_BY = 100
CONFIGURABLE = (
    "enabled",
    "heartbeat_timeout_secs",
    "lockup_action",
    "max_memory_mb",
    "check_interval_secs",
)

Handler = Callable[[Request], Awaitable[Any]]
ERROR_CODES: ErrorCodes = {RestartRefused: UNAVAILABLE, WatchdogConfigError: INVALID_ARGUMENT}


class OpsTarget(RunView, Protocol):
    """The run as its operations see it."""

    def request_restart(
        self, reason: str, prompt: str | None, by: str, delay: float = 0.0
    ) -> dict[str, Any]:
        """Stop the agent (after ``delay``) and start it again with continue."""


def runner_ops(run: OpsTarget, served: Callable[[], list[str]]) -> dict[str, Handler]:
    """The handlers of the runner's own operations; ``served`` lists every op (for hello)."""

    async def hello(request: Request) -> dict[str, Any]:
        validate.reject_unknown("hello", request.args, ())
        return {"runner_pid": run.pid, "version": __version__, "ops": served()}

    async def server_status(request: Request) -> dict[str, Any]:
        validate.reject_unknown("server_status", request.args, ())
        return status_data(run)

    async def restart(request: Request) -> dict[str, Any]:
        args = request.args
        validate.reject_unknown("restart", args, ("reason", "prompt", "by"))
        reason = validate.optional_string("reason", args.get("reason"), max_len=MAX_REASON)
        prompt = validate.optional_string("prompt", args.get("prompt"), max_len=MAX_PROMPT)
        by = validate.string("by", args.get("by", "control socket"), max_len=MAX_BY)
        if prompt is not None and not run.plan.profile.takes_prompt:
            name = run.plan.profile.name
            raise validate.invalid(f"{name} is a plain command: it takes no prompt")
        try:
            restart_args(run.plan.profile, run.agent_args, prompt)
        except PromptNotAccepted as exc:
            raise validate.invalid(f"{run.plan.profile.name}: {exc}") from None
        # A restart asked for by the agent's own tool call waits a moment, so
        # that the tool's reply reaches the agent before it is stopped.
        delay = run.plan.config.runner.restart_delay_secs if request.activity else 0.0
        return run.request_restart(reason or "restart requested", prompt, by, delay)

    async def events(request: Request) -> dict[str, Any]:
        args = request.args
        validate.reject_unknown("events", args, ("since", "limit"))
        since = validate.integer("since", args.get("since", 0), 0, 2**63)
        limit = validate.integer("limit", args.get("limit", 100), 1, 500)
        return {"events": run.events.since(since, limit)}

    async def watchdog_status(request: Request) -> dict[str, Any]:
        validate.reject_unknown("watchdog_status", request.args, ())
        return run.watchdog.status()

    async def watchdog_configure(request: Request) -> dict[str, Any]:
        changes = {k: v for k, v in request.args.items() if v is not None}
        unknown = set(changes) - set(CONFIGURABLE)
        if unknown:
            raise validate.invalid(f"unknown setting(s): {', '.join(sorted(unknown))}")
        result = run.watchdog.configure(**changes)
        run.events.emit("watchdog.configured", f"watchdog settings changed: {changes}")
        return result

    async def watchdog_disable(request: Request) -> dict[str, Any]:
        args = request.args
        validate.reject_unknown("watchdog_disable", args, ("duration_secs",))
        duration = number_in_range(
            "duration_secs", args.get("duration_secs", 300), 1, MAX_TIMEOUT_SECS
        )
        run.events.emit("watchdog.disabled", f"watchdog disabled for {duration:g}s")
        return run.watchdog.disable(duration)

    async def watchdog_ping(request: Request) -> dict[str, Any]:
        validate.reject_unknown("watchdog_ping", request.args, ())
        return run.watchdog.ping()

    table = {
        "hello": hello,
        "server_status": server_status,
        "restart": restart,
        "events": events,
        "watchdog_status": watchdog_status,
        "watchdog_configure": watchdog_configure,
        "watchdog_disable": watchdog_disable,
        "watchdog_ping": watchdog_ping,
    }
    return with_codes(table, ERROR_CODES)


def stream_ops(feed: StateFeed) -> dict[str, StreamOpener]:
    """The runner's stream operations: ``subscribe`` (no arguments)."""

    async def subscribe(request: Request, sink: StreamSink) -> dict[str, Any]:
        validate.reject_unknown("subscribe", request.args, ())
        return dict(feed.open(sink))

    return {"subscribe": subscribe}
