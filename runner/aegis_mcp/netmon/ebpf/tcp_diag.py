"""Live TCP connections' byte counters, asked of the kernel through sock_diag.

``bpf/tcp_bytes.c`` copies each connection's own counters (bytes acked, bytes received) into
the flow table when the connection changes state; a connection that only moves data changes
no state. So at each read the monitor also asks the kernel for the same counters of the
cgroup's established TCP sockets: one netlink dump (``SOCK_DIAG_BY_FAMILY``, tcp_info),
filtered in the kernel by cgroup id (``INET_DIAG_BC_CGROUP_COND``, Linux 5.10+) and keyed by
socket cookie, the key the BPF programs use. Raw netlink rather than pyroute2: its
``DiagSocket`` sends no filter, so it would bring every socket of the machine into Python
twice a second.

The dump sees the sockets of the caller's network namespace only: a connection in another
namespace (a sandboxed agent's) is counted at its state changes alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
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


def _request(family: int, cgroup_id: int, seq: int) -> bytes:
    """A dump request for the established TCP sockets of ``family`` in cgroup ``cgroup_id``."""
    size = _BC_CGROUP.size
    bytecode = _BC_CGROUP.pack(INET_DIAG_BC_CGROUP_COND, size, size + 4, cgroup_id)
    body = _REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, 1 << TCP_ESTABLISHED)
    body += _RTA.pack(_RTA.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


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
    """A sock_diag socket that dumps one cgroup's established TCP sockets."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def established(self, cgroup_id: int) -> list[TcpCounters]:
        """The counters of the established TCP sockets (IPv4 and IPv6) of cgroup ``cgroup_id``;
        OSError when the kernel refuses (no sock_diag, a kernel without the cgroup filter)."""
        if self._sock is None:
            self._sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
            )
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            self._seq += 1
            self._sock.send(_request(family, cgroup_id, self._seq))
            found += self._read(self._seq)
        return found

    def _read(self, seq: int) -> list[TcpCounters]:
        assert self._sock is not None
        found = []
        while True:
            data = memoryview(self._sock.recv(1 << 16))
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
        """Close the netlink socket (idempotent)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
