"""The messages the runner link sends the app: every way the followed runner can change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from .model import Alert


@dataclass
class RunnerSummary:
    """One live runner, as the picker lists it."""

    pid: int
    socket: str
    agent: str
    cwd: str
    uptime_secs: float | None
    sandbox: str


@dataclass
class NoRunner(Message):
    """No runner is up; ``history`` is the pool's record (``history_error`` if unreadable)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    history_error: str | None = None


@dataclass
class ChooseRunner(Message):
    """Several runners are up: the user picks one (the link waits for ``choose``)."""

    runners: list[RunnerSummary]


@dataclass
class Attached(Message):
    """Following runner ``pid``: its state arrived."""

    pid: int


@dataclass
class Refresh(Message):
    """The state changed: redraw what changed (sent at most every refresh interval)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Refresh)


@dataclass
class Disconnected(Message):
    """The followed runner went away (or dropped us); the link looks for one again."""

    pid: int
    reason: str


@dataclass
class HealthAlert(Message):
    """The primary agent became Idle or Unresponsive."""

    alert: Alert
