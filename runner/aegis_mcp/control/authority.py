"""Who may do what on the control socket: the callers, and one table of their authority.

A request comes from one of three kinds of caller, told apart by the runner
(``runner/identity.py``), never by what the request claims:

- the **user** (``aegis-mcp status``, the dashboard, a script): a peer of the
  socket's allowed uids that sends no agent token and is not a process of the
  run's agents (its uid comes from ``SO_PEERCRED``);
- the **primary** agent, the one the runner supervises in your terminal, and
- a **pool** agent (``agent_spawn``); each agent proves itself with the token
  the runner put in its environment (``AEGIS_MCP_AGENT_TOKEN``), which its MCP
  server sends with every request beside its id.

:data:`AUTHORITY` gives, per operation, what each kind may act on. ``no`` is
refused before the operation runs; the other grants are the scope the
operation applies (a pool agent's ``restart`` restarts *itself*). The README's
"Who may do what" is this table; a test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .protocol import FORBIDDEN, ControlError

USER = "user"
PRIMARY = "primary"
POOL = "pool"
KINDS = (USER, PRIMARY, POOL)

# Grants: what a caller's request may act on.
RUN = "the run"
"""Every agent of the run and everything the runner holds."""
THE_PRIMARY = "the primary agent"
ITSELF = "itself"
SPAWNED = "itself and the agents it spawned"
DEPTH = "yes, within the spawn depth limit"
YES = "yes"
ANY_HOLDER = "as any holder"
NO = "no"


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the runner established it."""

    kind: str
    """``user``, ``primary`` or ``pool``."""
    agent_id: str | None = None
    """``primary`` or the pool agent's id; None for the user."""
    uid: int | None = None
    pid: int | None = None
    """The peer process (``SO_PEERCRED``) when known."""

    @property
    def is_agent(self) -> bool:
        """Whether the caller is one of the run's agents (not the user)."""
        return self.kind != USER

    def label(self) -> str:
        """How events and refusals name the caller."""
        if self.kind == USER:
            return f"user (uid {self.uid})" if self.uid is not None else "user"
        if self.kind == PRIMARY:
            return "primary agent"
        return f"pool agent {self.agent_id}"

    def record(self) -> dict[str, Any]:
        """The caller as JSON (events, the state's recent refusals): no secret in it."""
        return {"kind": self.kind, "agent_id": self.agent_id, "uid": self.uid, "pid": self.pid}


LOCAL = Caller(USER)
"""The caller of a pool served in process (an MCP server started without a runner):
whoever started that server. There is no one to tell apart, so no boundary to hold."""


@dataclass(frozen=True)
class Rule:
    """One operation's row: the grant of each kind of caller, and what a refused
    pool agent may do instead."""

    user: str
    primary: str
    pool: str
    instead: str = ""

    def grant(self, kind: str) -> str:
        """The grant of callers of ``kind``."""
        return {USER: self.user, PRIMARY: self.primary, POOL: self.pool}[kind]


_OWN_STATE = "server_status shows your own state, agent_status the agents you spawned"
_WATCHDOG = (THE_PRIMARY, ITSELF, ITSELF)

AUTHORITY: dict[str, Rule] = {
    "hello": Rule(YES, YES, YES),
    "server_status": Rule(RUN, RUN, ITSELF),
    "restart": Rule(THE_PRIMARY, ITSELF, ITSELF),
    "events": Rule(RUN, RUN, NO, _OWN_STATE),
    "subscribe": Rule(RUN, RUN, NO, _OWN_STATE),
    "watchdog_status": Rule(*_WATCHDOG),
    "watchdog_configure": Rule(*_WATCHDOG),
    "watchdog_disable": Rule(*_WATCHDOG),
    "watchdog_ping": Rule(*_WATCHDOG),
    "agent_spawn": Rule(YES, YES, DEPTH),
    "agent_list": Rule(RUN, RUN, SPAWNED),
    "agent_status": Rule(RUN, RUN, SPAWNED),
    "agent_await": Rule(RUN, RUN, SPAWNED),
    "agent_stop": Rule(RUN, RUN, SPAWNED),
    "agent_pool_stats": Rule(YES, YES, YES),
    "agent_pool_configure": Rule(
        YES, YES, NO, "agent_pool_stats shows the limits; the user or the primary agent sets them"
    ),
    "agent_file_locks": Rule(YES, YES, YES),
    "file_lock_acquire": Rule(ANY_HOLDER, ITSELF, ITSELF),
    "file_lock_release": Rule(ANY_HOLDER, ITSELF, ITSELF),
    "netmon_status": Rule(RUN, RUN, ITSELF),
    "netmon_log": Rule(RUN, RUN, ITSELF),
    "netmon_namespace_list": Rule(YES, YES, YES),
    "netmon_namespace_cleanup": Rule(
        YES,
        YES,
        NO,
        "netmon_namespace_list shows them; the user or the primary agent removes them",
    ),
}
"""The authority of each kind of caller, by operation. An operation missing here is
refused to every agent (the table must name what agents may do)."""


def grant(op: str, caller: Caller) -> str:
    """What ``caller`` may act on with ``op`` (``no`` when refused)."""
    rule = AUTHORITY.get(op)
    if rule is None:
        return YES if caller.kind == USER else NO
    return rule.grant(caller.kind)


def refused(caller: Caller, what: str, instead: str) -> ControlError:
    """The FORBIDDEN error for ``caller`` doing ``what``, saying what it may do instead."""
    message = f"refused: {caller.label()} may not {what}"
    return ControlError(FORBIDDEN, f"{message}; {instead}" if instead else message)


def check(op: str, caller: Caller) -> str:
    """``caller``'s grant for ``op``; raises the refusal when it is ``no``."""
    given = grant(op, caller)
    if given == NO:
        rule = AUTHORITY.get(op)
        instead = rule.instead if rule is not None else "this operation is not open to agents"
        raise refused(caller, f"use {op}", instead)
    return given


def spawn_depth_refusal(caller: Caller, depth: int, limit: int) -> ControlError:
    """Why a pool agent at ``depth`` may not spawn (its agents would be at depth+1)."""
    return refused(
        caller,
        f"spawn agents beyond depth {limit}",
        f"it runs at depth {depth} and the pool's spawn depth limit is {limit}: do this "
        "task yourself, or report back to the agent that spawned you",
    )
