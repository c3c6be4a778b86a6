"""What the dashboard knows of the runner it follows: the state stream folded up.

The state itself is folded with :func:`aegis_mcp.control.snapshot.apply`, the
schema's own reader. Beside it the model keeps what the panels show beyond the
state's short rings: a longer event log and the recent netmon events, which
sections changed since the panels last looked (so that a flood of netmon
events redraws the network panel only), and the primary agent's health changes
that deserve an alert.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from ..control.snapshot import apply

LOG_LINES = 2000
NETMON_EVENTS = 200
ALERT_STATES = ("Idle", "Unresponsive")
"""Health states the user is told of: the agent waits for them, or is stuck."""


@dataclass(frozen=True)
class Alert:
    """The primary agent entered a state the user should hear of."""

    state: str
    reason: str


class DashboardModel:
    """The followed runner's state, and what changed since the panels last looked."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_LINES)
        self.netmon_events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=NETMON_EVENTS
        )
        self.log_total = 0
        """Events ever appended to ``log`` since the last reset (it keeps the last ones)."""
        self.log_generation = 0
        """Bumped when ``log`` starts again (a new state): what was drawn of it is void."""
        self.netmon_skipped = 0
        self.missed = 0
        """Messages lost between two seq numbers (should stay 0)."""
        self.dirty: set[str] = set()
        self._seq: int | None = None
        self._health: str | None = None

    @property
    def attached(self) -> bool:
        """Whether a state has been received."""
        return bool(self.state)

    def fold(self, message: dict[str, Any]) -> Alert | None:
        """Take one stream message in; returns an alert when the agent's health calls for one."""
        seq = message.get("seq")
        if isinstance(seq, int):
            if self._seq is not None and message.get("type") != "state" and seq > self._seq + 1:
                self.missed += seq - self._seq - 1
            self._seq = seq
        kind = message.get("type")
        apply(self.state, message)
        if kind == "state":
            self._start(message["state"])
            return None
        if kind == "change":
            section = message.get("section", "")
            self.dirty.add(section)
            if section == "watchdog":
                return self._health_changed(message.get("value") or {})
        elif kind == "event":
            self.add_log(message["event"])
        elif kind == "netmon" and "event" in message:
            self.netmon_events.append(message["event"])
            self.netmon_skipped += message.get("skipped", 0)
            self.dirty.add("netmon_events")
        return None

    def add_log(self, event: dict[str, Any]) -> None:
        """Append a line to the log (a runner event, or the dashboard's own word)."""
        self.log.append(event)
        self.log_total += 1
        self.dirty.add("events")

    def take_dirty(self) -> set[str]:
        """The sections changed since the last call (and forget them)."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def _start(self, state: dict[str, Any]) -> None:
        self.log.clear()
        self.log.extend(state.get("events", []))
        self.log_total = len(self.log)
        self.log_generation += 1
        self.netmon_events.clear()
        self.netmon_events.extend(state.get("netmon_events", []))
        self.netmon_skipped = 0
        self._health = (state.get("watchdog") or {}).get("state")
        self.dirty = {*state, "events", "netmon_events"}

    def _health_changed(self, watchdog: dict[str, Any]) -> Alert | None:
        state = watchdog.get("state")
        previous, self._health = self._health, state
        if state == previous or state not in ALERT_STATES:
            return None
        return Alert(state, str(watchdog.get("reason", "")))
