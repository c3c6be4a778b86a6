"""NetmonStats: the running totals of every netmon source.

Sources (the preload log, eBPF, netns) hand their events, one JSON-able dict
each in the format of DESIGN.md, to :meth:`NetmonStats.ingest`. The rules
that let the sources agree on what a number means:

- a ``connect`` event is one connection attempt; it failed unless its
  ``result`` is 0 (an errno name such as ``"ECONNREFUSED"`` otherwise);
- an ``accept`` event is one inbound connection;
- only ``send`` and ``recv`` events carry traffic: their ``bytes`` add to the
  sent and received totals. ``close`` lines repeat lifetime totals
  (``bytes_sent``/``bytes_recv``) for reading, and are not counted again;
- ``dns`` events teach host names: each address in ``answers`` is named by
  ``host``, and later events to that address are credited to it;
- ``blocked`` events are connections a policy refused.

Bytes a source could not see (:mod:`.coverage` finds them) are unknown, not 0:
:meth:`NetmonStats.set_unknown` names the processes and endpoints concerned, whose
byte counts then read None, as do the totals unless a source that counts every
byte runs; ``bytes_counted`` keeps what was counted.

Everything is bounded: the event ring, and the per-target, per-process and
host tables (least recently seen entries make way), so a long run cannot grow
the runner without limit.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RING_SIZE = 5000
MAX_TARGETS = 4096
MAX_PROCESSES = 4096
MAX_HOSTS = 4096
# Beyond this many distinct addresses the count stops growing (and says so):
# a scanner-like agent must not turn the set into the runner's biggest object.
MAX_UNIQUE_ADDRESSES = 65536
TOP_TARGETS = 10
TOP_PROCESSES = 20
TRAFFIC_BUCKET_SECS = 10
TRAFFIC_BUCKETS = 30
"""The traffic history: five minutes in ten-second buckets (the dashboard's sparkline)."""

_TRAFFIC = frozenset({"connect", "accept", "send", "recv", "close", "blocked"})


@dataclass
class TargetStats:
    """One remote endpoint: outbound ``addr:port``, or the peers of a local listening port."""

    target: str
    addr: str
    port: int
    direction: str  # "out" (we connected) or "in" (we accepted)
    host: str | None = None
    connections: int = 0
    failed: int = 0
    blocked: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass
class ProcessStats:
    """One process seen by a source; ``comm`` is the latest name it had."""

    pid: int
    comm: str
    events: int = 0
    connections: int = 0
    failed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _int(value: Any) -> int:
    """A non-negative count from an event field; anything else counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def _port(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        return None
    return value


def _succeeded(result: Any) -> bool:
    # The preload library writes 0 on success and an errno name (or number) otherwise;
    # an event without a result is an observation of a connection that happened.
    return result is None or result == 0 or result == "0"


def format_endpoint(addr: str, port: int) -> str:
    """``addr:port``, with IPv6 addresses in brackets so the port stays readable."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _bump(table: OrderedDict[Any, Any], key: Any, limit: int) -> None:
    """Mark ``key`` as most recently seen and evict the oldest entries over ``limit``."""
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


class NetmonStats:
    """Aggregates netmon events from any source. Safe to feed from several threads."""

    def __init__(
        self,
        mode: str | None = None,
        log_file: Path | None = None,
        ring_size: int = RING_SIZE,
    ) -> None:
        self.mode = mode
        self.log_file = log_file
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._ring: deque[dict[str, Any]] = deque(maxlen=ring_size)
        self._targets: OrderedDict[str, TargetStats] = OrderedDict()
        self._processes: OrderedDict[int, ProcessStats] = OrderedDict()
        self._hosts: OrderedDict[str, str] = OrderedDict()
        # (peer addr, peer port, our port) of accepted connections, so that their
        # send/recv lines land on the inbound target and not on an ephemeral port.
        self._inbound: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._addresses: set[str] = set()
        self._by_source: Counter[str] = Counter()
        self._by_type: Counter[str] = Counter()
        self.events = 0
        self.malformed = 0
        self.connections = 0
        self.failed_connections = 0
        self.accepted_connections = 0
        self.blocked = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.dns_lookups = 0
        self.first_event_ts: float | None = None
        self.last_event_ts: float | None = None
        # bucket number (ts // TRAFFIC_BUCKET_SECS) -> [bytes, events], the newest last
        self._traffic: OrderedDict[int, list[int]] = OrderedDict()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._unknown_pids: frozenset[int] = frozenset()
        self._unknown_targets: frozenset[str] = frozenset()
        self._totals_unknown = False

    def set_unknown(self, pids: set[int], targets: set[str], totals: bool) -> None:
        """Bytes not seen: those of ``pids`` and of ``targets`` (``addr:port``), and the
        totals when ``totals`` (no source counted them either)."""
        with self._lock:
            self._unknown_pids = frozenset(pids)
            self._unknown_targets = frozenset(targets)
            self._totals_unknown = totals

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with a copy of every event taken in (from the thread that
        delivered it, after the counts include it); it must be quick and not raise."""
        self._listeners.append(listener)

    # ---- input ---------------------------------------------------------------------------------

    def count_malformed(self, count: int = 1) -> None:
        """Note input a source could not turn into an event (shown in the status)."""
        with self._lock:
            self.malformed += count

    def ingest(self, event: Mapping[str, Any]) -> bool:
        """Add one event; returns False (and counts it as malformed) if it is not one."""
        kind = event.get("event") if isinstance(event, Mapping) else None
        if not isinstance(kind, str) or not kind:
            self.count_malformed()
            return False
        stored = dict(event)
        with self._lock:
            self._ingest(stored, kind)
        for listener in self._listeners:
            listener(dict(stored))
        return True

    def _ingest(self, ev: dict[str, Any], kind: str) -> None:
        ts = ev.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            ts = time.time()
            ev["ts"] = ts
        ts = float(ts)
        self.events += 1
        self.first_event_ts = ts if self.first_event_ts is None else min(self.first_event_ts, ts)
        self.last_event_ts = ts if self.last_event_ts is None else max(self.last_event_ts, ts)
        self._by_source[str(ev.get("source", "unknown"))] += 1
        self._by_type[kind] += 1

        if kind == "dns":
            self._learn_hosts(ev)
        addr = ev.get("remote_addr")
        port = _port(ev.get("remote_port"))
        target = None
        if kind in _TRAFFIC and isinstance(addr, str) and addr and port is not None:
            if ev.get("host") is None and addr in self._hosts:
                ev["host"] = self._hosts[addr]
            elif isinstance(ev.get("host"), str):
                self._remember_host(addr, ev["host"])
            if len(self._addresses) < MAX_UNIQUE_ADDRESSES:
                self._addresses.add(addr)
            target = self._target_for(ev, kind, addr, port, ts)

        proc = self._process_for(ev, ts)
        sent = _int(ev.get("bytes")) if kind == "send" else 0
        received = _int(ev.get("bytes")) if kind == "recv" else 0
        failed = kind == "connect" and not _succeeded(ev.get("result"))
        self.bytes_sent += sent
        self.bytes_received += received
        self._count_traffic(ts, sent + received)
        if kind == "connect":
            self.connections += 1
            self.failed_connections += failed
        elif kind == "accept":
            self.accepted_connections += 1
        elif kind == "blocked":
            self.blocked += 1
        elif kind == "dns" and ev.get("kind") in ("query", "getaddrinfo"):
            self.dns_lookups += 1
        for stats in (target, proc):
            if stats is None:
                continue
            stats.bytes_sent += sent
            stats.bytes_received += received
            if kind in ("connect", "accept"):
                stats.connections += 1
                stats.failed += failed
        if target is not None and kind == "blocked":
            target.blocked += 1
        self._ring.append(ev)

    def _count_traffic(self, ts: float, nbytes: int) -> None:
        bucket = int(ts // TRAFFIC_BUCKET_SECS)
        counts = self._traffic.get(bucket)
        if counts is None:
            counts = self._traffic[bucket] = [0, 0]
            # Events arrive roughly in time order; one from far back may add an old bucket.
            if len(self._traffic) > TRAFFIC_BUCKETS:
                del self._traffic[min(self._traffic)]
        counts[0] += nbytes
        counts[1] += 1

    def _traffic_history(self, now: float) -> dict[str, Any]:
        last = int(now // TRAFFIC_BUCKET_SECS)
        first = last - TRAFFIC_BUCKETS + 1
        per = [self._traffic.get(b, (0, 0)) for b in range(first, last + 1)]
        return {
            "bucket_secs": TRAFFIC_BUCKET_SECS,
            "until": (last + 1) * TRAFFIC_BUCKET_SECS,
            "bytes": [c[0] for c in per],
            "events": [c[1] for c in per],
        }

    def _learn_hosts(self, ev: dict[str, Any]) -> None:
        host = ev.get("host")
        answers = ev.get("answers")
        if not isinstance(host, str) or not host or not isinstance(answers, list):
            return
        for answer in answers:
            if isinstance(answer, str) and answer:
                self._remember_host(answer, host)

    def _remember_host(self, addr: str, host: str) -> None:
        self._hosts[addr] = host
        _bump(self._hosts, addr, MAX_HOSTS)
        # An IPv4 peer is also seen as ::ffff:a.b.c.d on dual-stack sockets.
        if ":" not in addr:
            self._hosts[f"::ffff:{addr}"] = host
            _bump(self._hosts, f"::ffff:{addr}", MAX_HOSTS)

    def _target_for(
        self, ev: dict[str, Any], kind: str, addr: str, port: int, ts: float
    ) -> TargetStats:
        local = _port(ev.get("local_port"))
        peer = (addr, port, local) if local is not None else None
        if kind == "accept" and peer is not None:
            key = f"{addr} -> :{local}"
            self._inbound[peer] = key
            _bump(self._inbound, peer, MAX_TARGETS)
        elif peer is not None and peer in self._inbound:
            key = self._inbound[peer]
        else:
            key = format_endpoint(addr, port)
        target = self._targets.get(key)
        if target is None:
            inbound = key != format_endpoint(addr, port)
            target = TargetStats(
                target=key,
                addr=addr,
                port=local if inbound and local is not None else port,
                direction="in" if inbound else "out",
                first_seen=ts,
            )
            self._targets[key] = target
        _bump(self._targets, key, MAX_TARGETS)
        target.last_seen = max(target.last_seen, ts)
        if isinstance(ev.get("host"), str):
            target.host = ev["host"]
        return target

    def _process_for(self, ev: dict[str, Any], ts: float) -> ProcessStats | None:
        pid = ev.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            return None
        comm = ev.get("comm")
        proc = self._processes.get(pid)
        if proc is None:
            proc = ProcessStats(pid=pid, comm="", first_seen=ts)
            self._processes[pid] = proc
        _bump(self._processes, pid, MAX_PROCESSES)
        if isinstance(comm, str) and comm:
            proc.comm = comm
        proc.events += 1
        proc.last_seen = max(proc.last_seen, ts)
        return proc

    # ---- output --------------------------------------------------------------------------------

    def targets(self) -> list[dict[str, Any]]:
        """Every tracked target, busiest first (bytes, then connections)."""
        with self._lock:
            items = sorted(self._targets.values(), key=_busiest, reverse=True)
            return [self._shown(t) for t in items]

    def processes(self) -> list[dict[str, Any]]:
        """Every tracked process, busiest first (bytes, then connections)."""
        with self._lock:
            items = sorted(self._processes.values(), key=_busiest, reverse=True)
            return [self._shown(p) for p in items]

    def _shown(self, item: TargetStats | ProcessStats) -> dict[str, Any]:
        shown = item.as_dict()
        unknown = (
            item.target in self._unknown_targets
            if isinstance(item, TargetStats)
            else item.pid in self._unknown_pids
        )
        if unknown:
            shown["bytes_sent"] = shown["bytes_received"] = None
        return shown

    def received_by(self, pids: set[int]) -> int | None:
        """Bytes received so far by the processes ``pids`` (those a source attributed);
        None when some of theirs went unseen."""
        with self._lock:
            if self._unknown_pids & pids:
                return None
            table = self._processes
            return sum(table[pid].bytes_received for pid in pids if pid in table)

    def recent(self, count: int, pids: Collection[int] | None = None) -> list[dict[str, Any]]:
        """The last ``count`` events (of the processes ``pids`` only, when given), newest
        last (copies: callers may change them)."""
        if count <= 0:
            return []
        with self._lock:
            newest_first: Iterable[dict[str, Any]] = reversed(self._ring)
            if pids is not None:
                newest_first = (ev for ev in newest_first if ev.get("pid") in pids)
            tail = list(itertools.islice(newest_first, count))
        return [dict(ev) for ev in reversed(tail)]

    def status_of(self, pids: Collection[int]) -> dict[str, Any]:
        """The totals of the processes ``pids`` alone (one agent's share): their counters,
        and the targets of their events still in the ring."""
        with self._lock:
            procs = [self._processes[pid] for pid in pids if pid in self._processes]
            events = [ev for ev in self._ring if ev.get("pid") in pids]
        targets: Counter[str] = Counter()
        for ev in events:
            addr, port = ev.get("remote_addr"), _port(ev.get("remote_port"))
            if ev.get("event") in _TRAFFIC and isinstance(addr, str) and port is not None:
                targets[format_endpoint(addr, port)] += 1
        return {
            "mode": self.mode,
            "events": sum(p.events for p in procs),
            "total_connections": sum(p.connections for p in procs),
            "failed_connections": sum(p.failed for p in procs),
            "bytes_sent": sum(p.bytes_sent for p in procs),
            "bytes_received": sum(p.bytes_received for p in procs),
            "processes": [p.as_dict() for p in sorted(procs, key=_busiest, reverse=True)],
            "top_targets": [
                {"target": target, "events": n} for target, n in targets.most_common(TOP_TARGETS)
            ],
        }

    def status(self) -> dict[str, Any]:
        """A JSON-able summary: totals, top targets and processes, where the data comes from."""
        with self._lock:
            # the top few only: same order as sorted(..., reverse=True)[:n]
            targets = heapq.nlargest(TOP_TARGETS, self._targets.values(), key=_busiest)
            procs = heapq.nlargest(TOP_PROCESSES, self._processes.values(), key=_busiest)
            return {
                "mode": self.mode,
                "sources": sorted(self._by_source),
                "log_file": str(self.log_file) if self.log_file is not None else None,
                "started_at": self.started_at,
                "events": self.events,
                "events_by_source": dict(self._by_source),
                "events_by_type": dict(self._by_type),
                "malformed_lines": self.malformed,
                "total_connections": self.connections,
                "failed_connections": self.failed_connections,
                "accepted_connections": self.accepted_connections,
                "blocked_connections": self.blocked,
                "unique_addresses": len(self._addresses),
                "unique_addresses_capped": len(self._addresses) >= MAX_UNIQUE_ADDRESSES,
                "bytes_sent": None if self._totals_unknown else self.bytes_sent,
                "bytes_received": None if self._totals_unknown else self.bytes_received,
                "bytes_counted": {"sent": self.bytes_sent, "received": self.bytes_received},
                "bytes_unknown_pids": sorted(self._unknown_pids),
                "dns_lookups": self.dns_lookups,
                "hosts_known": len(self._hosts),
                "target_count": len(self._targets),
                "top_targets": [self._shown(t) for t in targets],
                "process_count": len(self._processes),
                "processes": [self._shown(p) for p in procs],
                "ring_events": len(self._ring),
                "ring_capacity": self._ring.maxlen,
                "first_event_ts": self.first_event_ts,
                "last_event_ts": self.last_event_ts,
                "traffic": self._traffic_history(time.time()),
            }


def _busiest(item: TargetStats | ProcessStats) -> tuple[int, int]:
    return (item.bytes_sent + item.bytes_received, item.connections)
