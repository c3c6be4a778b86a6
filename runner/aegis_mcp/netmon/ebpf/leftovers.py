"""The cgroups (and their BPF programs) that runners killed before their clean-up left.

A runner killed with SIGKILL after attaching leaves ``<cgroup2>/aegis-mcp/<pid>-<agent>``
with its programs attached, and perhaps processes in it (what the agent started and
that outlived it). A cgroup is a leftover once its owner is dead: by the pid and start
time of its ``trusted.aegis-mcp.owner`` attribute, else by the pid in its name
(:mod:`aegis_mcp.owners`). Removing it kills what is inside (``cgroup.kill`` where the
kernel has it), detaches every program and removes the directory.

One exception: a pool agent of the dead runner that still runs (it becomes
``orphaned``, and the next pool takes it over) is spared, with its session and its
descendants; the cgroup stays for it, and only the rest inside is killed. Pool agents
are known by the attributes their own process wrote before dropping root
(:func:`.cgroup.join_step`), never by anything an agent could forge.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ...leftovers import Leftover, belonging_to
from ...owners import identity_alive, owner_alive
from .cgroup import (
    PARENT,
    bottom_up,
    cgroup2_mount,
    kill_all,
    parse_cgroup_name,
    pids_below,
    recorded_agents,
    recorded_owner,
)

KIND = "cgroup"


class CgroupLeftovers:
    """The :class:`aegis_mcp.leftovers.LeftoverSource` of agent cgroups."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            root = cgroup2_mount()
        self.parent = root / PARENT if root is not None else None

    def _entries(self) -> list[tuple[Path, int, str]]:
        if self.parent is None:
            return []
        try:
            names = os.listdir(self.parent)
        except OSError:
            return []
        found = []
        for name in sorted(names):
            parsed = parse_cgroup_name(name)
            if parsed is not None and (self.parent / name).is_dir():
                found.append((self.parent / name, *parsed))
        return found

    @staticmethod
    def _owner_alive(path: Path, pid: int) -> bool:
        recorded = recorded_owner(path)
        return identity_alive(recorded) if recorded is not None else owner_alive(pid)

    def possible(self) -> bool:
        """Whether a cgroup of a dead runner is there."""
        return any(not self._owner_alive(path, pid) for path, pid, _ in self._entries())

    def find(self) -> list[Leftover]:
        """Every agent cgroup, with its processes and what may not be killed."""
        found = []
        for path, pid, primary in self._entries():
            alive = self._owner_alive(path, pid)
            inside = pids_below(path)
            orphans = {
                agent_pid: agent
                for agent_pid, (ident, agent) in recorded_agents(path).items()
                if agent != primary and identity_alive(ident)
            }
            spared = belonging_to(set(orphans), inside) if orphans and not alive else set()
            programs = _program_count(path)
            reason = ""
            if spared:
                names = ", ".join(f"{a} (pid {p})" for p, a in sorted(orphans.items()))
                reason = (
                    f"pool agent {names} of the dead runner still runs in it (orphaned: the "
                    "next pool takes it over, agent_stop ends it)"
                )
            found.append(
                Leftover(
                    kind=KIND,
                    id=str(path),
                    owner_pid=pid,
                    owner_alive=alive,
                    group=str(path),
                    processes=tuple(p for p in inside if p not in spared),
                    keep_reason=reason,
                    detail=f"{programs} BPF program(s) attached" if programs else "",
                )
            )
        return found

    def remove(self, item: Leftover) -> None:
        """Kill what is inside, detach every program, remove the directory (and any below)."""
        from . import attached

        path = Path(item.id)
        if not path.is_dir():
            return
        kill_all(path)
        for directory in bottom_up(path):
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    attached.detach_all(fd)
                except attached.BpfSyscallUnavailable:
                    pass  # removing the cgroup releases its programs all the same
                finally:
                    os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()

    def finish(self) -> None:
        """Nothing to restore."""


def _program_count(path: Path) -> int:
    # The bpf syscall wrapper (ctypes) is loaded only when there is a cgroup to look at.
    from . import attached

    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return len(attached.attached(fd))
    except OSError:
        return 0
    finally:
        os.close(fd)
