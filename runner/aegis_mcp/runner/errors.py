"""Errors of the run itself; its operations (:mod:`.ops`) give them protocol codes."""

from __future__ import annotations


class ConfinementError(RuntimeError):
    """The primary agent cannot run as asked (its sandbox, or a policy nothing can
    enforce); the message says why."""


class RestartRefused(RuntimeError):
    """A restart cannot be made now (no agent runs, one is under way, the run is ending)."""
