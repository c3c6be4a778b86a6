"""Claiming a runner's runtime files, and cleaning those of dead runners.

A live runner holds an exclusive ``flock`` on its ``runner-PID.lock`` for its
whole life. A lock that can be taken means its runner is gone (even if its
pid was reused since), so its files are stale and removed: by every runner's
start (in its own runtime directory) and by ``aegis-mcp cleanup``, through
:class:`RuntimeFileLeftovers`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..control.discovery import runner_is_alive, runner_pids
from ..files import create_new
from ..leftovers import Leftover
from ..paths import RunnerFiles, pending, runtime_dir

KIND = "runtime_files"


class RunnerLock:
    """The exclusive lock that marks a runner as alive."""

    def __init__(self, files: RunnerFiles, owner: tuple[int, int] | None = None) -> None:
        self.files = files
        # The lock is taken under a name no other runner looks at, then renamed into
        # place: a runner starting at the same moment must never find our lock file
        # unlocked, take us for dead and remove our files. The rename replaces a dead
        # runner's file under our (reused) pid; a planted symlink is replaced, never
        # followed. The agent's user must be able to open it to tell we are alive.
        new = pending(files.lock)
        self._fd = create_new(new, owner=owner, flags=os.O_RDWR, replace=True)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, f"{os.getpid()}\n".encode())
            os.rename(new, files.lock)
        except OSError:
            os.close(self._fd)
            with contextlib.suppress(OSError):
                os.unlink(new)
            raise

    def release(self) -> None:
        """Remove this runner's files and drop the lock."""
        for path in self.files.all():
            if path != self.files.lock:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.files.lock.unlink()
        os.close(self._fd)


class RuntimeFileLeftovers:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of runtime files: one item per
    runner pid named by files in ``directory`` (default: this user's runtime directory)."""

    def __init__(self, directory: Path | None = None, own_pid: int | None = None) -> None:
        self._directory = directory
        self.own_pid = own_pid if own_pid is not None else os.getpid()

    @property
    def directory(self) -> Path:
        """The runtime directory (UnsafeDirectoryError when it cannot be used)."""
        if self._directory is None:
            self._directory = runtime_dir()
        return self._directory

    def possible(self) -> bool:
        """Whether files of a dead runner are there."""
        directory = self.directory
        return any(
            pid != self.own_pid and not runner_is_alive(directory, pid)
            for pid in runner_pids(directory)
        )

    def find(self) -> list[Leftover]:
        """The files of every other runner, alive or not."""
        directory = self.directory
        found = []
        for pid in sorted(runner_pids(directory) - {self.own_pid}):
            names = [p.name for p in RunnerFiles(directory, pid).all() if p.exists()]
            found.append(
                Leftover(
                    kind=KIND,
                    id=str(directory / f"*-{pid}.*"),
                    owner_pid=pid,
                    owner_alive=runner_is_alive(directory, pid),
                    group=f"runner-{pid}",
                    detail=", ".join(names),
                )
            )
        return found

    def remove(self, item: Leftover) -> None:
        """Remove the runner's files."""
        assert item.owner_pid is not None
        for path in RunnerFiles(self.directory, item.owner_pid).all():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def finish(self) -> None:
        """Nothing to restore."""


def clean_stale(directory: Path, own_pid: int) -> int:
    """Remove the runtime files of dead runners in ``directory``; returns for how many."""
    source = RuntimeFileLeftovers(directory, own_pid)
    dead = [item for item in source.find() if not item.owner_alive]
    for item in dead:
        source.remove(item)
    return len(dead)
