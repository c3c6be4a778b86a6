"""A netlink socket of any protocol, sending pyroute2-encoded messages with acks.

pyroute2's socket classes run every request through its asyncio core (about
0.7 ms a request here); this one sends several requests in one datagram and
reads the acks itself, keeping pyroute2 for encoding and decoding messages.
A netlink socket belongs to the network namespace of the thread that created
it, for its whole life.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterable

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsg

HEADER = struct.Struct("=IHHII")
_RECV = 1 << 16

Request = tuple[nlmsg, int, int]
"""A message, its netlink type (RTM_*) and its extra flags (NLM_F_CREATE, ...)."""


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` is its answer, ``request`` what was asked."""

    def __init__(self, code: int, request: str) -> None:
        super().__init__(code, f"{request}: {os.strerror(code)}")
        self.request = request


class NetlinkSocket:
    """A netlink socket in the namespace of the thread that creates it."""

    names: dict[int, str] = {}
    """Message type names, for error messages."""

    def __init__(self, protocol: int, groups: int = 0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, groups))
        self._seq = 0
        # One conversation at a time: replies are matched by sequence number.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def _encode(self, msg: nlmsg, kind: int, flags: int) -> tuple[bytes, int]:
        self._seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._seq
        msg["header"]["pid"] = 0
        msg.encode()
        return bytes(msg.data), self._seq

    def request(self, requests: Iterable[Request]) -> list[bytes]:
        """Send ``requests`` in one datagram; wait for every ack, return any replies.

        The kernel runs them in order and stops at nothing: each gets its own
        ack, and the first failure is raised (as :class:`NetlinkError`) after
        all acks are in, so the socket is left with nothing pending.
        """
        with self._lock:
            buf = bytearray()
            pending: dict[int, str] = {}
            for msg, kind, flags in requests:
                data, seq = self._encode(msg, kind, NLM_F_REQUEST | NLM_F_ACK | flags)
                buf += data
                pending[seq] = self.names.get(kind, str(kind))
            self._sock.send(buf)
            replies: list[bytes] = []
            failure: NetlinkError | None = None
            while pending:
                for kind, seq, body in self.messages():
                    if kind == NLMSG_ERROR:
                        code = _error_code(body)
                        name = pending.pop(seq, "request")
                        if code and failure is None:
                            failure = NetlinkError(code, name)
                    elif seq in pending:
                        replies.append(body)
            if failure is not None:
                raise failure
            return replies

    def dump(self, msg: nlmsg, kind: int) -> list[bytes]:
        """A dump request (RTM_GET* with NLM_F_DUMP); returns the raw messages.

        Raw, because decoding a whole routing table with pyroute2's generic
        decoder costs milliseconds: callers pick out the few fields they need
        (see :func:`attributes`).
        """
        with self._lock:
            data, seq = self._encode(msg, kind, NLM_F_REQUEST | NLM_F_DUMP)
            self._sock.send(data)
            found: list[bytes] = []
            while True:
                for mtype, mseq, body in self.messages():
                    if mseq != seq:
                        continue
                    if mtype == NLMSG_DONE:
                        return found
                    if mtype == NLMSG_ERROR:
                        raise NetlinkError(_error_code(body), f"dump {kind}")
                    found.append(body)

    def fileno(self) -> int:
        """The socket's fd (to wait on it)."""
        return self._sock.fileno()

    def messages(self) -> list[tuple[int, int, bytes]]:
        """Read one datagram: (type, sequence number, whole message) of each message in it."""
        data = self._sock.recv(_RECV)
        out = []
        offset = 0
        while offset + HEADER.size <= len(data):
            length, kind, _flags, seq, _pid = HEADER.unpack_from(data, offset)
            if length < HEADER.size:
                break
            out.append((kind, seq, data[offset : offset + length]))
            offset += (length + 3) & ~3
        return out


def _error_code(body: bytes) -> int:
    """The errno of an NLMSG_ERROR message (0: an ack)."""
    return -struct.unpack_from("=i", body, HEADER.size)[0]


_RTA = struct.Struct("=HH")


def attributes(body: bytes, offset: int) -> dict[int, bytes]:
    """The top-level attributes (type -> payload) of a netlink message from ``offset``."""
    found: dict[int, bytes] = {}
    end = min(len(body), HEADER.unpack_from(body)[0])
    while offset + _RTA.size <= end:
        length, kind = _RTA.unpack_from(body, offset)
        if length < _RTA.size:
            break
        found.setdefault(kind & 0x3FFF, body[offset + _RTA.size : offset + length])
        offset += (length + 3) & ~3
    return found
