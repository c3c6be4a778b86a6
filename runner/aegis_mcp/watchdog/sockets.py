"""The agent's TCP connections as the kernel counts them: ``sock_diag`` (``inet_diag``).

For the sockets whose inodes the agent's process tree holds (``/proc/PID/fd``),
``tcp_info`` gives the bytes received and sent and how long ago data last went each
way, whatever syscalls the agent used (Claude Code's raw ones included), with no
netmon mode and no privileges for one's own processes.

pyroute2's ``DiagSocket`` does the netlink work. It runs its own event loop, so it
cannot be called from the runner's; and a socket joins a network namespace through
the thread that creates it. Both are why every look happens in one worker thread,
which moves into the agent's namespace when the agent runs in another one (a netns
sandbox; that needs root, which such a sandbox has).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..netmon.stats import format_endpoint

if TYPE_CHECKING:
    from pyroute2.netlink.diag import DiagSocket

INET_DIAG_INFO = 1 << (2 - 1)
"""The ``idiag_ext`` bit asking for ``tcp_info`` (INET_DIAG_INFO is attribute 2)."""
MAX_SHOWN = 8


@dataclass(frozen=True)
class Connection:
    """One TCP connection of the agent's tree."""

    inode: int
    remote: str
    bytes_received: int
    bytes_sent: int
    last_recv_ms: int
    """Since data last arrived (since the connection was set up if it never did)."""
    last_send_ms: int
    local_port: int = 0
    unread: int = 0
    """Bytes received that the process has not read yet (the receive queue)."""

    @property
    def awaiting_reply(self) -> bool:
        """It sent data and got nothing back since: a request waiting for its answer."""
        if self.bytes_sent == 0:
            return False
        return self.bytes_received == 0 or self.last_send_ms < self.last_recv_ms

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for ``watchdog_status``."""
        return {
            "remote": self.remote,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "last_recv_secs_ago": round(self.last_recv_ms / 1000, 1),
            "last_send_secs_ago": round(self.last_send_ms / 1000, 1),
            "awaiting_reply": self.awaiting_reply,
        }


@dataclass
class NetSample:
    """One look at the tree's connections."""

    connections: list[Connection] = field(default_factory=list)
    received: int = 0
    """Bytes received since the previous look, over all connections."""
    sent: int = 0
    error: str | None = None

    def awaiting(self) -> Connection | None:
        """The connection that has waited longest for an answer, if any waits."""
        waiting = [c for c in self.connections if c.awaiting_reply]
        return max(waiting, key=lambda c: c.last_send_ms, default=None)

    def latest(self) -> Connection | None:
        """The connection that saw data most recently."""
        return min(
            self.connections, key=lambda c: min(c.last_recv_ms, c.last_send_ms), default=None
        )


def socket_inodes(pids: list[int]) -> set[int]:
    """Inodes of the sockets the processes ``pids`` hold open."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            entries = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


class SocketWatcher:
    """Per-connection byte counts of a process tree, read in a worker thread."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aegis-sockdiag")
        self._diag: DiagSocket | None = None
        self._netns: int | None = None
        self._seen: dict[int, tuple[int, int]] = {}
        self._baseline = True
        self.last: NetSample = NetSample()

    def reset(self) -> None:
        """A new agent process: its connections' earlier bytes are not news."""
        self._baseline = True

    async def sample(self, pids: list[int]) -> NetSample:
        """Look at the connections of ``pids`` (the first is the tree's root)."""
        loop = asyncio.get_running_loop()
        self.last = await loop.run_in_executor(self._executor, self._sample, pids)
        return self.last

    def _sample(self, pids: list[int]) -> NetSample:
        inodes = socket_inodes(pids)
        if not inodes or not pids:
            self._seen.clear()
            self._baseline = False
            return NetSample()
        try:
            messages = self._dump(pids[0])
        except Exception as exc:
            # Whatever netlink or a namespace switch refused: the other signals still work.
            self._close_diag()
            return NetSample(error=f"cannot read the agent's TCP connections: {exc}")
        connections: list[Connection] = []
        received = sent = 0
        seen: dict[int, tuple[int, int]] = {}
        for msg in messages:
            inode = msg.get("idiag_inode")
            if inode not in inodes:
                continue
            info = msg.get_attr("INET_DIAG_INFO")
            if info is None:
                continue
            conn = Connection(
                inode=inode,
                remote=format_endpoint(str(msg.get("idiag_dst")), msg.get("idiag_dport")),
                bytes_received=info.get("tcpi_bytes_received") or 0,
                bytes_sent=info.get("tcpi_bytes_sent") or info.get("tcpi_bytes_acked") or 0,
                last_recv_ms=info.get("tcpi_last_data_recv") or 0,
                last_send_ms=info.get("tcpi_last_data_sent") or 0,
                local_port=msg.get("idiag_sport") or 0,
                unread=msg.get("idiag_rqueue") or 0,
            )
            connections.append(conn)
            # A connection first seen after the baseline is new: all its bytes are news.
            before = self._seen.get(inode, (0, 0) if not self._baseline else None)
            if before is not None:
                received += max(conn.bytes_received - before[0], 0)
                sent += max(conn.bytes_sent - before[1], 0)
            seen[inode] = (conn.bytes_received, conn.bytes_sent)
        self._seen = seen
        self._baseline = False
        return NetSample(connections=connections, received=received, sent=sent)

    def _dump(self, pid: int) -> list[Any]:
        from pyroute2.netlink.diag import SS_CONN

        diag = self._diag_for(pid)
        messages: list[Any] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            messages.extend(
                diag.get_sock_stats(family=family, states=SS_CONN, extensions=INET_DIAG_INFO)
            )
        return messages

    def _diag_for(self, pid: int) -> DiagSocket:
        """The diag socket of ``pid``'s network namespace, made in it when it is not ours."""
        netns = _netns_inode(pid)
        if self._diag is not None and netns == self._netns:
            return self._diag
        self._close_diag()
        from pyroute2.netlink.diag import DiagSocket

        if netns is not None and netns != _netns_inode("thread-self"):
            from pyroute2.netns import setns

            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, flags=0)
            finally:
                os.close(fd)
        diag = DiagSocket()
        diag.bind()
        self._diag, self._netns = diag, netns
        return diag

    def _close_diag(self) -> None:
        if self._diag is not None:
            with contextlib.suppress(Exception):
                self._diag.close()
        self._diag = None
        self._netns = None

    def close(self) -> None:
        """Close the diag socket and stop the worker thread."""
        self._executor.submit(self._close_diag)
        self._executor.shutdown(wait=False)

    def status(self, sample: NetSample | None = None) -> dict[str, Any]:
        """What the last look saw: the busiest connections and any error."""
        sample = sample or self.last
        shown = sorted(sample.connections, key=lambda c: min(c.last_recv_ms, c.last_send_ms))
        return {
            "source": "inet_diag",
            "connections": len(sample.connections),
            "recent_connections": [c.as_dict() for c in shown[:MAX_SHOWN]],
            "received_last_check": sample.received,
            "sent_last_check": sample.sent,
            "error": sample.error,
        }
