"""A start-rate limit for agent restarts, after systemd's StartLimitBurst/StartLimitIntervalSec.

At most ``burst`` restarts may happen within any ``interval_secs``; asking for one
more is refused (with the time until the oldest one leaves the window) so that an
agent that hangs again right after every restart is not restarted in a loop. An
interval of 0 turns the limit off.

The limiter knows nothing of who restarts or why: its owner asks :meth:`RestartLimit.acquire`
before each restart it is about to make and reports the answer. The watchdog owns one
today; any other kind of restart can go through the same instance.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple


class Refusal(NamedTuple):
    """Why a restart was refused."""

    burst: int
    interval_secs: float
    retry_in_secs: float
    """When the oldest restart of the window leaves it."""

    def __str__(self) -> str:
        return (
            f"restart limit reached: {self.burst} restarts within {self.interval_secs:g}s "
            f"(the next one is allowed in {self.retry_in_secs:.0f}s)"
        )


class RestartLimit:
    """Counts restarts in a sliding window and refuses the one too many."""

    def __init__(
        self, burst: int, interval_secs: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._times: deque[float] = deque()
        self.burst = burst
        self.interval_secs = interval_secs
        self.refused = 0
        self.last_refusal: Refusal | None = None

    def configure(self, burst: int, interval_secs: float) -> None:
        """New limits; restarts already counted stay counted."""
        self.burst, self.interval_secs = burst, interval_secs

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.interval_secs:
            self._times.popleft()

    def acquire(self) -> Refusal | None:
        """Count a restart about to happen, or refuse it (None: go ahead)."""
        now = self._clock()
        if self.interval_secs <= 0:
            return None
        self._prune(now)
        if len(self._times) >= self.burst:
            retry = self._times[-self.burst] + self.interval_secs - now
            self.refused += 1
            self.last_refusal = Refusal(self.burst, self.interval_secs, max(retry, 0.0))
            return self.last_refusal
        self._times.append(now)
        # Only the newest ``burst`` matter for the next decision.
        while len(self._times) > self.burst:
            self._times.popleft()
        return None

    def status(self) -> dict[str, Any]:
        """Limits, restarts in the current window, refusals so far."""
        now = self._clock()
        if self.interval_secs > 0:
            self._prune(now)
        return {
            "burst": self.burst,
            "interval_secs": self.interval_secs,
            "enabled": self.interval_secs > 0,
            "restarts_in_window": len(self._times),
            "refused": self.refused,
            "last_refusal": str(self.last_refusal) if self.last_refusal else None,
        }
