"""Turning a sandbox's NFLOG packets and conntrack ends into netmon events.

The monitor runs in a thread that lives inside the sandbox's network
namespace (the thread that created it), so ``/proc/thread-self/net/tcp``
and friends list the sandbox's sockets. Events have the shape of DESIGN.md
with ``source: "netns"``:

- ``connect``: a new outbound flow the policy let through (logged by the
  firewall's ``a:`` rules), with ``rule`` when a spec decided it;
- ``blocked``: an attempt the policy refused (``d:`` rules), with ``rule``
  and ``reason``;
- ``send`` / ``recv``: bytes of a flow each way since the last report, from
  conntrack's counters, read every :data:`POLL_SECS` while flows are open
  and once more when conntrack forgets a flow (then also ``close`` with the
  totals). These are IP-level bytes (IP and TCP/UDP headers included,
  handshake and ACK packets too), not payload bytes.

Who: ``uid`` is the sending socket's owner (the kernel puts it in each logged
packet). ``pid``/``comm`` come from matching the packet's ports to a socket
in the namespace and that socket's inode to a process's fd; that works while
the socket exists when the monitor reads the packet (allowed connections,
UDP sockets). A refused TCP connect usually has closed its socket by then:
its ``pid`` is null, its ``uid`` is known.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..policy import Rule
from . import firewall
from .nfnetlink import ConntrackSocket, NflogSocket

MAX_FLOWS = 4096
POLL_SECS = 2.0
MAX_LOOKUPS_PER_SEC = 50
RECENT = 200

Event = dict[str, Any]

_REASONS = {
    firewall.IMPLICIT_HOST: "the host's own addresses are not reachable from the sandbox",
    firewall.IMPLICIT_POOL: "other sandboxes are not reachable",
    firewall.IMPLICIT_DNS: "DNS must go through the sandbox's forwarder",
    firewall.DEFAULT: "the policy's default is deny",
}


def _hex_port(field: str) -> int:
    return int(field.rsplit(":", 1)[1], 16)


def socket_inode(proto: str, local_port: int, remote_port: int | None) -> int | None:
    """Inode of the calling thread's namespace socket with these ports, or None."""
    for suffix in ("", "6"):
        try:
            lines = Path(f"/proc/thread-self/net/{proto}{suffix}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            try:
                if _hex_port(parts[1]) != local_port:
                    continue
                if remote_port and _hex_port(parts[2]) not in (remote_port, 0):
                    continue
                inode = int(parts[9])
            except ValueError:
                continue
            if inode:
                return inode
    return None


def pid_of_inode(inode: int, netns_inode: int) -> int | None:
    """The pid of a process in the namespace ``netns_inode`` that holds socket ``inode``."""
    target = f"socket:[{inode}]"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino != netns_inode:
                continue
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) == target:
                        return int(entry.name)
        except OSError:
            continue
    return None


def comm_of(pid: int | None) -> str | None:
    """The command name of ``pid``, None if unknown."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


class Monitor:
    """Reads the sandbox's NFLOG group and conntrack ends; calls ``emit`` per event.

    Built by the namespace thread (its sockets belong to the namespace);
    :meth:`run` is that thread's loop until :meth:`stop`.
    """

    def __init__(
        self,
        name: str,
        netns_inode: int,
        gateway: str,
        rules: dict[int, Rule],
        emit: Callable[[Event], None] | None,
    ) -> None:
        self.name = name
        self.netns_inode = netns_inode
        self.gateway = gateway
        self.rules = rules
        self.emit = emit
        self.nflog = NflogSocket(firewall.NFLOG_GROUP)
        self.conntrack = ConntrackSocket()
        self.conntrack_dump = ConntrackSocket(events=False)
        # Counters already reported per flow: (bytes out, bytes in, packets out, packets in).
        self._reported: dict[tuple, tuple[int, int, int, int]] = {}
        self.recent: collections.deque[Event] = collections.deque(maxlen=RECENT)
        self.counts: collections.Counter[str] = collections.Counter()
        self._flows: collections.OrderedDict[tuple, tuple[int | None, str | None, Any]] = (
            collections.OrderedDict()
        )
        self._lookups: collections.deque[float] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread)."""
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def run(self) -> None:
        """Read events until stopped, then close the sockets."""
        sel = selectors.DefaultSelector()
        sel.register(self.nflog.fileno(), selectors.EVENT_READ, self._on_nflog)
        sel.register(self.conntrack.fileno(), selectors.EVENT_READ, self._on_conntrack)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        next_poll = time.monotonic() + POLL_SECS
        try:
            while not self._stop:
                timeout = max(next_poll - time.monotonic(), 0) if self._reported else None
                for key, _ in sel.select(timeout):
                    if key.data is not None:
                        self._guarded(key.data)
                if self._reported and time.monotonic() >= next_poll:
                    self._guarded(self._poll)
                    next_poll = time.monotonic() + POLL_SECS
        finally:
            sel.close()
            self.nflog.close()
            self.conntrack.close()
            self.conntrack_dump.close()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except OSError as exc:
            # ENOBUFS: the kernel dropped messages we were too slow for.
            self.counts["read_errors"] += 1
            self.counts[f"errno_{exc.errno}"] += 1

    # ---- sources ---------------------------------------------------------------------------

    def _on_nflog(self) -> None:
        for packet in self.nflog.read():
            prefix = packet.pop("prefix", "")
            allowed = prefix.startswith(firewall.ALLOWED)
            tag = prefix[2:]
            pid = self._find_pid(packet)
            event: Event = {
                "event": "connect" if allowed else "blocked",
                "pid": pid,
                "comm": comm_of(pid),
                "uid": packet.pop("uid"),
                **{k: v for k, v in packet.items() if k != "gid"},
            }
            rule = self.rules.get(int(tag)) if tag.isdigit() else None
            if rule is not None:
                event["rule"] = f"{rule.action} {rule.spec}"
            if not allowed:
                event["result"] = "EHOSTUNREACH"
                event["reason"] = (
                    f"denied by --deny {rule.spec}" if rule is not None else _REASONS.get(tag, tag)
                )
            key = self._flow_key(event)
            if allowed:
                with self._lock:
                    self._flows[key] = (pid, event["comm"], event["uid"])
                    while len(self._flows) > MAX_FLOWS:
                        self._flows.popitem(last=False)
                if len(self._reported) < MAX_FLOWS:
                    self._reported.setdefault(key, (0, 0, 0, 0))
            self._emit(event)

    @staticmethod
    def _flow_key(flow: dict[str, Any]) -> tuple:
        return (flow["proto"], flow["local_port"], flow["remote_addr"], flow["remote_port"])

    def _on_conntrack(self) -> None:
        for flow in self.conntrack.read():
            if self._is_dns(flow):
                continue
            key = self._flow_key(flow)
            base = self._report(flow, key)
            self._reported.pop(key, None)
            with self._lock:
                self._flows.pop(key, None)
            self._emit(
                {
                    **base,
                    "event": "close",
                    "bytes_sent": flow["bytes_out"],
                    "bytes_recv": flow["bytes_in"],
                    "packets_sent": flow["packets_out"],
                    "packets_recv": flow["packets_in"],
                }
            )

    def _poll(self) -> None:
        live = set()
        for flow in self.conntrack_dump.flows():
            if self._is_dns(flow):
                continue
            key = self._flow_key(flow)
            live.add(key)
            self._report(flow, key)
        # Flows conntrack dropped without an event we saw: stop polling for them.
        for key in set(self._reported) - live:
            del self._reported[key]

    def _is_dns(self, flow: dict[str, Any]) -> bool:
        # Queries to the DNS forwarder: its own `dns` events say more.
        return flow["remote_addr"] == self.gateway and flow["remote_port"] == 53

    def _report(self, flow: dict[str, Any], key: tuple) -> Event:
        """Emit send/recv for what ``flow`` moved since the last report; returns the base."""
        with self._lock:
            pid, comm, uid = self._flows.get(key, (None, None, None))
        base: Event = {
            "pid": pid,
            "comm": comm,
            "uid": uid,
            "family": flow["family"],
            "proto": flow["proto"],
            "local_addr": flow["local_addr"],
            "local_port": flow["local_port"],
            "remote_addr": flow["remote_addr"],
            "remote_port": flow["remote_port"],
        }
        now = (flow["bytes_out"], flow["bytes_in"], flow["packets_out"], flow["packets_in"])
        before = self._reported.get(key, (0, 0, 0, 0))
        sent, received = now[0] - before[0], now[1] - before[1]
        if sent > 0:
            self._emit({**base, "event": "send", "bytes": sent, "packets": now[2] - before[2]})
        if received > 0:
            self._emit({**base, "event": "recv", "bytes": received, "packets": now[3] - before[3]})
        if len(self._reported) < MAX_FLOWS or key in self._reported:
            self._reported[key] = now
        return base

    def _find_pid(self, packet: dict[str, Any]) -> int | None:
        if packet.get("proto") not in ("tcp", "udp") or not packet.get("local_port"):
            return None
        # Finding a pid reads every process's fds: bounded so that a flood of
        # new flows costs the runner little (the event keeps its uid either way).
        now = time.monotonic()
        while self._lookups and now - self._lookups[0] > 1.0:
            self._lookups.popleft()
        if len(self._lookups) >= MAX_LOOKUPS_PER_SEC:
            return None
        self._lookups.append(now)
        inode = socket_inode(packet["proto"], packet["local_port"], packet.get("remote_port"))
        return pid_of_inode(inode, self.netns_inode) if inode else None

    def emit_event(self, event: Event) -> None:
        """Stamp and publish an event from another part of the sandbox (the DNS forwarder)."""
        self._emit(event)

    def _emit(self, event: Event) -> None:
        event.setdefault("ts", time.time())
        event["source"] = "netns"
        event["sandbox"] = self.name
        with self._lock:
            self.recent.append(event)
            self.counts[event["event"]] += 1
        if self.emit is not None:
            with contextlib.suppress(Exception):
                self.emit(event)
