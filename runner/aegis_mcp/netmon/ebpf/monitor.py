"""EbpfMonitor: one agent's eBPF network monitoring, from cgroup to NetmonStats.

Set-up (root, before the agent starts): create the agent's cgroup, get the
programs of the tiers this kernel offers (compiled by BCC once per kernel and
source, :mod:`.objects`; loaded by :mod:`.loader`), fill the config and policy
maps, attach the cgroup programs to the agent's cgroup, then the tracepoint
and the kprobes, and start a thread that reads the ring buffer and the flow
counters into the stats. The agent joins
the cgroup through :attr:`EbpfMonitor.confine`, in the child before the
privilege drop. :meth:`EbpfMonitor.close` undoes it all.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import NetmonUnavailable
from ..stats import NetmonStats
from . import events as ev
from . import policy as pol
from . import programs
from .attach_check import missing_programs
from .availability import (
    cgroup2_mount,
    ebpf_available,
    ensure_tracefs,
    kprobe_problem,
    tracefs_dir,
    tracepoint_problem,
)
from .cgroup import AgentCgroup, bottom_up, pids_below
from .loader import LoadedObject, LoadError
from .objects import CompileError, obtain
from .tcp_diag import TcpDiag
from .tracker import FlowRow, SocketTracker

BPF_F_ALLOW_MULTI = 2
"""Attach beside programs that others (systemd, a container engine) put on parent cgroups."""
FLUSH_INTERVAL = 0.5
KPROBE_KEY = b"kp"
"""First item of the tracker's key for a kp_bytes entry (flow keys are plain bytes)."""
DNS_PORTS = (53,)
DNS_PORT_SLOTS = 4  # DNS_PORT_SLOTS of bpf/aegis_common.h: ports besides 53
COUNTER_REASONS = {
    ev.CNT_LOST: "ring buffer full: records lost",
    ev.CNT_FLOW_FULL: "flow table full: traffic not counted",
    ev.CNT_DNS_TRUNC: "DNS message longer than 1024 bytes: cut",
    ev.CNT_SOCK_FULL: "socket table full: sockets not followed",
}


class EbpfUnavailable(NetmonUnavailable):
    """eBPF monitoring cannot run here; the message is the one-line reason."""


class EbpfMonitor:
    """eBPF monitoring of one agent (see the module docstring).

    ``policy``: the egress policy (``aegis_mcp.sandbox.policy.Policy``, see
    :mod:`.policy`) applied by the connect/sendmsg hooks; None for none.
    ``tiers``: the tiers to try (default all); those the machine lacks are
    skipped, with the reason in :attr:`skipped`. Raises :class:`EbpfUnavailable`
    when even the cgroup tier cannot run, leaving nothing behind.
    """

    def __init__(
        self,
        runner_pid: int,
        agent_id: str,
        stats: NetmonStats,
        policy: pol.PolicyLike | None = None,
        *,
        tiers: Iterable[str] = programs.TIERS,
        dns_ports: Iterable[int] = DNS_PORTS,
        flush_interval: float = FLUSH_INTERVAL,
        cgroup_root: Path | None = None,
    ) -> None:
        ok, reason = ebpf_available()
        if not ok:
            raise EbpfUnavailable(reason)
        self.stats = stats
        self.agent_id = agent_id
        self.policy = policy
        self.flush_interval = flush_interval
        self.skipped: dict[str, str] = {}
        self.tiers = self._choose_tiers(tuple(tiers))
        root = cgroup_root if cgroup_root is not None else cgroup2_mount()
        if root is None:
            raise EbpfUnavailable("no cgroup v2 hierarchy is mounted")
        try:
            self.cgroup = AgentCgroup(root, runner_pid, agent_id)
        except OSError as exc:
            raise EbpfUnavailable(f"cannot create the agent's cgroup: {exc}") from None
        self._lock = threading.Lock()
        self._ring_lock = threading.Lock()  # taken before _lock, never inside it
        self._stop = threading.Event()
        self._cgroup_fd = -1
        self._bpf: LoadedObject | None = None
        self.from_cache = False
        """Whether the programs came compiled from the cache (no BCC compile this start)."""
        self._counters_seen = [0] * len(COUNTER_REASONS)
        self._policy_keys: dict[tuple[int, int, bytes], tuple[int, int]] = {}
        self.records_read = 0
        self.closed = False
        self._errors: set[str] = set()
        self._diag = TcpDiag()
        self.tracker = SocketTracker(
            deferred_connects="tracepoint" in self.tiers, kprobe_bytes="kprobe" in self.tiers
        )
        try:
            self._load(list(dns_ports))
        except BaseException as exc:
            self._teardown()
            self.cgroup.remove()
            if isinstance(exc, EbpfUnavailable | KeyboardInterrupt):
                raise
            raise EbpfUnavailable(f"loading the BPF programs failed: {exc}") from exc
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="aegis-ebpf", daemon=True)
        self._thread.start()

    # ---- public --------------------------------------------------------------------------------

    @property
    def tier(self) -> str:
        """The highest tier running: ``kprobe``, ``tracepoint`` or ``cgroup``."""
        return self.tiers[-1]

    @property
    def confine(self) -> tuple[Callable[[], None], ...]:
        """Steps for ``SpawnSpec.confine``: join the agent's cgroup (in the child, as root)."""
        return self.confine_agent(None)

    def confine_agent(self, agent_id: str | None) -> tuple[Callable[[], None], ...]:
        """The same, recording the process in the cgroup as agent ``agent_id``: after a
        crash, a pool agent that still runs is told from what must be killed."""
        return (self.cgroup.join_step(agent_id),)

    @property
    def lost_events(self) -> int:
        """Records the ring buffer had no room for (each also logged as a ``lost`` event)."""
        return self._counters_seen[ev.CNT_LOST]

    def fresh_stats(self) -> NetmonStats:
        """Read the counters now, then return the stats: a ``stats_source`` for the netmon ops."""
        if not self.closed:
            # The records waiting first: a socket's connect names its owner before its
            # counts are reported (libbpf's reader takes one consumer at a time).
            with self._ring_lock:
                if self._bpf is not None:
                    self._bpf.ring_buffer_consume()
            self._flush()
        return self.stats

    def status(self) -> dict[str, Any]:
        """What runs and how it fares, for netmon_status and doctor."""
        return {
            "agent": self.agent_id,
            "tier": self.tier,
            "tiers": list(self.tiers),
            "skipped": dict(self.skipped),
            "cgroup": str(self.cgroup.path),
            "cgroup_id": self.cgroup.id,
            "lost_events": self._counters_seen[ev.CNT_LOST],
            "flow_table_full": self._counters_seen[ev.CNT_FLOW_FULL],
            "dns_truncated": self._counters_seen[ev.CNT_DNS_TRUNC],
            "socket_table_full": self._counters_seen[ev.CNT_SOCK_FULL],
            "records_read": self.records_read,
            "compiled": "cached" if self.from_cache else "compiled at this start",
            "open_sockets": self.tracker.open_sockets,
            "policy": None
            if self.policy is None
            else {
                "default": self.policy.default,
                "rules": len(self.policy.rules),
                "kernel_entries": len(self._policy_keys),
            },
        }

    def attach_problems(self) -> list[str]:
        """The cgroup programs the kernel does not show attached to the agent's cgroup
        (:mod:`.attach_check`); empty when all are."""
        if self.closed:
            return ["the monitor is closed"]
        attached = self._bpf.cgroup_attachments() if self._bpf is not None else []
        return missing_programs(self._cgroup_fd, attached)

    def cgroup_pids(self) -> list[int]:
        """Processes in the agent's cgroup now (leftovers, after the agent exited)."""
        return self.cgroup.pids()

    def close(self) -> bool:
        """Stop: last counts in, programs detached, cgroup removed if empty.

        Returns True when the cgroup directory is gone; False when processes
        are still in it (killing them is the runner's job; call again after).
        """
        if not self.closed:
            self.closed = True
            self._stop.set()
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")  # the reader wakes now, not at its next poll
            self._thread.join(timeout=10)
            for fd in self._wake:
                os.close(fd)
            with contextlib.suppress(Exception):
                self._drain(final=True)
            self._teardown()
        return self.cgroup.remove()

    # ---- set-up --------------------------------------------------------------------------------

    def _choose_tiers(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        tiers = ["cgroup"]
        if "tracepoint" in wanted or "kprobe" in wanted:
            ensure_tracefs()
            problem = tracepoint_problem()
            if problem is None:
                tiers.append("tracepoint")
            else:
                self.skipped["tracepoint"] = problem
        if "kprobe" in wanted:
            problem = kprobe_problem()
            if problem is None and "tracepoint" in tiers:
                tiers.append("kprobe")
            else:
                self.skipped["kprobe"] = problem or "needs the tracepoint tier (tracefs)"
        return tuple(tiers)

    def _load(self, dns_ports: list[int]) -> None:
        try:
            compiled, self.from_cache = obtain(self.tiers)
        except CompileError as exc:
            raise EbpfUnavailable(str(exc)) from None
        try:
            self._bpf = LoadedObject(compiled)
            self._attach(dns_ports)
        except LoadError as exc:
            raise EbpfUnavailable(f"the kernel refused the BPF programs: {exc}") from None

    def _attach(self, dns_ports: list[int]) -> None:
        bpf = self._bpf
        assert bpf is not None
        config = bpf.table("config")
        config[ct.c_int(ev.CFG_CGROUP_ID)] = ct.c_uint64(self.cgroup.id)
        extra = [port for port in dict.fromkeys(dns_ports) if port != 53]
        if len(extra) > DNS_PORT_SLOTS:
            raise EbpfUnavailable(f"at most {DNS_PORT_SLOTS} DNS ports besides 53")
        ports = bpf.table("dns_ports")
        for slot, port in enumerate(extra):
            ports[ct.c_int(slot)] = ct.c_uint16(port)
        self._load_policy()
        bpf.open_ring_buffer("events", self._on_record)
        self._cgroup_fd = self.cgroup.open_fd()
        for prog in programs.CGROUP_PROGRAMS:
            bpf.attach_cgroup(
                prog.function, prog.prog_type, prog.attach_type, self._cgroup_fd, BPF_F_ALLOW_MULTI
            )
        if "tracepoint" in self.tiers:
            category, event = programs.TRACEPOINT.split(":")
            bpf.attach_tracepoint(programs.TRACEPOINT_FUNCTION, str(tracefs_dir()), category, event)
        if "kprobe" in self.tiers:
            for probe in programs.KPROBES:
                bpf.attach_kprobe(probe.function, probe.event, probe.ret)

    def _load_policy(self) -> None:
        policy = self.policy
        if policy is None:
            self._table("config")[ct.c_int(ev.CFG_POLICY)] = ct.c_uint64(pol.POLICY_OFF)
            return
        entries: list[pol.Entry] = []
        for rule, learned in _initial_addresses(policy):
            entries += pol.rule_entries(rule, learned)
        if policy.default == "deny":
            entries += pol.resolver_entries()
        self._write_policy(entries)
        # Last: the hooks apply the policy from the moment the mode is set.
        self._table("config")[ct.c_int(ev.CFG_POLICY)] = ct.c_uint64(pol.mode_of(policy))

    def _write_policy(self, entries: list[pol.Entry]) -> None:
        tries = {4: self._table("policy4"), 6: self._table("policy6")}
        for key, (verdict, netbits) in pol.merge(entries).items():
            if self._policy_keys.get(key, (0, 0))[0] == pol.DENY:
                continue  # a deny for the same destination stays
            self._policy_keys[key] = (verdict, netbits)
            version, prefixlen, data = key
            table = tries[version]
            k = table.Key()
            k.prefixlen = prefixlen
            for i, byte in enumerate(data):
                k.data[i] = byte
            leaf = table.Leaf()
            leaf.verdict = verdict
            leaf.netbits = netbits
            table[k] = leaf

    def _learn_policy(self, events: list[dict[str, Any]]) -> None:
        """Host-name rules follow the addresses of the DNS answers the agent gets."""
        for event in events:
            if event.get("event") != "dns" or not event.get("answers"):
                continue
            changes = self.policy.learn([event["host"]], event["answers"])  # type: ignore[union-attr]
            entries = [e for rule, fresh in changes for e in pol.rule_entries(rule, fresh)]
            if entries:
                self._write_policy(entries)

    def _table(self, name: str) -> Any:
        assert self._bpf is not None
        return self._bpf.table(name)

    def _teardown(self) -> None:
        self._diag.close()
        if self._bpf is not None:
            self._bpf.close()
            self._bpf = None
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1

    # ---- reading -------------------------------------------------------------------------------

    def _run(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._bpf.ring_buffer_fd(), select.POLLIN)  # type: ignore[union-attr]
        poller.register(self._wake[0], select.POLLIN)
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                wait = max(0.0, last_flush + self.flush_interval - time.monotonic())
                if poller.poll(wait * 1000):
                    with self._ring_lock:
                        self._bpf.ring_buffer_consume()  # type: ignore[union-attr]
                now = time.monotonic()
                if now - last_flush >= self.flush_interval:
                    self._flush()
                    last_flush = now
            except Exception as exc:
                # Keep monitoring; say what went wrong, once per kind of failure.
                message = repr(exc)
                if message not in self._errors:
                    self._errors.add(message)
                    self._ingest([{"event": "error", "source": "ebpf", "message": message}])
                self._stop.wait(self.flush_interval)

    def _drain(self, final: bool = False) -> None:
        self._bpf.ring_buffer_consume()  # type: ignore[union-attr]
        self._flush(final=final)

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        record = ev.decode(data, size)
        if record is None:
            self.stats.count_malformed()
            return 0
        self.records_read += 1
        with self._lock:
            out = self.tracker.on_record(record)
            if self.policy is not None and record.type == ev.EV_DNS:
                self._learn_policy(out)
        self._ingest(out)
        return 0

    def _flush(self, final: bool = False) -> None:
        with self._lock:
            rows = list(self._flow_rows())
            out = self.tracker.on_flows(rows)
            due, finished = self.tracker.due(final=final)
            out += due
            self._delete_flows(finished)
            out += self._counter_events()
        self._ingest(out)

    def _flow_rows(self) -> Iterable[FlowRow]:
        rows: dict[bytes, FlowRow] = {}
        for key, val in self._table("flows").items():
            family = key.family
            rows[bytes(key)] = FlowRow(
                key=bytes(key),
                cookie=key.cookie,
                family=family,
                remote_addr=ev.format_addr(family, bytes(key.raddr)),
                remote_port=key.rport,
                local_port=val.lport,
                proto=val.proto,
                bytes_out=val.bytes_out,
                bytes_in=val.bytes_in,
                pkts_out=val.pkts_out,
                pkts_in=val.pkts_in,
            )
        self._live_tcp(rows)
        yield from rows.values()
        if "kprobe" in self.tiers:
            for key, val in self._table("kp_bytes").items():
                yield FlowRow(
                    key=(KPROBE_KEY, bytes(key)),
                    cookie=key.cookie,
                    family=val.family,
                    remote_addr=ev.format_addr(val.family, bytes(val.raddr)),
                    remote_port=val.rport,
                    local_port=val.lport,
                    proto=val.proto,
                    bytes_out=val.sent,
                    bytes_in=val.received,
                    pid=key.tgid,
                    comm=val.comm.decode(errors="replace"),
                    kprobe=True,
                )

    def _live_tcp(self, rows: dict[bytes, FlowRow]) -> None:
        """Bring the rows of established TCP connections up to now: the flow table has their
        counts as of their last state change (bpf/tcp_bytes.c), the kernel has them live
        (:mod:`.tcp_diag`). Both are lifetime counts of the same bytes: the larger is newer."""
        conns = self._table("tcp_conns").items()
        active = {int(key.value): int(conn.active) for key, conn in conns}
        if not active:
            return  # no connection established: nothing to ask the kernel
        try:
            tree = bottom_up(self.cgroup.path)  # a container's cgroup is below the agent's
            ids = [os.stat(path).st_ino for path in tree]
            live = self._diag.established(ids, pids_below(self.cgroup.path))
        except OSError as exc:
            message = f"live TCP counts unavailable (counted at state changes only): {exc}"
            if message not in self._errors:
                self._errors.add(message)
                self._ingest([{"event": "error", "source": "ebpf", "message": message}])
            return
        flows = self._table("flows")
        for conn in live:
            syn = active.get(conn.cookie)
            if syn is None:
                continue  # not (or no longer) followed by tcp_bytes.c
            key = flows.Key()
            key.cookie, key.family, key.rport = conn.cookie, conn.family, conn.remote_port
            ct.memmove(key.raddr, conn.remote_addr, 16)
            raw = bytes(key)
            sent = max(conn.bytes_acked - syn, 0)  # our SYN is in bytes_acked
            row = rows.get(raw)
            if row is None:
                rows[raw] = FlowRow(
                    key=raw,
                    cookie=conn.cookie,
                    family=conn.family,
                    remote_addr=ev.format_addr(conn.family, conn.remote_addr),
                    remote_port=conn.remote_port,
                    local_port=conn.local_port,
                    proto=socket.IPPROTO_TCP,
                    bytes_out=sent,
                    bytes_in=conn.bytes_received,
                    pkts_out=conn.segs_out,
                    pkts_in=conn.segs_in,
                )
            else:
                row.bytes_out = max(row.bytes_out, sent)
                row.bytes_in = max(row.bytes_in, conn.bytes_received)
                row.pkts_out = max(row.pkts_out, conn.segs_out)
                row.pkts_in = max(row.pkts_in, conn.segs_in)

    def _delete_flows(self, keys: list[Any]) -> None:
        """Delete finished sockets' counters: flow keys are bytes, kprobe keys
        ``(KPROBE_KEY, bytes)``."""
        if not keys:
            return
        flows = self._table("flows")
        kp_bytes = self._table("kp_bytes") if "kprobe" in self.tiers else None
        for raw in keys:
            table, data = (kp_bytes, raw[1]) if isinstance(raw, tuple) else (flows, raw)
            if table is not None:
                with contextlib.suppress(KeyError):
                    del table[table.Key.from_buffer_copy(data)]
            self.tracker.forget_flow(raw)

    def _counter_events(self) -> list[dict[str, Any]]:
        counters = self._table("counters")
        out = []
        for slot, reason in COUNTER_REASONS.items():
            total = int(counters.sum(ct.c_int(slot)).value)
            grown = total - self._counters_seen[slot]
            if grown > 0:
                self._counters_seen[slot] = total
                out.append(
                    {
                        "ts": time.time(),
                        "source": "ebpf",
                        "event": "lost" if slot != ev.CNT_DNS_TRUNC else "truncated",
                        "count": grown,
                        "total": total,
                        "reason": reason,
                        "bytes": 0,
                    }
                )
        return out

    def _ingest(self, out: list[dict[str, Any]]) -> None:
        # Pool agents each have a monitor, often feeding one NetmonStats: say whose it is.
        for event in out:
            event["agent"] = self.agent_id
            self.stats.ingest(event)


def _initial_addresses(policy: pol.PolicyLike) -> list[tuple[Any, list[str]]]:
    """Each rule with the addresses known for it now: host names are resolved (the
    system's resolvers, 2 s at most each) and taught to the policy, as the sandbox does."""
    # a wildcard is learnt from answers only
    names = sorted({r.host for r in policy.rules if r.is_host and not r.host.startswith("*.")})
    if names:
        from ...dns_wire import host_upstreams, resolve

        for name, addresses in resolve(names, host_upstreams()).items():
            policy.learn([name], addresses)
    return [(rule, sorted(policy.learned(rule)) if rule.is_host else []) for rule in policy.rules]
