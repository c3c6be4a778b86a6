"""From BPF records and flow counters to netmon events (pure Python, no BPF here).

The kernel side sends records (connect, release, DNS, TCP state, ...) through
the ring buffer and keeps byte counters per socket and remote endpoint in a
map. :class:`SocketTracker` joins the two by socket cookie and turns them into
events in the format of DESIGN.md, ``source`` ``"ebpf"``:

- ``connect`` when the agent connects (held back until the TCP tracepoint
  says established (``result`` 0) or failed, when that tier runs);
- ``blocked`` when the egress policy refused it;
- ``send`` / ``recv`` with the payload bytes that moved since the last read;
- ``close`` once the socket is released and its last bytes are counted, with
  lifetime totals in ``bytes_sent`` / ``bytes_recv`` (``bytes`` 0);
- ``dns`` for queries and answers, ``accept`` for inbound connections,
  ``sendto`` for the first datagram of a socket to a destination.

The monitor feeds it and hands the events to NetmonStats.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .dns import parse_message

MAX_SOCKETS = 65536
CLOSE_GRACE = 2.0
"""Seconds after its release that a socket's counts are final when no TCP close
was seen (data still leaving an orphaned socket is counted meanwhile)."""
CONNECT_WAIT = 3.0
"""Seconds a TCP connect waits for its outcome before it is reported as in progress."""
KPROBE_IDLE = 60.0
"""Seconds after which a kprobe counter of no known socket, unchanged, is dropped (it
starts again from zero if the socket moves again, so nothing is lost)."""


@dataclass
class FlowRow:
    """Counters of one flow map entry as read now (lifetime values)."""

    key: Hashable
    cookie: int
    family: int
    remote_addr: str
    remote_port: int
    local_port: int
    proto: int
    bytes_out: int
    bytes_in: int
    pkts_out: int = 0
    pkts_in: int = 0
    pid: int = 0
    comm: str = ""
    kprobe: bool = False


@dataclass
class SockInfo:
    """What is known of one socket of the agent."""

    cookie: int
    pid: int = 0
    uid: int | None = None
    comm: str = ""
    family: int = 0
    proto: int = 0
    remote_addr: str = ""
    remote_port: int = 0
    local_port: int = 0
    opened: float = 0.0
    released_at: float | None = None
    tcp_closed: bool = False
    pending: dict[str, Any] | None = None
    pending_since: float = 0.0
    pending_tid: int = 0
    # (family, local port, remote addr, remote port) under which _by_tuple knows it
    tuples: set[tuple[int, int, str, int]] = field(default_factory=set)
    # flow key -> [bytes_out, bytes_in, remote_addr, remote_port, family, local_port]
    flows: dict[Hashable, list[Any]] = field(default_factory=dict)
    # kprobe counter keys of this socket (one per process that used it)
    kp_keys: set[Hashable] = field(default_factory=set)


class SocketTracker:
    """Joins records and counters by socket cookie; see the module docstring."""

    def __init__(
        self,
        deferred_connects: bool = False,
        kprobe_bytes: bool = False,
        close_grace: float = CLOSE_GRACE,
        connect_wait: float = CONNECT_WAIT,
        kprobe_idle: float = KPROBE_IDLE,
    ) -> None:
        self.deferred_connects = deferred_connects
        self.kprobe_bytes = kprobe_bytes
        self.close_grace = close_grace
        self.connect_wait = connect_wait
        self.kprobe_idle = kprobe_idle
        self._wall_offset = time.time() - time.monotonic()
        self._sockets: OrderedDict[int, SockInfo] = OrderedDict()
        self._last: dict[Hashable, tuple[int, int, int, int]] = {}
        self._by_tid: dict[int, int] = {}
        self._by_tuple: dict[tuple[int, int, str, int], int] = {}
        # kprobe counter keys of no known socket -> when their counts last moved
        self._kp_loose: dict[Hashable, float] = {}
        self.unparsed_dns = 0
        self._handlers = {
            ev.EV_CONNECT: self._on_connect,
            ev.EV_BLOCKED: self._on_blocked,
            ev.EV_SENDTO: self._on_sendto,
            ev.EV_RELEASE: self._on_release,
            ev.EV_DNS: self._on_dns,
            ev.EV_TCP_STATE: self._on_tcp_state,
            ev.EV_ACCEPT: self._on_accept,
            ev.EV_KP_CONNECT: self._on_kp_connect,
        }

    # ---- helpers -------------------------------------------------------------------------------

    def _ts(self, ts_ns: int) -> float:
        return round(ts_ns / 1e9 + self._wall_offset, 6)

    def _sock(self, cookie: int) -> SockInfo:
        sock = self._sockets.get(cookie)
        if sock is None:
            sock = SockInfo(cookie=cookie, opened=time.monotonic())
            self._sockets[cookie] = sock
            while len(self._sockets) > MAX_SOCKETS:
                _, old = self._sockets.popitem(last=False)
                self._forget(old)
        return sock

    def _forget(self, sock: SockInfo) -> None:
        for key in (*sock.flows, *sock.kp_keys):
            self._last.pop(key, None)
        # Only the entries still naming this socket: a tuple may have moved to a newer one.
        for index in sock.tuples:
            if self._by_tuple.get(index) == sock.cookie:
                del self._by_tuple[index]
        self._unpend(sock)

    def _unpend(self, sock: SockInfo) -> None:
        if sock.pending_tid and self._by_tid.get(sock.pending_tid) == sock.cookie:
            del self._by_tid[sock.pending_tid]

    @staticmethod
    def _owner(sock: SockInfo | None, record: ev.Event | None = None) -> dict[str, Any]:
        pid = sock.pid if sock is not None and sock.pid else (record.pid if record else 0)
        comm = sock.comm if sock is not None and sock.comm else (record.comm if record else "")
        owner: dict[str, Any] = {"pid": pid, "comm": comm}
        uid = sock.uid if sock is not None else None
        if uid is None and record is not None and record.pid:
            uid = record.uid
        if uid is not None:
            owner["uid"] = uid
        return owner

    def _base(
        self, kind: str, ts: float, owner: dict[str, Any], family: int, proto: int
    ) -> dict[str, Any]:
        return {
            "ts": ts,
            **owner,
            "source": "ebpf",
            "event": kind,
            "family": ev.family_name(family),
            "proto": ev.proto_name(proto),
        }

    def _adopt(self, sock: SockInfo, record: ev.Event) -> None:
        """Fill the owner of a socket from a record made in process context."""
        if record.pid and not sock.pid:
            sock.pid, sock.uid, sock.comm = record.pid, record.uid, record.comm
        if not sock.family:
            sock.family, sock.proto = record.family, record.proto

    # ---- ring buffer records -------------------------------------------------------------------

    def on_record(self, record: ev.Event) -> list[dict[str, Any]]:
        """The events one record makes (possibly none, e.g. a connect held back)."""
        handler = self._handlers.get(record.type)
        return handler(record) if handler is not None else []

    def _endpoint_event(self, kind: str, record: ev.Event, sock: SockInfo | None) -> dict[str, Any]:
        out = self._base(
            kind, self._ts(record.ts_ns), self._owner(sock, record), record.family, record.proto
        )
        out.update(
            remote_addr=record.remote_addr,
            remote_port=record.remote_port,
            bytes=0,
            socket=record.cookie,
        )
        return out

    def _on_connect(self, record: ev.Event) -> list[dict[str, Any]]:
        sock = self._sock(record.cookie)
        # A socket connected again (UDP re-association) is a new peer.
        sock.pid, sock.uid, sock.comm = record.pid, record.uid, record.comm
        sock.family, sock.proto = record.family, record.proto
        sock.remote_addr, sock.remote_port = record.remote_addr, record.remote_port
        out = self._endpoint_event("connect", record, sock)
        if self.deferred_connects and record.proto == socket.IPPROTO_TCP:
            sock.pending = out
            sock.pending_since = time.monotonic()
            sock.pending_tid = record.tid
            self._by_tid[record.tid] = record.cookie
            return []
        if record.proto != socket.IPPROTO_TCP:
            out["result"] = 0  # a UDP connect only sets the default peer
        return [out]

    def _on_blocked(self, record: ev.Event) -> list[dict[str, Any]]:
        out = self._endpoint_event("blocked", record, None)
        out.update(result="EPERM", reason="egress policy")
        return [out]

    def _on_sendto(self, record: ev.Event) -> list[dict[str, Any]]:
        sock = self._sock(record.cookie)
        self._adopt(sock, record)
        return [self._endpoint_event("sendto", record, sock)]

    def _on_release(self, record: ev.Event) -> list[dict[str, Any]]:
        sock = self._sock(record.cookie)
        self._adopt(sock, record)
        sock.released_at = time.monotonic()
        return []

    def _on_dns(self, record: ev.Event) -> list[dict[str, Any]]:
        fields = parse_message(record.payload, record.proto)
        if fields is None:
            self.unparsed_dns += 1
            return []
        sock = self._sockets.get(record.cookie)
        out = self._endpoint_event("dns", record, sock)
        out.update(fields, size=record.payload_size)
        if record.local_port:
            out["local_port"] = record.local_port
        return [out]

    def _on_tcp_state(self, record: ev.Event) -> list[dict[str, Any]]:
        cookie = record.cookie or self._by_tuple.get(
            (record.family, record.local_port, record.remote_addr, record.remote_port), 0
        )
        sock = self._sockets.get(cookie) if cookie else None
        if sock is None:
            return []
        if not sock.local_port:
            sock.local_port = record.local_port
        out: list[dict[str, Any]] = []
        if record.value2 == ev.TCP_ESTABLISHED and sock.pending is not None:
            out.append(self._settle(sock, 0, local_port=record.local_port))
        elif record.value2 == ev.TCP_CLOSE:
            sock.tcp_closed = True
            if sock.pending is not None and record.value == ev.TCP_SYN_SENT:
                # refused (RST) or given up: the tracepoint does not say which
                out.append(self._settle(sock, "failed"))
        return out

    def _on_accept(self, record: ev.Event) -> list[dict[str, Any]]:
        out = self._endpoint_event("accept", record, None)
        out.update(pid=0, comm="", local_port=record.local_port)
        out.pop("uid", None)
        return [out]

    def _on_kp_connect(self, record: ev.Event) -> list[dict[str, Any]]:
        cookie = record.cookie or self._by_tid.get(record.tid)
        sock = self._sockets.get(cookie) if cookie else None
        if sock is None or sock.pending is None or record.value >= 0:
            return []
        code = -record.value
        return [self._settle(sock, errno.errorcode.get(code, code), errno=code)]

    def _settle(self, sock: SockInfo, result: Any, **extra: Any) -> dict[str, Any]:
        assert sock.pending is not None
        out = {**sock.pending, "result": result, **{k: v for k, v in extra.items() if v}}
        sock.pending = None
        self._unpend(sock)
        return out

    # ---- counters ------------------------------------------------------------------------------

    def on_flows(self, rows: Iterable[FlowRow]) -> list[dict[str, Any]]:
        """send/recv events for the growth of each counter since the last read."""
        now = time.time()
        out: list[dict[str, Any]] = []
        for row in rows:
            last = self._last.get(row.key, (0, 0, 0, 0))
            current = (row.bytes_out, row.bytes_in, row.pkts_out, row.pkts_in)
            if current == last:
                continue
            self._last[row.key] = current
            sock = None
            if row.kprobe:
                self._note_kprobe_row(row)
                if row.proto != socket.IPPROTO_TCP:
                    continue  # UDP: the cgroup tier reports it per destination
            else:
                sock = self._sock(row.cookie)
                if not sock.family:
                    sock.family, sock.proto = row.family, row.proto
                if not sock.local_port:
                    sock.local_port = row.local_port
                sock.flows[row.key] = [
                    row.bytes_out,
                    row.bytes_in,
                    row.remote_addr,
                    row.remote_port,
                    row.family,
                    row.local_port,
                ]
                if row.proto == socket.IPPROTO_TCP:
                    index = (row.family, row.local_port, row.remote_addr, row.remote_port)
                    self._by_tuple[index] = row.cookie
                    sock.tuples.add(index)
                if self.kprobe_bytes and row.proto == socket.IPPROTO_TCP:
                    continue  # the kprobe tier reports these with the caller's pid
            owner = {"pid": row.pid, "comm": row.comm} if row.kprobe else self._owner(sock)
            for kind, delta, packets in (
                ("send", current[0] - last[0], current[2] - last[2]),
                ("recv", current[1] - last[1], current[3] - last[3]),
            ):
                if delta <= 0:
                    continue
                event = self._base(kind, now, owner, row.family, row.proto)
                event.update(
                    remote_addr=row.remote_addr,
                    remote_port=row.remote_port,
                    local_port=row.local_port,
                    bytes=delta,
                    socket=row.cookie,
                )
                if packets > 0:
                    event["packets"] = packets
                out.append(event)
        return out

    def _note_kprobe_row(self, row: FlowRow) -> None:
        """Remember whose socket a kprobe counter is, to delete it when that one ends."""
        sock = self._sockets.get(row.cookie) if row.cookie else None
        if sock is not None:
            sock.kp_keys.add(row.key)
            self._kp_loose.pop(row.key, None)
        else:
            self._kp_loose[row.key] = time.monotonic()

    def forget_flow(self, key: Hashable) -> None:
        """The flow map entry ``key`` was deleted: its next counts start from zero."""
        self._last.pop(key, None)

    # ---- time ----------------------------------------------------------------------------------

    def due(self, final: bool = False) -> tuple[list[dict[str, Any]], list[Hashable]]:
        """Events that waited long enough, and the counter keys (flow and kprobe) of
        sockets now finished, for the caller to delete from the maps.

        Call it right after :meth:`on_flows`, so that a finished socket's last
        bytes are out before its ``close``. ``final``: the monitor stops, so
        every released socket is finished now.
        """
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        finished_keys: list[Hashable] = []
        for cookie, sock in list(self._sockets.items()):
            waited = now - sock.pending_since >= self.connect_wait
            if sock.pending is not None and (final or waited):
                out.append(self._settle(sock, 0, in_progress=True))
            if sock.released_at is None:
                continue
            done = (
                final
                or sock.proto != socket.IPPROTO_TCP
                or sock.tcp_closed
                or now - sock.released_at >= self.close_grace
            )
            if not done:
                continue
            out.extend(self._close_events(sock))
            finished_keys.extend((*sock.flows, *sock.kp_keys))
            self._forget(sock)
            del self._sockets[cookie]
        for key, moved in list(self._kp_loose.items()):
            if final or now - moved >= self.kprobe_idle:
                finished_keys.append(key)
                del self._kp_loose[key]
        return out, finished_keys

    def _close_events(self, sock: SockInfo) -> list[dict[str, Any]]:
        ts = time.time()
        owner = self._owner(sock)
        duration_ms = int((time.monotonic() - sock.opened) * 1000)
        peers = list(sock.flows.values())
        if not peers and sock.remote_addr:
            peers = [[0, 0, sock.remote_addr, sock.remote_port, sock.family, sock.local_port]]
        out = []
        for sent, received, addr, port, family, local_port in peers:
            event = self._base("close", ts, owner, family, sock.proto)
            event.update(
                remote_addr=addr,
                remote_port=port,
                bytes=0,
                bytes_sent=sent,
                bytes_recv=received,
                duration_ms=duration_ms,
                reason="close",
                socket=sock.cookie,
            )
            if local_port:
                event["local_port"] = local_port
            out.append(event)
        return out

    @property
    def open_sockets(self) -> int:
        """Sockets known and not finished."""
        return len(self._sockets)
