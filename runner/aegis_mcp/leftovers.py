"""What dead runners leave behind, in the one shape every source of leftovers reports.

Each package that creates something on the host that can outlive a runner killed
with SIGKILL (the netns sandbox: namespaces, veths, nft tables; eBPF netmon: cgroups
with programs attached; the runner: its runtime files; later containers) offers a
:class:`LeftoverSource` that finds what dead runners left and removes one item.
:mod:`aegis_mcp.cleanup` composes them (``aegis-mcp cleanup``, every root runner's
start, the ``netmon_namespace_cleanup`` tool); this module is the ground they share,
so that no source imports another, nor the composer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .owners import proc_stat

KILL_TIMEOUT_SECS = 5.0


@dataclass(frozen=True)
class Leftover:
    """One thing on the host that a runner made."""

    kind: str
    """``namespace``, ``veth``, ``nft_table``, ``resolv_dir``, ``marker``, ``cgroup``,
    ``runtime_files``, ..."""
    id: str
    """Its name or path."""
    owner_pid: int | None
    owner_alive: bool
    """Checked by pid and start time where the owner's start time was recorded."""
    group: str
    """What goes together (a sandbox, a cgroup, a runner's files): one item of a group
    that must stay keeps the whole group."""
    processes: tuple[int, ...] = ()
    """Processes still inside (a namespace, a cgroup), killed before it is removed."""
    keep_reason: str = ""
    """Why it stays although its owner is dead (an orphaned pool agent runs in it);
    :attr:`processes` then holds only those that are nobody's and may be killed."""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a reply or a listing."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "id": self.id,
            "owner_pid": self.owner_pid,
            "group": self.group,
        }
        if self.processes:
            data["processes"] = list(self.processes)
        if self.detail:
            data["detail"] = self.detail
        return data


class LeftoverSource(Protocol):
    """One kind of leftovers: found, and removed one at a time."""

    def possible(self) -> bool:
        """Whether a dead runner may have left any: cheap (no heavy imports), so that
        every runner start can ask."""

    def find(self) -> list[Leftover]:
        """Everything of this kind on the host, live owners' included, in removal order."""

    def remove(self, item: Leftover) -> None:
        """Kill the processes still inside ``item``, then remove it (gone already is
        fine); raises with a message saying what failed."""

    def finish(self) -> None:
        """After the removals (e.g. settings the last of them restores)."""


def kill_processes(
    pids: tuple[int, ...] | list[int], timeout: float = KILL_TIMEOUT_SECS
) -> list[int]:
    """SIGKILL ``pids`` and wait until each is gone or a zombie; returns those still alive.

    They are not our children (their runner died): their zombies are whoever adopted
    them to reap, so a zombie counts as gone.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        alive = [pid for pid in alive if _running(pid)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return alive


def belonging_to(leaders: set[int], pids: list[int] | tuple[int, ...]) -> set[int]:
    """Those of ``pids`` that are one of ``leaders``, in a session one of them leads, or
    descended from one of them (through parents that are themselves in ``pids``)."""
    stats = {pid: fields for pid in pids if (fields := proc_stat(pid)) is not None}
    parent = {pid: int(f[1]) for pid, f in stats.items()}
    session = {pid: int(f[3]) for pid, f in stats.items()}
    found: set[int] = set()
    for pid in stats:
        seen: set[int] = set()
        current: int | None = pid
        while current is not None and current not in seen:
            if current in leaders or session.get(current) in leaders:
                found.add(pid)
                break
            seen.add(current)
            current = parent.get(current)
    return found


def _running(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[:1] not in ([b"Z"], [b"X"])
