"""eBPF netmon pieces that need no kernel: policy rules, DNS parsing, record decoding,
the socket tracker, availability reasons and the fallback when BCC or headers are missing."""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

from aegis_mcp.netmon.ebpf import _bcc, availability, programs
from aegis_mcp.netmon.ebpf import events as ev
from aegis_mcp.netmon.ebpf import policy as pol
from aegis_mcp.netmon.ebpf.cgroup import cgroup_name, join_step
from aegis_mcp.netmon.ebpf.dns import parse_message
from aegis_mcp.netmon.ebpf.tracker import FlowRow, SocketTracker
from aegis_mcp.netmon.stats import NetmonStats
from aegis_mcp.sandbox.policy import Policy

# ---- policy --------------------------------------------------------------------------------------


def _kernel_decide(policy: Policy, addr: str, port: int, extra=()) -> str:
    """What bpf/policy.h decides, computed the way the kernel does: two longest-prefix
    lookups (with the port, with port 0) over the merged trie entries, then policy_pick."""
    entries = [e for rule, learned in _rules(policy) for e in pol.rule_entries(rule, learned)]
    merged = pol.merge([*entries, *extra])
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped

    def lookup(p: int):
        bits = int.from_bytes(p.to_bytes(2, "big") + ip.packed, "big")
        width = 16 + ip.max_prefixlen
        best = None
        for (version, prefixlen, data), value in merged.items():
            if version != ip.version:
                continue
            rule_bits = int.from_bytes(data, "big")
            shift = width - prefixlen
            if bits >> shift == rule_bits >> shift and (best is None or prefixlen > best[0]):
                best = (prefixlen, value)
        return None if best is None else best[1]

    with_port, any_port = lookup(port), lookup(0)
    if with_port and (not any_port or with_port[1] >= any_port[1]):
        verdict = with_port[0]
    elif any_port:
        verdict = any_port[0]
    else:
        verdict = pol.DENY if policy.default == "deny" else pol.ALLOW
    return "deny" if verdict == pol.DENY else "allow"


def _rules(policy: Policy) -> list:
    return [(r, sorted(policy.learned(r)) if r.is_host else []) for r in policy.rules]


POLICIES = [
    Policy(allow=("10.1.0.0/16", "10.0.0.0/8:443"), deny=("10.0.0.0/8", "10.1.2.3")),
    Policy(allow=("127.0.0.0/8",), default="deny"),
    Policy(allow=("10.1.2.3",), deny=("10.1.2.3",)),  # equally specific: deny
    Policy(allow=("10.0.0.0/8",), deny=("10.1.0.0/16:22", "[2001:db8::/32]:25")),
    Policy(allow=("10.1.0.0/16:22",), deny=("10.1.0.0/16",)),  # a port breaks the tie
]
PROBES = [
    (a, p)
    for a in ("10.9.9.9", "10.1.9.9", "10.1.2.3", "127.0.0.1", "192.0.2.1", "2001:db8::1", "::1")
    for p in (22, 25, 80, 443)
]


@pytest.mark.parametrize("policy", POLICIES)
def test_the_kernel_decides_as_the_sandbox_policy(policy: Policy) -> None:
    for addr, port in PROBES:
        assert _kernel_decide(policy, addr, port) == policy.decide(addr, port)[0], (addr, port)


def test_host_rules_become_the_addresses_learnt() -> None:
    policy = Policy(deny=("blocked.example",))
    (rule,) = policy.host_rules
    assert pol.rule_entries(rule) == []  # nothing known yet
    changes = policy.learn(["blocked.example"], ["192.0.2.5"])
    entries = [e for r, fresh in changes for e in pol.rule_entries(r, fresh)]
    assert entries == [(4, 16 + 32, bytes([0, 0, 192, 0, 2, 5]), pol.DENY, 32)]
    assert _kernel_decide(policy, "192.0.2.5", 80) == "deny"
    assert _kernel_decide(policy, "192.0.2.6", 80) == "allow"


def test_default_deny_keeps_the_resolvers_reachable(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\n")
    extra = pol.resolver_entries(conf)
    assert [e[0] for e in extra] == [4, 6]
    policy = Policy(default="deny")
    assert _kernel_decide(policy, "192.0.2.53", 53, extra) == "allow"
    assert _kernel_decide(policy, "192.0.2.53", 80, extra) == "deny"
    assert pol.mode_of(policy) == pol.POLICY_DEFAULT_DENY and pol.mode_of(None) == pol.POLICY_OFF


# ---- DNS -----------------------------------------------------------------------------------------


def _dns_answer(name: str, addresses: list[str]) -> bytes:
    import dns.message
    import dns.rrset

    query = dns.message.make_query(name, "A")
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", *addresses))
    return answer.to_wire()


def test_dns_answers_and_queries_are_parsed() -> None:
    import dns.message

    query = dns.message.make_query("api.example.test", "AAAA").to_wire()
    assert parse_message(query) == {"kind": "query", "host": "api.example.test", "qtype": "AAAA"}
    wire = _dns_answer("api.example.test", ["192.0.2.10", "192.0.2.11"])
    parsed = parse_message(wire)
    assert parsed is not None
    assert parsed["kind"] == "answer" and parsed["host"] == "api.example.test"
    # an rdataset is a set: the order on the wire is dnspython's
    assert sorted(parsed["answers"]) == ["192.0.2.10", "192.0.2.11"] and parsed["rcode"] == 0
    # over TCP the message carries its length first
    tcp = len(wire).to_bytes(2, "big") + wire
    assert parse_message(tcp, socket.IPPROTO_TCP)["answers"] == parsed["answers"]


@pytest.mark.parametrize("junk", [b"", b"\x00", b"not dns at all, just bytes", bytes(12)])
def test_dns_junk_is_no_message(junk: bytes) -> None:
    assert parse_message(junk) is None


# ---- records -------------------------------------------------------------------------------------


def _raw(type_: int, **fields) -> ev.RawEvent:
    raw = ev.RawEvent()
    raw.type = type_
    for name, value in fields.items():
        if name in ("raddr", "laddr"):
            for i, byte in enumerate(value):
                getattr(raw, name)[i] = byte
        else:
            setattr(raw, name, value)
    return raw


def _decode(raw: ct.Structure) -> ev.Event:
    buf = ct.create_string_buffer(bytes(raw), ct.sizeof(raw))
    record = ev.decode(ct.addressof(buf), ct.sizeof(raw))
    assert record is not None
    return record


def test_records_decode_with_text_addresses() -> None:
    record = _decode(
        _raw(
            ev.EV_CONNECT,
            pid=42,
            comm=b"curl",
            family=socket.AF_INET,
            proto=socket.IPPROTO_TCP,
            rport=443,
            raddr=socket.inet_aton("192.0.2.9"),
        )
    )
    assert (record.name, record.pid, record.comm) == ("connect", 42, "curl")
    assert (record.remote_addr, record.remote_port) == ("192.0.2.9", 443)
    six = _decode(_raw(ev.EV_CONNECT, family=socket.AF_INET6, raddr=socket.inet_pton(10, "::1")))
    assert six.remote_addr == "::1"
    assert ev.decode(0, ev.EVENT_SIZE - 1) is None


def test_dns_records_carry_their_payload() -> None:
    wire = _dns_answer("x.test", ["192.0.2.1"])
    raw = ev.RawDnsEvent()
    raw.h = _raw(ev.EV_DNS, family=socket.AF_INET, proto=socket.IPPROTO_UDP, rport=53)
    raw.len = len(wire)
    raw.size = len(wire)
    ct.memmove(raw.data, wire, len(wire))
    record = _decode(raw)
    assert record.payload == wire and record.payload_size == len(wire)


# ---- tracker -------------------------------------------------------------------------------------


def _connect(cookie: int, pid: int = 7, port: int = 8080, tid: int = 0) -> ev.Event:
    return _decode(
        _raw(
            ev.EV_CONNECT,
            cookie=cookie,
            pid=pid,
            tid=tid or pid,
            comm=b"agent",
            family=socket.AF_INET,
            proto=socket.IPPROTO_TCP,
            rport=port,
            raddr=socket.inet_aton("127.0.0.1"),
        )
    )


def _flow(cookie: int, out: int, into: int, port: int = 8080) -> FlowRow:
    return FlowRow(
        key=(cookie, port),
        cookie=cookie,
        family=socket.AF_INET,
        remote_addr="127.0.0.1",
        remote_port=port,
        local_port=40000,
        proto=socket.IPPROTO_TCP,
        bytes_out=out,
        bytes_in=into,
    )


def test_tracker_reports_growth_then_close_with_totals() -> None:
    tracker = SocketTracker(close_grace=0.0)
    stats = NetmonStats()
    for event in tracker.on_record(_connect(1)):
        stats.ingest(event)
    for event in tracker.on_flows([_flow(1, 100, 10)]) + tracker.on_flows([_flow(1, 250, 10)]):
        stats.ingest(event)
    assert [e["bytes"] for e in stats.recent(10) if e["event"] == "send"] == [100, 150]
    assert tracker.on_flows([_flow(1, 250, 10)]) == []  # nothing grew
    tracker.on_record(_decode(_raw(ev.EV_RELEASE, cookie=1, pid=7, proto=socket.IPPROTO_TCP)))
    events, finished = tracker.due()
    (close,) = events
    assert close["event"] == "close" and close["bytes_sent"] == 250 and close["bytes_recv"] == 10
    assert finished == [(1, 8080)] and tracker.open_sockets == 0
    for event in events:
        stats.ingest(event)
    status = stats.status()
    assert status["bytes_sent"] == 250 and status["bytes_received"] == 10
    assert status["processes"][0]["pid"] == 7


def test_tracker_holds_tcp_connects_until_the_tracepoint_settles_them() -> None:
    tracker = SocketTracker(deferred_connects=True)
    assert tracker.on_record(_connect(5)) == []
    established = _decode(
        _raw(ev.EV_TCP_STATE, cookie=5, value=ev.TCP_SYN_SENT, value2=ev.TCP_ESTABLISHED, lport=4)
    )
    (event,) = tracker.on_record(established)
    assert event["result"] == 0 and event["local_port"] == 4 and event["pid"] == 7
    assert tracker.on_record(_connect(6)) == []
    refused = _decode(_raw(ev.EV_TCP_STATE, cookie=6, value=ev.TCP_SYN_SENT, value2=ev.TCP_CLOSE))
    (event,) = tracker.on_record(refused)
    assert event["result"] == "failed"
    # an outcome that never comes: reported as in progress
    slow = SocketTracker(deferred_connects=True, connect_wait=0.0)
    slow.on_record(_connect(9))
    (event,), _ = slow.due()
    assert event["result"] == 0 and event["in_progress"] is True


def test_tracker_kprobe_connect_errors_name_the_errno() -> None:
    tracker = SocketTracker(deferred_connects=True)
    tracker.on_record(_connect(3, pid=11, tid=12))
    (event,) = tracker.on_record(_decode(_raw(ev.EV_KP_CONNECT, tid=12, value=-101)))
    assert event["result"] == "ENETUNREACH" and event["errno"] == 101


def _kp_row(cookie: int, sent: int, pid: int, proto: int = socket.IPPROTO_TCP) -> FlowRow:
    """A kp_bytes entry as the monitor reads it: keyed per (socket, cookie, process)."""
    return FlowRow(
        key=(b"kp", cookie, pid, proto),
        cookie=cookie,
        family=socket.AF_INET,
        remote_addr="127.0.0.1",
        remote_port=8080,
        local_port=40000,
        proto=proto,
        bytes_out=sent,
        bytes_in=0,
        pid=pid,
        comm="child",
        kprobe=True,
    )


def test_tracker_deletes_kprobe_counters_with_their_socket() -> None:
    tracker = SocketTracker(kprobe_bytes=True, close_grace=0.0)
    tracker.on_record(_connect(4, pid=20))
    events = tracker.on_flows([_flow(4, 900, 0), _kp_row(4, 400, pid=20), _kp_row(4, 500, pid=21)])
    # TCP bytes come from the kprobe rows alone, each with the calling process
    assert sorted((e["pid"], e["bytes"]) for e in events) == [(20, 400), (21, 500)]
    udp = _kp_row(4, 70, pid=21, proto=socket.IPPROTO_UDP)
    assert tracker.on_flows([udp]) == []  # UDP: the cgroup tier reports it per destination
    tracker.on_record(_decode(_raw(ev.EV_RELEASE, cookie=4, proto=socket.IPPROTO_TCP)))
    _, finished = tracker.due()
    assert sorted(map(str, finished)) == sorted(
        map(str, [(4, 8080), udp.key, (b"kp", 4, 20, 6), (b"kp", 4, 21, 6)])
    )
    # counted again from zero if the same key ever comes back
    assert [e["bytes"] for e in tracker.on_flows([_kp_row(4, 30, pid=20)])] == [30]


def test_tracker_drops_idle_kprobe_counters_of_no_known_socket() -> None:
    tracker = SocketTracker(kprobe_bytes=True, kprobe_idle=3600)
    (event,) = tracker.on_flows([_kp_row(0, 10, pid=5)])  # cookie 0: never asked for
    assert event["bytes"] == 10 and tracker.due() == ([], [])
    assert SocketTracker(kprobe_bytes=True).due(final=True) == ([], [])
    idle = SocketTracker(kprobe_bytes=True, kprobe_idle=0.0)
    idle.on_flows([_kp_row(0, 10, pid=5)])
    assert idle.due() == ([], [(b"kp", 0, 5, 6)])


def test_tracker_kprobe_connect_is_found_by_cookie() -> None:
    tracker = SocketTracker(deferred_connects=True)
    tracker.on_record(_connect(6, pid=11, tid=12))
    # the kretprobe ran in another thread than the connect hook's record says: the cookie joins
    record = _decode(_raw(ev.EV_KP_CONNECT, cookie=6, tid=99, value=-111))
    (event,) = tracker.on_record(record)
    assert event["result"] == "ECONNREFUSED" and event["pid"] == 11


def test_tracker_waits_for_the_tcp_close_of_a_released_socket() -> None:
    tracker = SocketTracker(close_grace=3600)
    tracker.on_record(_connect(2))
    tracker.on_flows([_flow(2, 5, 5)])
    tracker.on_record(_decode(_raw(ev.EV_RELEASE, cookie=2, proto=socket.IPPROTO_TCP)))
    assert tracker.due() == ([], [])  # data may still be leaving the orphaned socket
    closed = _raw(
        ev.EV_TCP_STATE,
        family=socket.AF_INET,
        value=4,
        value2=ev.TCP_CLOSE,
        lport=40000,
        rport=8080,
        raddr=socket.inet_aton("127.0.0.1"),
    )
    tracker.on_record(_decode(closed))  # no cookie: found by its addresses
    events, _ = tracker.due()
    assert [e["event"] for e in events] == ["close"]


def test_blocked_records_say_eperm() -> None:
    tracker = SocketTracker()
    blocked = _raw(
        ev.EV_BLOCKED,
        pid=3,
        comm=b"x",
        family=socket.AF_INET,
        proto=socket.IPPROTO_TCP,
        rport=1,
        raddr=socket.inet_aton("192.0.2.1"),
    )
    (event,) = tracker.on_record(_decode(blocked))
    assert event["event"] == "blocked" and event["result"] == "EPERM" and event["pid"] == 3


# ---- availability and fallback -------------------------------------------------------------------


def test_bcc_missing_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)  # makes `import bcc` fail
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(_bcc.BccMissing, match="python3-bpfcc"):
        _bcc.import_bcc()
    # The availability check looks for BCC's package without importing it: none anywhere.
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.setattr(_bcc, "SYSTEM_DIST_PACKAGES", str(tmp_path))
    assert _bcc.find_bcc() is None
    if os.geteuid() == 0 and availability.cgroup2_mount() is not None:
        ok, reason = availability.ebpf_available()
        assert not ok and "python3-bpfcc" in reason


def test_missing_headers_give_a_clear_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "no-headers"))
    problem = availability.headers_problem()
    assert problem is not None and "kernel headers missing" in problem
    assert "setup_bpf.sh" in problem
    ok, reason = availability.ebpf_available()
    assert not ok
    if os.geteuid() != 0:
        assert "root" in reason
    elif availability.cgroup2_mount() is not None:
        try:
            _bcc.import_bcc()
        except _bcc.BccMissing:
            assert "python3-bpfcc" in reason
        else:
            assert "kernel headers missing" in reason


def test_not_root_is_the_first_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert availability.ebpf_available() == (
        False,
        "eBPF monitoring needs root (start aegis-mcp with sudo)",
    )


def test_cgroup2_mount_is_found_in_a_hybrid_layout(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    )
    assert availability.cgroup2_mount(mounts) == Path("/sys/fs/cgroup/unified")
    mounts.write_text("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n")
    assert availability.cgroup2_mount(mounts) is None


def test_headers_for_another_kernel_disable_the_kprobe_tier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "include/generated").mkdir(parents=True)
    (tmp_path / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "1.2.3-old"\n')
    monkeypatch.setattr(availability, "kprobes_supported", lambda: True)
    problem = availability.kprobe_problem(tmp_path)
    assert problem is not None and "1.2.3-old" in problem
    monkeypatch.setattr(availability.platform, "release", lambda: "1.2.3-old")
    assert availability.kprobe_problem(tmp_path) is None


# ---- programs and cgroup names -------------------------------------------------------------------


def test_program_source_pastes_each_tier_once() -> None:
    text = programs.source_for(["cgroup"])
    assert "aegis_connect4" in text and "TRACEPOINT_PROBE" not in text
    assert "#line" not in text  # BCC rewrites map calls in its main file only
    assert text.count("#ifndef AEGIS_COMMON_H") == 1
    full = programs.source_for(["cgroup", "tracepoint", "kprobe"])
    assert "TRACEPOINT_PROBE(sock, inet_sock_set_state)" in full and "aegis_kp_sendmsg" in full
    for prog in programs.CGROUP_PROGRAMS:
        assert f"int {prog.function}(" in text
    for probe in programs.KPROBES:
        assert f"int {probe.function}(" in full


def test_cgroup_names_refuse_path_tricks() -> None:
    assert cgroup_name(12, "primary") == "12-primary"
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            cgroup_name(12, bad)


def test_join_step_writes_zero_to_cgroup_procs(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").write_text("")
    join_step(tmp_path)()
    assert (tmp_path / "cgroup.procs").read_text() == "0"


def test_tier_problems_name_every_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = availability.tier_problems()
    assert set(problems) == {"cgroup", "tracepoint", "kprobe"}
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert all("root" in (why or "") for why in availability.tier_problems().values())


# ---- tcp_diag: the live TCP counters' messages ------------------------------------------------


def _diag_message(
    family: int, dst: bytes, info: bytes | None, cookie: int = 0x1_0000_0002
) -> bytes:
    import struct

    msg = struct.pack(
        "=BBBBHH16s16sIII",
        family,
        1,
        0,
        0,
        socket.htons(40000),
        socket.htons(443),
        b"\0" * 16,
        dst.ljust(16, b"\0"),
        0,
        cookie & 0xFFFFFFFF,
        cookie >> 32,
    )
    msg += b"\0" * (72 - len(msg))
    if info is not None:
        msg += struct.pack("=HH", 4 + 8, 1) + b"\0" * 8  # an attribute before it: skipped
        msg += struct.pack("=HH", 4 + len(info), 2) + info
    return msg


def _tcp_info(acked: int, received: int, segs_in: int = 3, segs_out: int = 4) -> bytes:
    import struct

    info = bytearray(232)
    struct.pack_into("=QQ", info, 120, acked, received)
    struct.pack_into("=II", info, 152, segs_in, segs_out)
    return bytes(info)


def test_tcp_diag_reads_the_counters_cookie_and_peer() -> None:
    from aegis_mcp.netmon.ebpf.tcp_diag import parse_message

    got = parse_message(_diag_message(socket.AF_INET, bytes([10, 0, 0, 7]), _tcp_info(101, 7)))
    assert got is not None
    assert (got.cookie, got.family, got.remote_addr[:4], got.remote_addr[4:]) == (
        0x1_0000_0002,
        socket.AF_INET,
        bytes([10, 0, 0, 7]),
        b"\0" * 12,
    )
    assert (got.remote_port, got.local_port) == (443, 40000)
    assert (got.bytes_acked, got.bytes_received, got.segs_in, got.segs_out) == (101, 7, 3, 4)


def test_tcp_diag_names_an_ipv4_mapped_peer_as_ipv4() -> None:
    """As the BPF programs key it (bpf/tcp_bytes.c): one flow whichever reads it."""
    from aegis_mcp.netmon.ebpf.tcp_diag import parse_message

    mapped = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])
    got = parse_message(_diag_message(socket.AF_INET6, mapped, _tcp_info(1, 0)))
    assert got is not None and got.family == socket.AF_INET
    assert got.remote_addr == bytes([127, 0, 0, 1]) + b"\0" * 12


def test_tcp_diag_skips_a_message_without_tcp_info() -> None:
    from aegis_mcp.netmon.ebpf.tcp_diag import parse_message

    assert parse_message(_diag_message(socket.AF_INET, b"\x7f\0\0\1", None)) is None
    short = _diag_message(socket.AF_INET, b"\x7f\0\0\1", b"\0" * 100)  # an old kernel's tcp_info
    assert parse_message(short) is None


def test_tcp_diag_filters_by_cgroup_in_the_kernel() -> None:
    """The request carries the cgroup condition: accept at the end, reject past it."""
    import struct

    from aegis_mcp.netmon.ebpf.tcp_diag import _request

    req = _request(socket.AF_INET6, [0xABCDEF], 9)
    length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", req)
    assert (length, kind, seq) == (len(req), 20, 9)
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 2, 1 << 1)
    rta_len, rta_type = struct.unpack_from("=HH", req, 16 + 56)
    code, yes, no, cgroup = struct.unpack_from("=BBHQ", req, 16 + 56 + 4)
    assert (rta_len, rta_type, code, yes, no, cgroup) == (16, 1, 13, 12, 16, 0xABCDEF)


def test_tcp_diag_accepts_any_cgroup_of_the_tree_and_filters_nothing_elsewhere() -> None:
    """One condition per cgroup (a container's is below the agent's): a match jumps to the
    end, a miss to the next, the last miss past the end; no ids, no filter (another
    namespace holds the agent's sockets only)."""
    import struct

    from aegis_mcp.netmon.ebpf.tcp_diag import _request

    req = _request(socket.AF_INET, [7, 8], 1)
    ops = [struct.unpack_from("=BBHQ", req, 16 + 56 + 4 + 12 * i) for i in range(2)]
    assert ops == [(13, 24, 12, 7), (13, 12, 16, 8)]
    assert len(_request(socket.AF_INET, [], 1)) == 16 + 56
