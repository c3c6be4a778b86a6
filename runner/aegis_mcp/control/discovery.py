"""Finding live runners from their runtime files (for the CLI, MCP server and dashboard).

A live runner holds an exclusive ``flock`` on its ``runner-PID.lock``; a lock
that can be taken belongs to a dead runner, whatever happened to its pid.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from ..paths import RunnerFiles, candidate_runtime_dirs
from .client import socket_from_env
from .protocol import UNAVAILABLE, ControlError

_RUNTIME_NAME = re.compile(
    r"^(?:runner|state|events|overlay|netmon)-(\d+)\.(?:sock|lock|json|jsonl)$"
)


def runner_is_alive(directory: Path, pid: int) -> bool:
    """Whether the runner ``pid`` still holds its lock in ``directory``."""
    lock = directory / f"runner-{pid}.lock"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        # Not ours to open (another user's runner): trust the pid.
        return _pid_exists(pid)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runner_pids(directory: Path) -> set[int]:
    """Pids named by runtime files in ``directory``."""
    pids = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return pids
    for name in names:
        match = _RUNTIME_NAME.match(name)
        if match:
            pids.add(int(match.group(1)))
    return pids


def live_runners(directory: Path) -> list[int]:
    """Pids of runners alive in ``directory``, newest first."""
    return sorted(
        (pid for pid in runner_pids(directory) if runner_is_alive(directory, pid)), reverse=True
    )


def find_runner(pid: int | None = None) -> RunnerFiles:
    """The runtime files of runner ``pid``, or of the runner this process runs under,
    or of the newest live runner."""
    if pid is None:
        env_socket = socket_from_env()
        if env_socket is not None and env_socket.exists():
            env_pid = int(env_socket.stem.split("-")[-1])
            return RunnerFiles(env_socket.parent, env_pid)
    found: list[RunnerFiles] = []
    for directory in candidate_runtime_dirs():
        for live in live_runners(directory):
            if pid is None or live == pid:
                found.append(RunnerFiles(directory, live))
    if not found:
        what = f"runner {pid}" if pid is not None else "running aegis-mcp runner"
        raise ControlError(UNAVAILABLE, f"no {what} found (start one with `aegis-mcp AGENT`)")
    return max(
        found, key=lambda files: files.snapshot.stat().st_mtime if files.snapshot.exists() else 0
    )
