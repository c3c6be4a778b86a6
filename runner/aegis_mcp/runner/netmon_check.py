"""Proving the run's netmon sources see the agent: a look at its tree about once a
second, each source's verdict per process, and a line when one cannot see something.

Each look gathers the evidence the sources are held against (:mod:`aegis_mcp.netmon.
coverage`): the processes of the primary agent's tree, the TCP sockets each holds
(``/proc/PID/fd``) and what the kernel counted through them (``inet_diag``, read by
the watchdog's :class:`~aegis_mcp.watchdog.sockets.SocketWatcher`). Every source
then gives its verdicts (:meth:`~aegis_mcp.netmon.source.NetmonSource.check`); a
process that some source cannot fully see is said once on stderr and in the event
log ("claude: connects seen, bytes not: raw syscalls; use --netmon=ebpf"), and the
bytes no source saw become unknown in the stats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..netmon.coverage import CoverageBook, KernelSocket, ProcessView

if TYPE_CHECKING:
    import psutil

    from ..netmon.source import NetmonSource
    from ..netmon.stats import NetmonStats
    from ..watchdog.sockets import SocketWatcher

FIRST_LOOK_SECS = 0.5
LOOK_SECS = 1.0
LATER_LOOK_SECS = 5.0
"""After the first minute of looks: what a source misses shows early, and each look
reads every process's fds and the host's TCP sockets."""
EARLY_LOOKS = 60


class SourceCheck:
    """The coverage of the run's sources, looked at while an agent runs."""

    def __init__(
        self,
        sources: list[NetmonSource],
        stats: NetmonStats,
        tree: Callable[[], list[psutil.Process] | None],
        hint: str | None,
        tell: Callable[[str], None],
    ) -> None:
        self.sources = sources
        self.stats = stats
        self._tree = tree
        self.hint = hint
        """What to do about a source that cannot see everything (``use --netmon=ebpf``)."""
        self._tell = tell
        self.book = CoverageBook()
        self.error: str | None = None
        self._watcher: SocketWatcher | None = None
        self._told: set[tuple[str, str, str]] = set()

    async def run(self) -> None:
        """Look until cancelled."""
        await asyncio.sleep(FIRST_LOOK_SECS)
        while True:
            tree = self._tree()
            if tree:
                await self.look(tree)
            early = self.book.checks < EARLY_LOOKS
            await asyncio.sleep(LOOK_SECS if early else LATER_LOOK_SECS)

    async def look(self, tree: list[psutil.Process]) -> None:
        """One look at ``tree`` by every source."""
        try:
            processes = await self._processes(tree)
            for source in self.sources:
                found = await asyncio.to_thread(source.check, processes)
                for cov in self.book.update(source.name, found):
                    self._news(source.name, cov.comm, cov.verdict, cov.line(self.hint))
        except Exception as exc:
            # A look that fails (a process gone mid-read, netlink refused) is not the run's end.
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.error = None
        self.book.checks += 1
        pids, endpoints = self.book.bytes_unknown()
        whole = any(
            s.counts_every_byte and not self.book.missed_bytes(s.name) for s in self.sources
        )
        self.stats.set_unknown(pids, endpoints, totals=bool(pids) and not whole)

    def _news(self, source: str, comm: str, verdict: str, line: str) -> None:
        key = (source, comm, verdict)
        if verdict in ("partial", "blind") and key not in self._told:
            self._told.add(key)
            self._tell(f"netmon ({source}): {line}")

    async def _processes(self, tree: list[psutil.Process]) -> list[ProcessView]:
        from ..watchdog.sockets import socket_inodes

        pids = [p.pid for p in tree]
        held = {pid: socket_inodes([pid]) for pid in pids}
        counts: dict[int, KernelSocket] = {}
        if any(held.values()):
            if self._watcher is None:
                from ..watchdog.sockets import SocketWatcher

                self._watcher = SocketWatcher()
            sample = await self._watcher.sample(pids)
            if sample.error:
                raise RuntimeError(sample.error)
            for conn in sample.connections:
                counts[conn.inode] = KernelSocket(
                    inode=conn.inode,
                    local_port=conn.local_port,
                    remote=conn.remote,
                    written=conn.bytes_sent,
                    read=max(conn.bytes_received - conn.unread, 0),
                )
        views = []
        for proc in tree:
            comm = ""
            with contextlib.suppress(Exception):
                comm = proc.name()
            sockets = tuple(counts[i] for i in sorted(held[proc.pid]) if i in counts)
            views.append(ProcessView(proc.pid, comm, sockets))
        return views

    def status(self) -> dict[str, Any]:
        """The coverage part of the netmon status (control/snapshot.py's NetmonCoverage)."""
        return {**self.book.status(self.hint), "error": self.error}

    def close(self) -> None:
        """Release the socket reader."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
