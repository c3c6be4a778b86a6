"""Claiming a runner's runtime files, and cleaning those of dead runners.

A live runner holds an exclusive ``flock`` on its ``runner-PID.lock`` for its
whole life. A lock that can be taken means its runner is gone (even if its
pid was reused since), so its files are stale and removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..control.discovery import runner_is_alive, runner_pids
from ..files import create_new
from ..paths import RunnerFiles


class RunnerLock:
    """The exclusive lock that marks a runner as alive."""

    def __init__(self, files: RunnerFiles, owner: tuple[int, int] | None = None) -> None:
        self.files = files
        # No live runner has our pid: a lock file under our name is a dead one's.
        # The agent's user must be able to open it to tell we are alive.
        self._fd = create_new(files.lock, owner=owner, flags=os.O_RDWR, replace=True)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Remove this runner's files and drop the lock."""
        for path in self.files.all():
            if path != self.files.lock:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.files.lock.unlink()
        os.close(self._fd)


def clean_stale(directory: Path, own_pid: int) -> list[Path]:
    """Remove runtime files of dead runners in ``directory``; returns what was removed."""
    removed = []
    for pid in runner_pids(directory):
        if pid == own_pid or runner_is_alive(directory, pid):
            continue
        for path in RunnerFiles(directory, pid).all():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
