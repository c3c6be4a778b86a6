"""Is a process recorded earlier still the same, living process?

A pid alone says little after a restart: pids are reused. Every process the
pool records (its own host, each agent, each lock holder) is stored as a pid
and its start time (psutil's ``create_time``), and counts as alive only while
a non-zombie process with that pid and that start time exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

START_TOLERANCE_SECS = 1.0
"""Start times are compared with this slack: psutil derives them from the boot
time in ``/proc/stat``, which can move by a second between two processes when
the clock is adjusted. A pid reused within the same second is not a real risk."""


def process_start(pid: int) -> float | None:
    """Start time of a live (non-zombie) process, None when there is none."""
    # Imported here: the runner imports the pool lazily, and psutil costs start-up time.
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def same_start(a: float | None, b: float | None) -> bool:
    """Whether two recorded start times name the same process start."""
    return a is not None and b is not None and abs(a - b) <= START_TOLERANCE_SECS


def alive(pid: int | None, started: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    if pid is None or started is None:
        return False
    return same_start(process_start(pid), started)


@dataclass(frozen=True)
class Identity:
    """A process as recorded in the database: pid and start time."""

    pid: int
    started: float | None

    def same(self, pid: int | None, started: float | None) -> bool:
        """Whether ``(pid, started)`` names this process."""
        return pid == self.pid and same_start(started, self.started)


def current() -> Identity:
    """This process."""
    pid = os.getpid()
    return Identity(pid, process_start(pid))
