"""The agent's own cgroup v2 directory, which the BPF programs are attached to.

Each agent (the primary one and every pool agent) gets
``<cgroup2>/aegis-mcp/<runnerpid>-<agentid>``: the agent and everything it
starts join it before exec, so attribution is per agent whatever the agent
is written in. The runner removes the directory at the end; directories of
runners that died are removed by the next one (only when empty: processes
left in one are the business of whoever kills them).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from ...owners import owner_alive

PARENT = "aegis-mcp"
_NAME = re.compile(r"(?P<pid>[1-9][0-9]{0,9})-(?P<agent>[A-Za-z0-9][A-Za-z0-9_.-]*)")


def cgroup_name(runner_pid: int, agent_id: str) -> str:
    """The directory name of an agent's cgroup; raises ValueError for an unsafe agent id."""
    name = f"{runner_pid}-{agent_id}"
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"agent id {agent_id!r} cannot name a cgroup")
    return name


def join_step(path: Path) -> Callable[[], None]:
    """A step for ``SpawnSpec.confine``: move the calling process into ``path``.

    It runs in the child between fork and exec, before the privilege drop:
    only plain syscalls (open, write, close) on a path computed beforehand.
    Writing "0" to cgroup.procs moves the writer itself.
    """
    procs = os.fsencode(path / "cgroup.procs")

    def join() -> None:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return join


class AgentCgroup:
    """One agent's cgroup directory: created here, removed by :meth:`remove`."""

    def __init__(self, root: Path, runner_pid: int, agent_id: str) -> None:
        self.root = Path(root)
        self.parent = Path(root) / PARENT
        self.path = self.parent / cgroup_name(runner_pid, agent_id)
        self.parent.mkdir(mode=0o755, exist_ok=True)
        remove_stale(self.parent)
        try:
            self.path.mkdir(mode=0o755)
        except FileExistsError:
            # Our own pid and agent id: a directory left by an earlier run of
            # this pid. Empty ones are reused; a busy one is an error.
            if self.pids():
                raise
        self.id = os.stat(self.path).st_ino
        """The cgroup id, as bpf_get_current_cgroup_id() returns it."""

    @property
    def relative(self) -> str:
        """The path as ``/proc/PID/cgroup`` names it (from the v2 hierarchy's root)."""
        return "/" + str(self.path.relative_to(self.root))

    def open_fd(self) -> int:
        """An O_RDONLY descriptor of the directory, for attaching programs."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def join_step(self) -> Callable[[], None]:
        """The ``confine`` step that moves a child into this cgroup."""
        return join_step(self.path)

    def add(self, pid: int) -> None:
        """Move a running process into the cgroup (its later children follow)."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        """The processes in the cgroup now."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    def remove(self) -> bool:
        """Remove the directory if no process is left in it; True when it is gone."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        # The parent stays: removing it could race another runner creating its
        # own cgroup in it, and an empty cgroup costs nothing.
        return True


def remove_stale(parent: Path) -> list[str]:
    """Remove the empty cgroups of runners that are gone; returns their names."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None or not entry.is_dir() or owner_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            entry.rmdir()
            removed.append(entry.name)
    return removed
