"""Sampling an agent's process tree and deciding its health.

The rule that tells "idle at its prompt" from "hung":

1. Signs of life reset the quiet timer: bytes the agent writes to its
   terminal or pipes, any MCP tool call, ``watchdog_ping``, and I/O progress
   anywhere in its process tree (``/proc/PID/io`` read/write character
   counts, which include sockets: an agent streaming a model's answer is
   alive even when it prints nothing).
2. Quiet for less than the heartbeat timeout: **Active**.
3. Quiet for longer, then, in order:
   - a process of the tree is stopped (SIGSTOP, job control): **Unresponsive**;
   - the tree burns CPU (>= ``busy_cpu_percent`` of a core) without output
     or I/O: **Unresponsive** (spinning);
   - interactive session (a terminal) that produced output after the user
     last pressed Enter: **Idle** — it answered and is waiting for the user,
     however long that takes. Output within 0.3 s of the Enter does not
     count as an answer: that is the terminal's echo or the agent redrawing
     its input box;
   - otherwise (headless, or the user typed and got no answer and no I/O
     since): **Unresponsive**.
4. Resident memory of the whole tree above ``max_memory_mb``: **HighResource**,
   whatever the activity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import WatchdogConfig

if TYPE_CHECKING:
    import psutil

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


def classify(
    config: WatchdogConfig,
    sample: TreeSample,
    quiet_secs: float,
    interactive: bool,
    waiting_for_user: bool,
) -> tuple[str, str]:
    """(state, reason) for the agent; see the module docstring for the rule."""
    if config.max_memory_mb and sample.rss_bytes > config.max_memory_mb * 1024 * 1024:
        mb = sample.rss_bytes / (1024 * 1024)
        return (
            HIGH_RESOURCE,
            f"resident memory {mb:.0f} MB above the {config.max_memory_mb} MB limit",
        )
    if quiet_secs < config.heartbeat_timeout_secs:
        return ACTIVE, "recent activity"
    quiet = f"no output, tool call or I/O for {quiet_secs:.0f}s"
    if sample.stopped:
        return UNRESPONSIVE, f"{quiet}; stopped process(es) {sample.stopped}"
    if sample.cpu_percent >= config.busy_cpu_percent:
        return UNRESPONSIVE, f"{quiet} while using {sample.cpu_percent:.0f}% CPU (spinning)"
    if interactive and waiting_for_user:
        return IDLE, "waiting for input at its prompt"
    if interactive:
        return UNRESPONSIVE, f"{quiet} since the user's last input"
    return UNRESPONSIVE, f"{quiet} (headless session)"
