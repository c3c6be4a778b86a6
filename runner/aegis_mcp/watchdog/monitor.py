"""The watchdog: periodic health checks and the configured lockup action.

After ``unresponsive_checks`` consecutive Unresponsive checks (or one
HighResource check) the action runs once per episode:

- ``warn``: an event and a line on stderr;
- ``restart``: hot reload with the continue flag;
- ``restart_with_backoff``: the same after a delay that doubles with each
  restart (``backoff_initial_secs`` up to ``backoff_max_secs``), forgotten after
  ``backoff_reset_secs`` of health; after ``backoff_max_restarts`` restarts in a
  row the watchdog gives up with a clear event instead of looping;
- ``kill``: the agent's session is killed and the run ends;
- ``notify_and_wait``: an event, then nothing until ``watchdog_ping`` or
  ``watchdog_configure`` (or the agent showing life again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .config import WatchdogConfig
from .health import ACTIVE, HIGH_RESOURCE, IDLE, UNRESPONSIVE, TreeSample, TreeSampler, classify

ECHO_WINDOW_SECS = 0.3


class WatchdogTarget(Protocol):
    """What the watchdog needs from the runner."""

    def watchdog_sample_tree(self, sampler: TreeSampler) -> tuple[TreeSample, int] | None:
        """Sample the agent's tree, or None when no agent runs."""

    def watchdog_restart(self, reason: str) -> None:
        """Hot-reload the agent."""

    def watchdog_kill(self, reason: str) -> None:
        """Kill the agent and end the run."""

    def watchdog_event(self, kind: str, message: str, level: str) -> None:
        """Record (and show) a watchdog event."""


@dataclass
class _Episode:
    """What happened since the agent last looked healthy."""

    state: str = ACTIVE
    consecutive: int = 0
    acted: bool = False
    waiting: bool = False


class Watchdog:
    """Health tracking for the primary agent."""

    def __init__(
        self,
        config: WatchdogConfig,
        target: WatchdogTarget,
        interactive: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._target = target
        self._interactive = interactive
        self._clock = clock
        self._sampler = TreeSampler()
        now = clock()
        self.last_activity = now
        self.last_activity_kind = "start"
        self.last_answer = now
        self.last_submit = 0.0
        self.state = ACTIVE
        self.reason = "starting"
        self.sample: TreeSample | None = None
        self.disabled_until: float | None = None
        self.backoff_restarts = 0
        self.backoff_pending: asyncio.TimerHandle | None = None
        self.gave_up = False
        self.healthy_since = now
        self.actions_taken: list[dict[str, Any]] = []
        self.checks = 0
        self._episode = _Episode()
        self._wake = asyncio.Event()

    # -- signals -------------------------------------------------------------

    def activity(self, kind: str) -> None:
        """A sign of life (output, tool call, ping, I/O)."""
        now = self._clock()
        self.last_activity = now
        self.last_activity_kind = kind
        # Output right after the user submits a line is the terminal echoing
        # it or the agent redrawing its input box, not an answer.
        if kind == "output" and now - self.last_submit > ECHO_WINDOW_SECS:
            self.last_answer = now
        # Life ends an unresponsive episode, not a memory one: that needs the
        # memory to go down (or a ping / configure call).
        if self._episode.state == UNRESPONSIVE:
            self._episode = _Episode()

    def user_input(self, data: bytes) -> None:
        """The user typed into the agent's terminal; Enter submits a request."""
        if b"\r" in data or b"\n" in data:
            self.last_submit = self._clock()

    def ping(self) -> dict[str, Any]:
        """``watchdog_ping``: activity, and the end of a notify_and_wait pause."""
        self.activity("ping")
        self._episode = _Episode()
        return self.status()

    def agent_started(self) -> None:
        """A (new) agent process started: fresh baseline, nothing pending."""
        self._sampler.reset()
        self._episode = _Episode()
        self.activity("start")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``watchdog_configure``: apply validated changes; ends a notify_and_wait pause."""
        self.config = self.config.updated(**changes)
        if "enabled" in changes:
            self.disabled_until = None
        if changes.get("enabled") is True or "lockup_action" in changes:
            self.gave_up = False
            self.backoff_restarts = 0
        self._episode = _Episode()
        self._wake.set()
        return self.status()

    def disable(self, duration_secs: float) -> dict[str, Any]:
        """``watchdog_disable``: no checks for ``duration_secs``, then on again by itself."""
        self.disabled_until = self._clock() + duration_secs
        self._episode = _Episode()
        return self.status()

    @property
    def enabled(self) -> bool:
        """Whether checks run now."""
        if not self.config.enabled:
            return False
        if self.disabled_until is not None:
            if self._clock() < self.disabled_until:
                return False
            self.disabled_until = None
            self._target.watchdog_event("watchdog.enabled", "watchdog re-enabled", "info")
            self.activity("re-enabled")
        return True

    # -- checks --------------------------------------------------------------

    async def run(self) -> None:
        """Check forever at the configured interval."""
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.interval)
            self.check()

    def check(self) -> None:
        """One health check, and the action if one is due."""
        if not self.enabled:
            return
        looked = self._target.watchdog_sample_tree(self._sampler)
        if looked is None:
            return
        sample, io_delta = looked
        self.checks += 1
        self.sample = sample
        if io_delta > 0:
            self.activity("io")
        now = self._clock()
        state, reason = classify(
            self.config,
            sample,
            now - self.last_activity,
            self._interactive(),
            self.last_answer >= self.last_submit,
        )
        if state != self.state:
            level = "info" if state in (ACTIVE, IDLE) else "warning"
            self._target.watchdog_event("watchdog.state", f"{state}: {reason}", level)
        self.state, self.reason = state, reason
        if state in (ACTIVE, IDLE):
            self._healthy(now)
            return
        self.healthy_since = now
        if self._episode.state != state:
            self._episode = _Episode(state=state)
        if state == UNRESPONSIVE:
            self._episode.consecutive += 1
            if self._episode.consecutive < self.config.unresponsive_checks:
                return
        if not self._episode.acted and not self._episode.waiting:
            self._act(state, reason)

    def _healthy(self, now: float) -> None:
        if self.backoff_restarts and now - self.healthy_since >= self.config.backoff_reset_secs:
            self.backoff_restarts = 0
            self.gave_up = False
        self._episode = _Episode()

    def _act(self, state: str, reason: str) -> None:
        action = self.config.lockup_action
        self._episode.acted = True
        message = f"{state}: {reason}"
        self.actions_taken.append({"ts": self._clock(), "action": action, "reason": message})
        del self.actions_taken[:-50]
        if action == "warn":
            self._target.watchdog_event("watchdog.warn", message, "warning")
        elif action == "restart":
            self._target.watchdog_restart(f"watchdog: {message}")
        elif action == "kill":
            self._target.watchdog_kill(f"watchdog: {message}")
        elif action == "notify_and_wait":
            self._episode.waiting = True
            self._target.watchdog_event(
                "watchdog.waiting",
                f"{message}; waiting for watchdog_ping or watchdog_configure",
                "warning",
            )
        elif action == "restart_with_backoff":
            self._backoff(message)

    def _backoff(self, message: str) -> None:
        if self.gave_up or self.backoff_pending is not None:
            return
        if self.backoff_restarts >= self.config.backoff_max_restarts:
            self.gave_up = True
            self._target.watchdog_event(
                "watchdog.gave_up",
                f"{message}; gave up after {self.backoff_restarts} restarts in a row without a "
                f"healthy period of {self.config.backoff_reset_secs:.0f}s. The agent is left as "
                "it is; watchdog_configure or watchdog_ping re-arms the watchdog.",
                "error",
            )
            return
        delay = min(
            self.config.backoff_max_secs,
            self.config.backoff_initial_secs * 2**self.backoff_restarts,
        )
        self.backoff_restarts += 1
        self._target.watchdog_event(
            "watchdog.backoff",
            f"{message}; restart {self.backoff_restarts} of at most "
            f"{self.config.backoff_max_restarts} in {delay:g}s",
            "warning",
        )

        def fire() -> None:
            self.backoff_pending = None
            self._target.watchdog_restart(f"watchdog (backoff {self.backoff_restarts}): {message}")

        self.backoff_pending = asyncio.get_running_loop().call_later(delay, fire)

    def status(self) -> dict[str, Any]:
        """Everything ``watchdog_status`` reports."""
        now = self._clock()
        sample = self.sample
        return {
            "enabled": self.enabled,
            "configured_enabled": self.config.enabled,
            "disabled_for_secs": (
                round(self.disabled_until - now, 1) if self.disabled_until is not None else None
            ),
            "state": self.state,
            "reason": self.reason,
            "last_activity_secs_ago": round(now - self.last_activity, 2),
            "last_activity_kind": self.last_activity_kind,
            "consecutive_unresponsive_checks": self._episode.consecutive,
            "waiting_for_ping": self._episode.waiting,
            "pending_action": (
                "restart (backoff)"
                if self.backoff_pending is not None
                else "waiting for ping"
                if self._episode.waiting
                else None
            ),
            "backoff_restarts": self.backoff_restarts,
            "gave_up": self.gave_up,
            "checks": self.checks,
            "resources": None
            if sample is None
            else {
                "processes": sample.processes,
                "rss_mb": round(sample.rss_bytes / (1024 * 1024), 1),
                "cpu_percent": round(sample.cpu_percent, 1),
                "stopped_pids": sample.stopped,
            },
            "config": self.config.to_dict(),
            "recent_actions": self.actions_taken[-10:],
        }

    def cancel_pending(self) -> None:
        """Drop a scheduled backoff restart (the agent restarted or ended otherwise)."""
        if self.backoff_pending is not None:
            self.backoff_pending.cancel()
            self.backoff_pending = None


__all__ = ["ACTIVE", "HIGH_RESOURCE", "IDLE", "UNRESPONSIVE", "Watchdog", "WatchdogTarget"]
