"""Live TCP connections' byte counters, asked of the kernel through sock_diag.

``bpf/tcp_bytes.c`` copies each connection's own counters (bytes acked, bytes received) into
the flow table when the connection changes state; a connection that only moves data changes
no state. So at each read the monitor also asks the kernel for the same counters of the
cgroup's established TCP sockets: one netlink dump (``SOCK_DIAG_BY_FAMILY``, tcp_info),
filtered in the kernel by cgroup id (``INET_DIAG_BC_CGROUP_COND``, Linux 5.10+) and keyed by
socket cookie, the key the BPF programs use. Raw netlink rather than pyroute2: its
``DiagSocket`` sends no filter, so it would bring every socket of the machine into Python
twice a second.

A dump sees one network namespace: the runner's own, filtered by the cgroup ids of the
agent's cgroup tree, and each other namespace an agent process is in (a sandbox's, a
container's: its sockets are the agent's), through a netlink socket opened inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_INFO = 2
INET_DIAG_BC_CGROUP_COND = 13
TCP_ESTABLISHED = 1

_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI48x")  # inet_diag_req_v2, the socket id left zero
_MSG = struct.Struct("=BBBBHH16s16sIII")  # inet_diag_msg up to the cookie
_RTA = struct.Struct("=HH")
# The cgroup condition: op {code, yes, no}, then the id. "yes" steps to the end (accept),
# "no" past it (reject).
_BC_CGROUP = struct.Struct("=BBHQ")
# tcp_info: bytes_acked, bytes_received at 120; data_segs_in, data_segs_out at 152.
_INFO_BYTES = struct.Struct("=QQ")
_INFO_SEGS = struct.Struct("=II")
_INFO_MIN = 160
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class TcpCounters:
    """One established socket's counters as the kernel holds them (SYN included)."""

    cookie: int
    family: int
    remote_addr: bytes  # 16 bytes, IPv4 in the first 4 (an IPv4-mapped peer as IPv4)
    remote_port: int
    local_port: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    segs_in: int


def _request(family: int, cgroup_ids: list[int], seq: int) -> bytes:
    """A dump request for the established TCP sockets of ``family``, in one of ``cgroup_ids``
    when any is given (one condition each: a match jumps to the end, accepting; the last
    miss jumps past it, rejecting)."""
    size = _BC_CGROUP.size
    bytecode = b""
    for index, cgroup_id in enumerate(cgroup_ids):
        left = (len(cgroup_ids) - index) * size
        miss = size if index < len(cgroup_ids) - 1 else size + 4
        bytecode += _BC_CGROUP.pack(INET_DIAG_BC_CGROUP_COND, left, miss, cgroup_id)
    body = _REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, 1 << TCP_ESTABLISHED)
    if bytecode:
        body += _RTA.pack(_RTA.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def _socket_in(netns_path: str | None) -> socket.socket:
    """A sock_diag socket of the namespace of ``netns_path`` (None: ours). Made by a thread of
    its own that enters the namespace: a socket stays in the namespace it was made in."""
    if netns_path is None:
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        return socket.socket(socket.AF_NETLINK, kind, NETLINK_SOCK_DIAG)
    made: list[socket.socket | OSError] = []

    def enter() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns {netns_path}: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(_socket_in(None))
        except OSError as exc:
            made.append(exc)

    thread = threading.Thread(target=enter, name="aegis-tcp-diag")
    thread.start()
    thread.join()
    if isinstance(made[0], OSError):
        raise made[0]
    return made[0]


_libc = ctypes.CDLL(None, use_errno=True)


def parse_message(data: bytes | memoryview) -> TcpCounters | None:
    """The counters in one ``inet_diag_msg`` (after its netlink header); None without tcp_info."""
    family, _state, _t, _r, sport, dport, _src, dst, _if, c0, c1 = _MSG.unpack_from(data, 0)
    offset = 72  # sizeof(struct inet_diag_msg)
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        if kind == INET_DIAG_INFO and length - _RTA.size >= _INFO_MIN:
            info = offset + _RTA.size
            acked, received = _INFO_BYTES.unpack_from(data, info + 120)
            segs_in, segs_out = _INFO_SEGS.unpack_from(data, info + 152)
            if family == socket.AF_INET6 and dst[:12] == _V4_MAPPED:
                family, dst = socket.AF_INET, dst[12:] + b"\0" * 12
            elif family == socket.AF_INET:
                dst = dst[:4] + b"\0" * 12
            return TcpCounters(
                cookie=c0 | c1 << 32,
                family=family,
                remote_addr=bytes(dst),
                remote_port=socket.ntohs(dport),
                local_port=socket.ntohs(sport),
                bytes_acked=acked,
                bytes_received=received,
                segs_out=segs_out,
                segs_in=segs_in,
            )
        offset += (length + 3) & ~3
    return None


class TcpDiag:
    """sock_diag sockets that dump the agent's established TCP sockets, one per namespace."""

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}  # namespace inode -> its socket
        self._seq = 0

    def established(self, cgroup_ids: list[int], pids: Iterable[int]) -> list[TcpCounters]:
        """The counters of the established TCP sockets (IPv4 and IPv6) in our namespace whose
        cgroup is one of ``cgroup_ids``, and of every socket in the other namespaces that
        processes ``pids`` are in; OSError when the kernel refuses (no sock_diag, no
        cgroup filter before Linux 5.10)."""
        own = os.stat("/proc/self/ns/net").st_ino
        spaces: dict[int, str | None] = {own: None}
        for pid in pids:
            path = f"/proc/{pid}/ns/net"
            with contextlib.suppress(OSError):
                spaces.setdefault(os.stat(path).st_ino, path)
        for gone in set(self._socks) - set(spaces):
            with contextlib.suppress(OSError):
                self._socks.pop(gone).close()
        found = []
        for inode, path in spaces.items():
            sock = self._socks.get(inode)
            if sock is None:
                sock = self._socks[inode] = _socket_in(path)
            for family in (socket.AF_INET, socket.AF_INET6):
                self._seq += 1
                sock.send(_request(family, cgroup_ids if path is None else [], self._seq))
                found += self._read(sock, self._seq)
        return found

    @staticmethod
    def _read(sock: socket.socket, seq: int) -> list[TcpCounters]:
        found = []
        while True:
            data = memoryview(sock.recv(1 << 16))
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind, _flags, got_seq, _pid = _NLMSG.unpack_from(data, offset)
                if length < _NLMSG.size:
                    return found
                body = data[offset + _NLMSG.size : offset + length]
                offset += (length + 3) & ~3
                if got_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body, 0)[0]
                    if code:
                        raise OSError(code, f"sock_diag: {os.strerror(code)}")
                    return found
                if kind == SOCK_DIAG_BY_FAMILY:
                    counters = parse_message(body)
                    if counters is not None:
                        found.append(counters)

    def close(self) -> None:
        """Close the netlink sockets (idempotent)."""
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._socks.clear()
