"""The agent's own cgroup v2 directory, which the BPF programs are attached to.

Each agent (the primary one and every pool agent) gets
``<cgroup2>/aegis-mcp/<runnerpid>-<agentid>``: the agent and everything it
starts join it before exec, so attribution is per agent whatever the agent
is written in. The runner removes the directory at the end; what runners that
died left is :mod:`.leftovers`' business (``aegis-mcp cleanup``, every root
runner's start).

Two ``trusted.`` attributes (only root can write them, so an agent cannot forge
them) say whose a directory is: ``trusted.aegis-mcp.owner``, the runner's pid
and start time, set right after the directory is made; and one
``trusted.aegis-mcp.agent.<pid>`` per agent process that joined (pid, start time,
agent id), written by the child itself before it drops root. After a crash they
tell an orphaned pool agent (which must live on) from the rest.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from ...leftovers import kill_processes
from ...owners import identity

PARENT = "aegis-mcp"
OWNER_XATTR = "trusted.aegis-mcp.owner"
AGENT_XATTR_PREFIX = "trusted.aegis-mcp.agent."
_NAME = re.compile(r"(?P<pid>[1-9][0-9]{0,9})-(?P<agent>[A-Za-z0-9][A-Za-z0-9_.-]*)")


def cgroup2_mount(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup/unified`` on
    a hybrid system, ``/sys/fs/cgroup`` on a pure v2 one), or None."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    fields = (line.split() for line in lines)
    found = [Path(f[1]) for f in fields if len(f) > 2 and f[2] == "cgroup2"]
    for preferred in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if preferred in found:
            return preferred
    return found[0] if found else None


def cgroup_name(runner_pid: int, agent_id: str) -> str:
    """The directory name of an agent's cgroup; raises ValueError for an unsafe agent id."""
    name = f"{runner_pid}-{agent_id}"
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"agent id {agent_id!r} cannot name a cgroup")
    return name


def join_step(path: Path, agent_id: str | None = None) -> Callable[[], None]:
    """A step for ``SpawnSpec.confine``: move the calling process into ``path``,
    and record it there as agent ``agent_id`` when one is given.

    It runs in the child between fork and exec, before the privilege drop:
    only plain syscalls (open, read, write, setxattr) on paths computed
    beforehand. Writing "0" to cgroup.procs moves the writer itself.
    """
    procs = os.fsencode(path / "cgroup.procs")
    directory = os.fsencode(path)

    def join() -> None:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        if agent_id is not None:
            pid = os.getpid()
            # Without trusted attributes (an old kernel) the agent is just not
            # known as one after a crash: its processes count as nobody's.
            with contextlib.suppress(OSError):
                value = f"{identity(pid)} {agent_id}".encode()
                os.setxattr(directory, f"{AGENT_XATTR_PREFIX}{pid}", value)

    return join


def recorded_agents(path: Path) -> dict[int, tuple[str, str]]:
    """The agents recorded in cgroup ``path``: pid -> (identity, agent id)."""
    agents: dict[int, tuple[str, str]] = {}
    try:
        names = os.listxattr(path)
    except OSError:
        return agents
    for name in names:
        if not name.startswith(AGENT_XATTR_PREFIX):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid_text, start, agent = os.getxattr(path, name).decode().split(" ", 2)
            agents[int(pid_text)] = (f"{pid_text} {start}", agent)
    return agents


def recorded_owner(path: Path) -> str | None:
    """The owner identity (``"<pid> <start>"``) of cgroup ``path``, None if unrecorded."""
    try:
        return os.getxattr(path, OWNER_XATTR).decode()
    except (OSError, UnicodeDecodeError):
        return None


def parse_cgroup_name(name: str) -> tuple[int, str] | None:
    """(runner pid, agent id) of one of our cgroup directory names; None for others."""
    match = _NAME.fullmatch(name)
    return (int(match["pid"]), match["agent"]) if match else None


class AgentCgroup:
    """One agent's cgroup directory: created here, removed by :meth:`remove`."""

    def __init__(self, root: Path, runner_pid: int, agent_id: str) -> None:
        self.root = Path(root)
        self.parent = Path(root) / PARENT
        self.path = self.parent / cgroup_name(runner_pid, agent_id)
        self.parent.mkdir(mode=0o755, exist_ok=True)
        try:
            self.path.mkdir(mode=0o755)
        except FileExistsError:
            # Our own pid and agent id: a directory left by an earlier run of
            # this pid. Empty ones are reused; a busy one is an error.
            if self.pids():
                raise
        # Until this is written, the owner is told by the pid in the name.
        with contextlib.suppress(OSError):
            os.setxattr(self.path, OWNER_XATTR, identity(runner_pid).encode())
        self.id = os.stat(self.path).st_ino
        """The cgroup id, as bpf_get_current_cgroup_id() returns it."""

    @property
    def relative(self) -> str:
        """The path as ``/proc/PID/cgroup`` names it (from the v2 hierarchy's root)."""
        return "/" + str(self.path.relative_to(self.root))

    def open_fd(self) -> int:
        """An O_RDONLY descriptor of the directory, for attaching programs."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def join_step(self, agent_id: str | None = None) -> Callable[[], None]:
        """The ``confine`` step that moves a child into this cgroup (see :func:`join_step`)."""
        return join_step(self.path, agent_id)

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

    def kill(self) -> None:
        """Kill every process in the cgroup (see :func:`kill_all`)."""
        kill_all(self.path)

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


def bottom_up(path: Path) -> list[Path]:
    """``path`` and the cgroups below it, the deepest first (rmdir order)."""
    found = [Path(top) / name for top, dirs, _ in os.walk(path) for name in dirs]
    return [*sorted(found, key=lambda p: len(p.parts), reverse=True), path]


def pids_below(path: Path) -> list[int]:
    """The processes in cgroup ``path`` and below it."""
    pids: list[int] = []
    for directory in bottom_up(path):
        with contextlib.suppress(OSError):
            pids += [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    return pids


def kill_all(path: Path) -> None:
    """Kill every process in the cgroup and below it; OSError if some outlive it."""
    # Atomic, and catches processes forking meanwhile (Linux 5.14; older kernels have no
    # such file, and a cgroup gone already is fine): the loop below does the rest.
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    for _ in range(3):
        pids = pids_below(path)
        if not pids:
            return
        kill_processes(pids)
    if left := pids_below(path):
        raise OSError(f"processes {left} in {path} outlived SIGKILL")
