"""Whether the aegis-mcp runner that a leftover names still runs.

Runners name what they create after their pid (network namespaces
``aegis-<pid>``, cgroups ``<pid>-<agent>``), so that a runner that crashed can
be recognised from the name alone. Where a leftover also records its owner's
start time (a sandbox's marker, a cgroup's ``trusted.`` attribute), pid *and*
start time decide (:func:`identity_alive`): a reused pid is not taken for the
owner. Without it, the pid and the command line decide (:func:`owner_alive`).
"""

from __future__ import annotations

import os
from pathlib import Path


def proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session,
    ...), None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    return raw[raw.rfind(b")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of live ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat).

    None when there is no such process, or only its zombie (whose stat is
    still readable, but which is not an owner any more).
    """
    fields = proc_stat(pid)
    if fields is None or fields[:1] == [b"Z"]:
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def identity(pid: int) -> str:
    """``"<pid> <start time>"`` of live ``pid``: what a leftover records as its owner."""
    return f"{pid} {process_start_time(pid)}"


def identity_alive(recorded: str) -> bool:
    """Whether the process an :func:`identity` string names still runs (same pid, same start)."""
    try:
        pid_text, start_text = recorded.split()
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return False
    return pid > 0 and process_start_time(pid) == start


def owner_alive(pid: int) -> bool:
    """True if ``pid`` runs and its command line mentions aegis (a runner, not a reused pid)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        # The process exists but hides its command line (hidepid, another
        # user): treat it as alive; a namespace kept too long is harmless, one
        # pulled from under a running agent is not.
        return os.path.exists(f"/proc/{pid}")
    # A zombie (or a kernel thread) has an empty command line: not a runner.
    return b"aegis" in raw.lower()
