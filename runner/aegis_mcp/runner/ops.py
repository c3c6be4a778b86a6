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

Each handler gets the request's caller and acts on what the authority table
grants it (:mod:`aegis_mcp.control.authority`): ``restart``, ``watchdog_*`` and
``server_status`` of a pool agent act on that agent (:mod:`.pool_agents`),
those of the primary agent and of the user on the primary agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import __version__
from ..agents.command import restart_args
from ..agents.syntax import PromptNotAccepted
from ..control import validate
from ..control.authority import POOL, Caller
from ..control.boundary import ErrorCodes, with_codes
from ..control.protocol import INVALID_ARGUMENT, UNAVAILABLE, Request
from ..watchdog.config import MAX_TIMEOUT_SECS, WatchdogConfigError, number_in_range
from ..watchdog.monitor import Watchdog
from .control_server import StreamOpener, StreamSink
from .errors import RestartRefused
from .feed import StateFeed
from .pool_agents import PoolAgent
from .status import RunView, caller_view, pool_agent_status, status_data

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

Handler = Callable[[Request, Caller], Awaitable[Any]]
ERROR_CODES: ErrorCodes = {RestartRefused: UNAVAILABLE, WatchdogConfigError: INVALID_ARGUMENT}


class OpsTarget(RunView, Protocol):
    """The run as its operations see it."""

    def request_restart(
        self,
        reason: str,
        prompt: str | None,
        by: str,
        delay: float = 0.0,
        caller: str | None = None,
    ) -> dict[str, Any]:
        """Stop the agent (after ``delay``) and start it again with continue; ``caller``
        names who asked, for the record."""

    def pool_agent(self, agent_id: str) -> PoolAgent:
        """A running pool agent of this runner, as it acts on itself."""


def runner_ops(run: OpsTarget, served: Callable[[], list[str]]) -> dict[str, Handler]:
    """The handlers of the runner's own operations; ``served`` lists every op (for hello)."""

    def own(caller: Caller) -> PoolAgent | None:
        """The pool agent a caller's self-directed op acts on (None: the primary agent)."""
        return run.pool_agent(caller.agent_id or "") if caller.kind == POOL else None

    def watchdog_of(caller: Caller) -> Watchdog:
        agent = own(caller)
        return agent.watchdog if agent is not None else run.watchdog

    async def hello(request: Request, caller: Caller) -> dict[str, Any]:
        validate.reject_unknown("hello", request.args, ())
        return {
            "runner_pid": run.pid,
            "version": __version__,
            "ops": served(),
            "caller": caller.record(),
        }

    async def server_status(request: Request, caller: Caller) -> dict[str, Any]:
        validate.reject_unknown("server_status", request.args, ())
        agent = own(caller)
        status = status_data(run) if agent is None else pool_agent_status(run, agent)
        return {**status, "caller": caller_view(caller)}

    async def restart(request: Request, caller: Caller) -> dict[str, Any]:
        args = request.args
        validate.reject_unknown("restart", args, ("reason", "prompt", "by"))
        reason = validate.optional_string("reason", args.get("reason"), max_len=MAX_REASON)
        prompt = validate.optional_string("prompt", args.get("prompt"), max_len=MAX_PROMPT)
        by = validate.string("by", args.get("by", "control socket"), max_len=MAX_BY)
        # A restart asked for by the agent's own tool call waits a moment, so
        # that the tool's reply reaches the agent before it is stopped.
        delay = run.plan.config.runner.restart_delay_secs if request.activity else 0.0
        agent = own(caller)
        if agent is not None:
            return agent.restart(reason or "restart requested", prompt, by, delay)
        if prompt is not None and not run.plan.profile.takes_prompt:
            name = run.plan.profile.name
            raise validate.invalid(f"{name} is a plain command: it takes no prompt")
        try:
            restart_args(run.plan.profile, run.agent_args, prompt)
        except PromptNotAccepted as exc:
            raise validate.invalid(f"{run.plan.profile.name}: {exc}") from None
        return run.request_restart(
            reason or "restart requested", prompt, by, delay, caller=caller.label()
        )

    async def events(request: Request, caller: Caller) -> dict[str, Any]:
        args = request.args
        validate.reject_unknown("events", args, ("since", "limit"))
        since = validate.integer("since", args.get("since", 0), 0, 2**63)
        limit = validate.integer("limit", args.get("limit", 100), 1, 500)
        return {"events": run.events.since(since, limit)}

    def whose(caller: Caller) -> str:
        agent = own(caller)
        return "the" if agent is None else f"pool agent {agent.agent_id}'s"

    async def watchdog_status(request: Request, caller: Caller) -> dict[str, Any]:
        validate.reject_unknown("watchdog_status", request.args, ())
        return watchdog_of(caller).status()

    async def watchdog_configure(request: Request, caller: Caller) -> dict[str, Any]:
        changes = {k: v for k, v in request.args.items() if v is not None}
        unknown = set(changes) - set(CONFIGURABLE)
        if unknown:
            raise validate.invalid(f"unknown setting(s): {', '.join(sorted(unknown))}")
        result = watchdog_of(caller).configure(**changes)
        message = f"{whose(caller)} watchdog settings changed by {caller.label()}: {changes}"
        run.events.emit("watchdog.configured", message)
        return result

    async def watchdog_disable(request: Request, caller: Caller) -> dict[str, Any]:
        args = request.args
        validate.reject_unknown("watchdog_disable", args, ("duration_secs",))
        duration = number_in_range(
            "duration_secs", args.get("duration_secs", 300), 1, MAX_TIMEOUT_SECS
        )
        dog = watchdog_of(caller)
        message = f"{whose(caller)} watchdog disabled for {duration:g}s by {caller.label()}"
        run.events.emit("watchdog.disabled", message)
        return dog.disable(duration)

    async def watchdog_ping(request: Request, caller: Caller) -> dict[str, Any]:
        validate.reject_unknown("watchdog_ping", request.args, ())
        return watchdog_of(caller).ping()

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
