"""How the ``preload`` source proves what it sees: the hooks' log held against ``/proc``
and the kernel's socket counters.

For each process of the agents' tree:

- the hooks library must be mapped in it (``/proc/PID/maps``); when it is not, why:
  a statically linked executable (no ``PT_INTERP``: ``ld.so`` never runs), an
  environment without ``LD_PRELOAD``, or a library ``ld.so`` could not load;
- every TCP socket it holds (``/proc/PID/fd``) must have a ``connect`` or ``accept``
  line in the log: none means the connect went around libc (a raw syscall), or that
  the log is not being written at all;
- a socket through which the kernel counted bytes must have ``send``/``recv`` lines:
  the hooks write a connection's first bytes each way at once (hooks/netmon.c), so a
  socket that moved bytes with none logged was used through raw syscalls (Claude
  Code's Bun). A logged count more than a flush threshold behind the kernel's says
  the same of part of the traffic (the only proof an older library without the
  ``first-bytes`` feature allows).

A socket is judged only when two looks in a row agree, so that a line being written
while the kernel was read does not count as missing.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .coverage import Coverage, KernelSocket, ProcessView
from .stats import format_endpoint

MAX_CONNECTIONS = 8192
FLUSH_BYTES = 1 << 20
"""hooks/netmon.c's FLUSH_BYTES: how far its counts may lag the kernel's."""
RAW = "raw syscalls"
_PT_INTERP = 3


class HookedConnections:
    """What the hooks logged of each TCP connection: bytes each way, by endpoint pair."""

    def __init__(self, limit: int = MAX_CONNECTIONS) -> None:
        self._table: OrderedDict[tuple[int, str], list[int]] = OrderedDict()
        self._limit = limit

    def note(self, event: Mapping[str, Any]) -> None:
        """Take one event of the log."""
        kind = event.get("event")
        if kind not in ("connect", "accept", "send", "recv") or event.get("proto") != "tcp":
            return
        key = _key(event)
        if key is None:
            return
        if kind == "connect" and event.get("result") not in (0, None):
            return
        entry = self._table.get(key)
        if entry is None or kind in ("connect", "accept"):
            # A connect under a pair seen before is a new connection.
            entry = self._table[key] = [0, 0]
        elif kind == "send":
            entry[0] += _count(event.get("bytes"))
        else:
            entry[1] += _count(event.get("bytes"))
        self._table.move_to_end(key)
        while len(self._table) > self._limit:
            self._table.popitem(last=False)

    def get(self, sock: KernelSocket) -> tuple[int, int] | None:
        """(sent, received) the hooks logged for ``sock``'s connection, None if none."""
        entry = self._table.get((sock.local_port, sock.remote))
        return (entry[0], entry[1]) if entry is not None else None


def _key(event: Mapping[str, Any]) -> tuple[int, str] | None:
    local, addr, port = event.get("local_port"), event.get("remote_addr"), event.get("remote_port")
    if not isinstance(local, int) or not isinstance(addr, str) or not isinstance(port, int):
        return None
    return (local, format_endpoint(addr, port))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def library_mapped(pid: int, library: Path) -> bool | None:
    """Whether ``library`` is mapped in ``pid`` (None: cannot tell, e.g. it is gone)."""
    wanted = os.path.realpath(library)
    try:
        with open(f"/proc/{pid}/maps", "rb") as maps:
            data = maps.read()
    except OSError:
        return None
    names = ([os.fsencode(wanted)], [os.fsencode(wanted) + b" (deleted)"])
    return any(line.split(maxsplit=5)[5:] in names for line in data.splitlines())


def unhooked_reason(pid: int) -> str:
    """Why the hooks library is not in ``pid``, as far as /proc tells."""
    if is_static(f"/proc/{pid}/exe"):
        return "statically linked: LD_PRELOAD cannot load into it"
    try:
        with open(f"/proc/{pid}/environ", "rb") as env:
            names = [item.split(b"=", 1)[0] for item in env.read().split(b"\0")]
    except OSError:
        names = None
    if names is not None and b"LD_PRELOAD" not in names:
        return "started without LD_PRELOAD"
    return "ld.so did not load the hooks library"


def is_static(path: str) -> bool:
    """Whether the ELF executable at ``path`` has no interpreter (``ld.so`` never runs)."""
    try:
        with open(path, "rb") as exe:
            head = exe.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return False
            wide = head[4] == 2
            order = "<" if head[5] == 1 else ">"
            if wide:
                (phoff,) = struct.unpack_from(order + "Q", head, 0x20)
                entsize, count = struct.unpack_from(order + "HH", head, 0x36)
            else:
                (phoff,) = struct.unpack_from(order + "I", head, 0x1C)
                entsize, count = struct.unpack_from(order + "HH", head, 0x2A)
            exe.seek(phoff)
            table = exe.read(entsize * count)
    except (OSError, struct.error):
        return False
    types = [struct.unpack_from(order + "I", table, i * entsize)[0] for i in range(count)]
    return _PT_INTERP not in types


class PreloadCheck:
    """The preload source's verdicts, look after look (see the module docstring)."""

    def __init__(
        self, library: Path, connections: HookedConnections, first_bytes: bool = True
    ) -> None:
        self.library = library
        self.connections = connections
        self.first_bytes = first_bytes
        """The library logs first bytes at once: a connection with none logged is proof.
        (Without, only a count more than a flush behind the kernel's is.)"""
        self._mapped: set[tuple[int, int, int]] = set()
        self._suspects: set[tuple[int, str]] = set()

    def check(self, processes: list[ProcessView], log_written: bool) -> list[Coverage]:
        """One look: the verdict for each process that can be judged."""
        suspects: set[tuple[int, str]] = set()
        found = []
        for proc in processes:
            mapped = self._is_mapped(proc.pid)
            if mapped is None:
                continue
            if not mapped:
                # Not judged in the instant between exec() and ld.so loading it.
                key = (proc.pid, "unhooked")
                suspects.add(key)
                if key in self._suspects:
                    reason = unhooked_reason(proc.pid)
                    found.append(Coverage(proc.pid, proc.comm, False, False, reason))
                continue
            found.append(self._judge(proc, log_written, suspects))
        self._suspects = suspects
        return found

    def _judge(
        self, proc: ProcessView, log_written: bool, suspects: set[tuple[int, str]]
    ) -> Coverage:
        connects: bool | None = None
        moved: bool | None = None
        unseen: list[str] = []
        for sock in proc.sockets:
            logged = self.connections.get(sock)
            if logged is None:
                if self._confirmed(sock, "connect", suspects):
                    connects = False
                    moved = False if sock.written or sock.read else moved
                    unseen.append(sock.remote)
                continue
            connects = True if connects is None else connects
            ways = (("send", sock.written, logged[0]), ("recv", sock.read, logged[1]))
            missed = [
                way
                for way, kernel, hooks in ways
                if kernel and ((hooks == 0 and self.first_bytes) or kernel - hooks > FLUSH_BYTES)
            ]
            confirmed = [self._confirmed(sock, way, suspects) for way in missed]
            if any(confirmed):
                moved = False
                unseen.append(sock.remote)
            elif (sock.written or sock.read) and moved is None:
                moved = True
        reason = RAW if log_written else "the hooks are loaded but write nothing to the log"
        bad = connects is False or moved is False
        return Coverage(
            proc.pid, proc.comm, connects, moved, reason if bad else None, tuple(unseen)
        )

    def _confirmed(self, sock: KernelSocket, what: str, suspects: set[tuple[int, str]]) -> bool:
        key = (sock.inode, what)
        suspects.add(key)
        return key in self._suspects

    def _is_mapped(self, pid: int) -> bool | None:
        try:
            info = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return None
        # By pid and executable: an exec() starts over. Once mapped, it stays.
        key = (pid, info.st_dev, info.st_ino)
        if key in self._mapped:
            return True
        mapped = library_mapped(pid, self.library)
        if mapped:
            if len(self._mapped) >= MAX_CONNECTIONS:
                self._mapped.clear()  # pids of the past: asking again costs one read
            self._mapped.add(key)
        return mapped
