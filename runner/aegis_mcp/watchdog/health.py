"""Sampling an agent's process tree and deciding its health.

Progress, not noise, resets the quiet timer (see ``monitor.py`` for how each
signal is read):

- **screen**: what the terminal says changed (``screen.py``: spinners, timers and
  identical redraws do not count); headless, any output on the pipes;
- **network**: bytes received on the tree's TCP connections above
  ``net_floor_bytes_per_sec``, averaged over 5 s (a model's stream, not its keep-alives);
- **io**: file and pipe I/O of the tree (``/proc/PID/io``, less its terminal output
  and network traffic) above ``io_floor_bytes_per_sec`` (a tool at work);
- **tool_call** / **ping**: any MCP tool call, ``watchdog_ping``.

No progress for less than the heartbeat timeout: **Active**. For longer, in order:

1. a process of the tree is stopped (SIGSTOP, job control): **Unresponsive**;
2. the tree burns CPU (>= ``busy_cpu_percent`` of a core): **Unresponsive** (spinning);
3. the screen says the agent is working (a ``busy`` pattern of its profile, its
   spinner line) while nothing else changes: **Unresponsive** (a stalled model
   stream, tool or MCP server);
4. the screen shows the agent's input prompt (a ``prompt`` pattern): **Idle**;
5. a connection sent a request longer than the timeout ago and got nothing back:
   **Unresponsive** (the model accepted the request and never answered);
6. an interactive session that answered after the user last pressed Enter: **Idle**
   (output within 0.3 s of the Enter is the terminal's echo, not an answer);
7. otherwise (headless, or the user typed and got no answer): **Unresponsive**.

Resident memory of the whole tree above ``max_memory_mb``: **HighResource**,
whatever the activity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from .config import WatchdogConfig

if TYPE_CHECKING:
    import psutil

    from .screen import ScreenView
    from .sockets import NetSample

ACTIVE = "Active"
IDLE = "Idle"
UNRESPONSIVE = "Unresponsive"
HIGH_RESOURCE = "HighResource"


@dataclass
class TreeSample:
    """Resource use of a process tree at one moment."""

    ts: float
    processes: int = 0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    io_chars: int = 0
    stopped: list[int] = field(default_factory=list)
    """Pids of stopped processes."""
    pids: list[int] = field(default_factory=list)
    """Every process of the tree, its root first."""


class TreeSampler:
    """Turns successive looks at a tree into CPU percentages and I/O deltas."""

    def __init__(self) -> None:
        self._cpu: dict[int, float] = {}
        self._io: dict[int, int] = {}
        self._last_ts: float | None = None

    def sample(self, procs: list[psutil.Process]) -> tuple[TreeSample, int]:
        """A sample of ``procs``, and how many I/O characters moved since the last one."""
        import psutil

        now = time.monotonic()
        sample = TreeSample(ts=time.time())
        cpu: dict[int, float] = {}
        io: dict[int, int] = {}
        cpu_delta = 0.0
        io_delta = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    status = proc.status()
                    try:
                        counters = proc.io_counters()
                        chars = counters.read_chars + counters.write_chars
                    except (psutil.AccessDenied, AttributeError):
                        chars = 0
            except psutil.Error:
                continue
            total = times.user + times.system
            cpu[proc.pid], io[proc.pid] = total, chars
            # A process first seen now contributes what it used since the last
            # look only if it is new; otherwise we have no baseline for it.
            cpu_delta += total - self._cpu.get(proc.pid, total)
            io_delta += chars - self._io.get(proc.pid, chars)
            sample.processes += 1
            sample.pids.append(proc.pid)
            sample.rss_bytes += rss
            sample.io_chars += chars
            if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                sample.stopped.append(proc.pid)
        if self._last_ts is not None and now > self._last_ts:
            sample.cpu_percent = 100.0 * cpu_delta / (now - self._last_ts)
        self._cpu, self._io, self._last_ts = cpu, io, now
        return sample, max(io_delta, 0)

    def reset(self) -> None:
        """Forget the baseline (a new agent process)."""
        self._cpu.clear()
        self._io.clear()
        self._last_ts = None


PROGRESS_WORDS = {
    "screen": "what the screen says changed",
    "output": "output",
    "network": "bytes received on its connections",
    "io": "file I/O",
    "tool_call": "an MCP tool call",
    "ping": "watchdog_ping",
    "start": "started",
    "re-enabled": "watchdog re-enabled",
}


class Situation(NamedTuple):
    """Everything a health decision looks at."""

    sample: TreeSample
    quiet_secs: float
    """Since the last progress."""
    last_kind: str
    """Which signal counted last."""
    last_progress_at: float
    interactive: bool
    answered: bool
    """Output came after the user last pressed Enter."""
    screen: ScreenView | None = None
    net: NetSample | None = None


def _clock_time(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


def _stalled(quiet: float, busy: str, net: NetSample | None) -> str:
    spinner = f"the screen shows only its spinner ({busy.strip()[:60]})"
    waiting = net.awaiting() if net is not None else None
    if waiting is not None:
        return (
            f"model stream stalled {quiet:.0f}s: {waiting.remote} got a request "
            f"{waiting.last_send_ms / 1000:.0f}s ago and sent nothing back; {spinner}"
        )
    latest = net.latest() if net is not None else None
    if latest is not None and latest.last_recv_ms / 1000 < quiet:
        return (
            f"model stream stalled {quiet:.0f}s: {latest.remote} sends only keep-alives "
            f"(below the floor); {spinner}"
        )
    if latest is not None:
        return (
            f"model stream stalled {quiet:.0f}s: nothing from {latest.remote} for "
            f"{latest.last_recv_ms / 1000:.0f}s; {spinner}"
        )
    return f"stalled {quiet:.0f}s: {spinner}, no network, I/O or tool call"


def classify(config: WatchdogConfig, s: Situation) -> tuple[str, str]:
    """(state, reason) for the agent; see the module docstring for the rule."""
    sample = s.sample
    if config.max_memory_mb and sample.rss_bytes > config.max_memory_mb * 1024 * 1024:
        mb = sample.rss_bytes / (1024 * 1024)
        return (
            HIGH_RESOURCE,
            f"resident memory {mb:.0f} MB above the {config.max_memory_mb} MB limit",
        )
    if s.quiet_secs < config.heartbeat_timeout_secs:
        words = PROGRESS_WORDS.get(s.last_kind, s.last_kind)
        return ACTIVE, f"progress {s.quiet_secs:.0f}s ago: {words}"
    quiet = f"no progress (screen, network, I/O, tool calls) for {s.quiet_secs:.0f}s"
    if sample.stopped:
        return UNRESPONSIVE, f"{quiet}; stopped process(es) {sample.stopped}"
    if sample.cpu_percent >= config.busy_cpu_percent:
        return UNRESPONSIVE, f"{quiet} while using {sample.cpu_percent:.0f}% CPU (spinning)"
    if s.screen is not None and s.screen.busy_line is not None:
        return UNRESPONSIVE, _stalled(s.quiet_secs, s.screen.busy_line, s.net)
    since = _clock_time(s.last_progress_at)
    if s.screen is not None and s.screen.prompt:
        return IDLE, f"waiting for your input since {since}, at its prompt"
    waiting = s.net.awaiting() if s.net is not None else None
    if waiting is not None and waiting.last_send_ms / 1000 >= config.heartbeat_timeout_secs:
        return UNRESPONSIVE, (
            f"model stream stalled {s.quiet_secs:.0f}s: {waiting.remote} got a request "
            f"{waiting.last_send_ms / 1000:.0f}s ago and sent nothing back"
        )
    if s.interactive and s.answered:
        return IDLE, f"waiting for your input since {since} (it answered your last input)"
    if s.interactive:
        return UNRESPONSIVE, f"{quiet} since the user's last input"
    return UNRESPONSIVE, f"{quiet} (headless session)"
