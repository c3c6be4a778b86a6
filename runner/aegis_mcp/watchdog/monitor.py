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

Every restart the watchdog makes goes through one :class:`RestartLimit`
(``restart_limit_burst`` in ``restart_limit_interval_secs``): a restart past it is
refused, and the watchdog stands down with a clear event until it is re-armed, so an
agent that hangs again after each restart (a model that keeps stalling) is not
restarted in a loop.

What counts as progress, and how each signal is read: ``health.py`` (the rule),
``screen.py`` (the terminal), ``sockets.py`` (TCP connections); ``status()``
shows what each signal reads now and which one counted last.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .config import WatchdogConfig
from .health import (
    ACTIVE,
    HIGH_RESOURCE,
    IDLE,
    UNRESPONSIVE,
    Situation,
    TreeSample,
    TreeSampler,
    classify,
)
from .restart_limit import RestartLimit

if TYPE_CHECKING:
    import psutil

    from ..agents.profiles import WatchRules
    from .screen import ScreenWatcher
    from .sockets import NetSample, SocketWatcher

ECHO_WINDOW_SECS = 0.3
NET_WINDOW_SECS = 5.0
"""Bytes received are averaged over this long (or the check interval, if longer): a
keep-alive every second or two stays below the floor at any timeout (a 2 s timeout
checks every 0.5 s, and one 40-byte SSE ping in half a second was 80 B/s)."""
SIGNALS = ("screen", "output", "network", "io", "tool_call", "ping")


class WatchdogTarget(Protocol):
    """What the watchdog needs from the runner."""

    def watchdog_tree(self) -> list[psutil.Process] | None:
        """The agent's process tree (its root first), or None when no agent runs."""

    def watchdog_net_received(self, pids: set[int]) -> int | None:
        """Bytes netmon saw ``pids`` receive so far, or None when no netmon mode is on."""

    def watchdog_restart(self, reason: str) -> bool:
        """Hot-reload the agent; False if a restart could not be started."""

    def watchdog_kill(self, reason: str) -> None:
        """Kill the agent and end the run."""

    def watchdog_event(self, kind: str, message: str, level: str) -> None:
        """Record (and show) a watchdog event."""


class _Reading(NamedTuple):
    """The numbers one check read (zeros before the first)."""

    io_delta: int = 0
    output: int = 0
    io_rate: float = 0.0
    net: NetSample | None = None
    netmon: int | None = None
    net_rate: float = 0.0


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
        rules: WatchRules | None = None,
        terminal_size: tuple[int, int] | None = None,
    ) -> None:
        self.config = config
        self._target = target
        self._interactive = interactive
        self._clock = clock
        self._sampler = TreeSampler()
        # Made at the first check (its module stays off the start path).
        self._sockets: SocketWatcher | None = None
        self.restart_limit = RestartLimit(
            config.restart_limit_burst, config.restart_limit_interval_secs
        )
        # The terminal emulator, made on the first output of a PTY session (pyte's
        # import stays off the start path); None for pipes.
        self._rules = rules
        self._terminal_size = terminal_size
        self._screen: ScreenWatcher | None = None
        now = clock()
        self.last_activity = now
        self.last_activity_kind = "start"
        self.counted_at: dict[str, float] = {}
        """When each signal last counted as progress."""
        self.reading = _Reading()
        """What the signals read at the last check."""
        self._output_bytes = 0
        self._received: deque[tuple[float, int]] = deque()
        """(check time, bytes received since the check before) over NET_WINDOW_SECS."""
        self._netmon_total: int | None = None
        self._last_check_at: float | None = None
        self._generation = 0
        self._last_failure = ""
        self.limited = False
        """A restart was refused by the restart limit; the watchdog stands down."""
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

    def activity(self, kind: str, at: float | None = None) -> None:
        """Progress (one of SIGNALS, or start / re-enabled) at ``at`` (default now)."""
        now = self._clock() if at is None else at
        if now >= self.last_activity:
            self.last_activity, self.last_activity_kind = now, kind
        self.counted_at[kind] = now
        # Output right after the user submits a line is the terminal echoing
        # it or the agent redrawing its input box, not an answer.
        if kind in ("output", "screen") and now - self.last_submit > ECHO_WINDOW_SECS:
            self.last_answer = now
        # Life ends an unresponsive episode, not a memory one: that needs the
        # memory to go down (or a ping / configure call).
        if self._episode.state == UNRESPONSIVE:
            self._episode = _Episode()

    def output(self, data: bytes) -> None:
        """The agent wrote ``data`` to its terminal or pipes."""
        self._output_bytes += len(data)
        if self._rules is None:
            self.activity("output")
            return
        if not self.config.enabled:
            return
        if self._screen is None:
            from .screen import ScreenWatcher

            self._screen = ScreenWatcher(self._rules, self._terminal_size, self._clock)
        self._screen.feed(data)
        self._take_screen_change(self._screen)

    def _take_screen_change(self, screen: ScreenWatcher) -> None:
        # Whoever compared the screen last (a feed, a check, a watchdog_status call),
        # a change counts once, at the time its output came.
        changed_at = screen.take_change()
        if changed_at is not None:
            self.activity("screen", changed_at)

    @property
    def screen(self) -> ScreenWatcher | None:
        """The emulator of the agent's terminal while it is fed (a PTY session with the
        watchdog on, once the agent wrote something)."""
        return self._screen if self.config.enabled else None

    def resize(self, rows: int, cols: int) -> None:
        """The agent's terminal has a new size."""
        self._terminal_size = (rows, cols)
        if self._screen is not None:
            self._screen.resize(rows, cols)

    def user_input(self, data: bytes) -> None:
        """The user typed into the agent's terminal; Enter submits a request."""
        if b"\r" in data or b"\n" in data:
            self.last_submit = self._clock()

    def ping(self) -> dict[str, Any]:
        """``watchdog_ping``: activity, and the end of a notify_and_wait pause."""
        self.activity("ping")
        self._episode = _Episode()
        self.limited = False
        return self.status()

    def agent_started(self) -> None:
        """A (new) agent process started: fresh baseline, nothing pending."""
        self._generation += 1
        self._sampler.reset()
        if self._sockets is not None:
            self._sockets.reset()
        if self._screen is not None:
            self._screen.forget_cycles()
        self._netmon_total = None
        self._last_check_at = None
        self._received.clear()
        self._episode = _Episode()
        self.activity("start")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``watchdog_configure``: apply validated changes; ends a notify_and_wait pause."""
        self.config = self.config.updated(**changes)
        if "enabled" in changes:
            self.disabled_until = None
        if changes.get("enabled") is True or "lockup_action" in changes:
            self.gave_up = False
            self.limited = False
            self.backoff_restarts = 0
        self.restart_limit.configure(
            self.config.restart_limit_burst, self.config.restart_limit_interval_secs
        )
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
            try:
                await self.check()
            except Exception as exc:
                # A look that failed (a process gone mid-read, a kernel refusing) must
                # not end the watchdog: say so once per kind of failure, check again.
                if repr(exc) != self._last_failure:
                    self._last_failure = repr(exc)
                    self._target.watchdog_event(
                        "watchdog.check_failed", f"watchdog check failed: {exc!r}", "warning"
                    )

    async def check(self) -> None:
        """One health check, and the action if one is due."""
        if not self.enabled:
            return
        procs = self._target.watchdog_tree()
        if procs is None:
            return
        generation = self._generation
        sample, io_delta = self._sampler.sample(procs)
        # Taken with the I/O counters: output read while the sockets are looked at
        # was written after them (Gemini's 20 KB/s of redraws looked like file I/O).
        output, self._output_bytes = self._output_bytes, 0
        if self._sockets is None:
            from .sockets import SocketWatcher

            self._sockets = SocketWatcher()
        net = await self._sockets.sample(sample.pids)
        if generation != self._generation or not self.enabled:
            return  # the agent restarted (or we were paused) while we looked
        self.checks += 1
        self.sample = sample
        self._count_progress(sample, io_delta, output, net)
        view = self._screen.view() if self._screen is not None else None
        now = self._clock()
        state, reason = classify(
            self.config,
            Situation(
                sample=sample,
                quiet_secs=now - self.last_activity,
                last_kind=self.last_activity_kind,
                last_progress_at=self.last_activity,
                interactive=self._interactive(),
                answered=self.last_answer >= self.last_submit,
                screen=view,
                net=net,
            ),
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

    def _count_progress(
        self, sample: TreeSample, io_delta: int, output: int, net: NetSample
    ) -> None:
        """Count the signals read at this check that are progress, above their floors."""
        now = self._clock()
        elapsed = now - self._last_check_at if self._last_check_at is not None else None
        self._last_check_at = now
        if self._screen is not None:
            self._screen.flush()
            self._take_screen_change(self._screen)
        netmon = self._netmon_delta(sample.pids)
        received = max(net.received, netmon or 0)
        # /proc/PID/io counts the terminal output and the socket traffic too, the
        # tree's connections to itself included.
        background = max(io_delta - output - net.received - net.sent - net.internal, 0)
        self._received.append((now, received))
        while self._received[0][0] <= now - NET_WINDOW_SECS:
            self._received.popleft()
        window = max(NET_WINDOW_SECS, elapsed or 0.0)
        net_rate = sum(b for _, b in self._received) / window if elapsed else 0.0
        io_rate = background / elapsed if elapsed else 0.0
        # Bytes that came since the last check, at a rate above the floor (the window
        # alone would count a stream that just stopped for 5 s more).
        if received and elapsed and net_rate >= max(self.config.net_floor_bytes_per_sec, 1e-9):
            self.activity("network", now)
        if elapsed and io_rate >= max(self.config.io_floor_bytes_per_sec, 1e-9):
            self.activity("io", now)
        self.reading = _Reading(io_delta, output, io_rate, net, netmon, net_rate)

    def _netmon_delta(self, pids: list[int]) -> int | None:
        total = self._target.watchdog_net_received(set(pids))
        if total is None:
            return None
        before, self._netmon_total = self._netmon_total, total
        return max(total - before, 0) if before is not None else 0

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
            self._restart(f"watchdog: {message}")
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

    def _restart(self, reason: str) -> None:
        """A restart, if the restart limit allows one; else the watchdog stands down."""
        if self.limited:
            return
        refusal = self.restart_limit.acquire()
        if refusal is None:
            self._target.watchdog_restart(reason)
            return
        self.limited = True
        self._target.watchdog_event(
            "watchdog.restart_limit",
            f"{reason}; not restarting: {refusal}. The agent is left as it is; "
            "watchdog_ping or watchdog_configure re-arms the watchdog.",
            "error",
        )

    def _backoff(self, message: str) -> None:
        if self.gave_up or self.limited or self.backoff_pending is not None:
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
            self._restart(f"watchdog (backoff {self.backoff_restarts}): {message}")

        self.backoff_pending = asyncio.get_running_loop().call_later(delay, fire)

    def signals(self) -> dict[str, Any]:
        """What each sign of life reads now, and when it last counted as progress."""
        now = self._clock()
        r, config, sample = self.reading, self.config, self.sample
        network: dict[str, Any] = (
            self._sockets.status(r.net)
            if self._sockets is not None and r.net is not None
            else {"source": "inet_diag", "connections": None, "note": "no check yet"}
        )
        network.update(
            netmon_received_last_check=r.netmon,
            bytes_per_sec=round(r.net_rate, 1),
            floor_bytes_per_sec=config.net_floor_bytes_per_sec,
        )
        readings: dict[str, Any] = {
            "network": network,
            "io": {
                "chars_last_check": r.io_delta,
                "terminal_output_last_check": r.output,
                "background_bytes_per_sec": round(r.io_rate, 1),
                "floor_bytes_per_sec": config.io_floor_bytes_per_sec,
            },
            "cpu": {
                "percent": round(sample.cpu_percent, 1) if sample else None,
                "spinning_at_percent": config.busy_cpu_percent,
            },
            "processes": {
                "count": sample.processes if sample else None,
                "stopped": sample.stopped if sample else [],
            },
        }
        if self._screen is not None:
            readings["screen"] = self._screen.status()
        elif self._rules is None:
            readings["output"] = {"terminal": "pipes: every byte of output counts"}
        else:
            readings["screen"] = {"emulator": "pyte", "note": "no output yet"}
        for name in SIGNALS:
            if name in self.counted_at:
                readings.setdefault(name, {})["counted_secs_ago"] = round(
                    now - self.counted_at[name], 2
                )
        return readings

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
            "signals": self.signals(),
            "restart_limit": {**self.restart_limit.status(), "stood_down": self.limited},
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

    def close(self) -> None:
        """The run ends: drop what is pending and stop the socket reader's thread."""
        self.cancel_pending()
        if self._sockets is not None:
            self._sockets.close()


__all__ = ["ACTIVE", "HIGH_RESOURCE", "IDLE", "UNRESPONSIVE", "Watchdog", "WatchdogTarget"]
