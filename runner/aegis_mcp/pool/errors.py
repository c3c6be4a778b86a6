"""Errors of the pool, each with a message a user (often a model) can act on.

The pool's operations (:mod:`.ops`) map them to protocol error codes; the
pool itself knows no protocol. Bad arguments are refused by the checks of
:mod:`aegis_mcp.control.validate`, which the operations' arguments go through.
"""

from __future__ import annotations


class PoolError(Exception):
    """The pool could not do what was asked."""


class PoolUnavailable(PoolError):
    """The pool cannot serve now: its database cannot be used, or it is shutting down."""


class AgentNotFound(PoolError):
    """No agent has that id (in this pool or on its database)."""


class AgentStuck(PoolUnavailable):
    """An agent survived SIGKILL (a process in uninterruptible sleep)."""


class RestartRefused(PoolError):
    """An agent cannot be restarted now (not running, stopping, already restarting)."""
