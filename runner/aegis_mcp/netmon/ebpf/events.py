"""The records the BPF programs send, as Python sees them.

Mirrors ``struct aegis_event`` and ``struct aegis_dns_event`` of
``bpf/aegis_common.h`` (the C side asserts the same sizes), plus the flow map's
key and value. Decoding copies the bytes out at once: the ring buffer's
memory is reused as soon as the callback returns.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
from dataclasses import dataclass

EV_CONNECT = 1
EV_BLOCKED = 2
EV_SENDTO = 3
EV_RELEASE = 4
EV_DNS = 5
EV_TCP_STATE = 6
EV_ACCEPT = 7
EV_KP_CONNECT = 8

TYPE_NAMES = {
    EV_CONNECT: "connect",
    EV_BLOCKED: "blocked",
    EV_SENDTO: "sendto",
    EV_RELEASE: "release",
    EV_DNS: "dns",
    EV_TCP_STATE: "tcp_state",
    EV_ACCEPT: "accept",
    EV_KP_CONNECT: "kp_connect",
}

# config[] and counters[] slots of aegis_common.h
CFG_CGROUP_ID = 0
CFG_POLICY = 1
CNT_LOST = 0
CNT_FLOW_FULL = 1
CNT_DNS_TRUNC = 2
CNT_SOCK_FULL = 3

TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_CLOSE = 7

DNS_MAX = 1024
EVENT_SIZE = 104
DNS_EVENT_SIZE = EVENT_SIZE + 8 + DNS_MAX

PROTO_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
FAMILY_NAMES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}


class RawEvent(ct.Structure):
    """``struct aegis_event``."""

    _fields_ = [
        ("ts_ns", ct.c_uint64),
        ("cookie", ct.c_uint64),
        ("aux", ct.c_uint64),
        ("type", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("value", ct.c_int32),
        ("value2", ct.c_int32),
        ("family", ct.c_uint16),
        ("proto", ct.c_uint16),
        ("rport", ct.c_uint16),
        ("lport", ct.c_uint16),
        ("raddr", ct.c_uint8 * 16),
        ("laddr", ct.c_uint8 * 16),
        ("comm", ct.c_char * 16),
    ]


class RawDnsEvent(ct.Structure):
    """``struct aegis_dns_event``."""

    _fields_ = [
        ("h", RawEvent),
        ("len", ct.c_uint32),
        ("size", ct.c_uint32),
        ("data", ct.c_uint8 * DNS_MAX),
    ]


assert ct.sizeof(RawEvent) == EVENT_SIZE
assert ct.sizeof(RawDnsEvent) == DNS_EVENT_SIZE


@dataclass(frozen=True)
class Event:
    """One decoded record (addresses as text, ports in host order)."""

    type: int
    ts_ns: int
    cookie: int
    aux: int
    pid: int
    tid: int
    uid: int
    comm: str
    value: int
    value2: int
    family: int
    proto: int
    remote_addr: str
    remote_port: int
    local_addr: str
    local_port: int
    payload: bytes = b""
    payload_size: int = 0

    @property
    def name(self) -> str:
        """The record type's name (``connect``, ``dns``, ...)."""
        return TYPE_NAMES.get(self.type, f"type{self.type}")


def format_addr(family: int, raw: bytes) -> str:
    """Text form of an address held in 16 bytes (IPv4 in the first 4)."""
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return ""


def decode(data: int | ct.c_void_p, size: int) -> Event | None:
    """The record at ``data`` (a ring buffer callback's pointer), or None if too short."""
    if size < EVENT_SIZE:
        return None
    raw = ct.cast(data, ct.POINTER(RawEvent)).contents
    payload = b""
    payload_size = 0
    if raw.type == EV_DNS and size >= DNS_EVENT_SIZE:
        dns = ct.cast(data, ct.POINTER(RawDnsEvent)).contents
        length = min(dns.len, DNS_MAX)
        payload = bytes(dns.data[:length])
        payload_size = dns.size
    return Event(
        type=raw.type,
        ts_ns=raw.ts_ns,
        cookie=raw.cookie,
        aux=raw.aux,
        pid=raw.pid,
        tid=raw.tid,
        uid=raw.uid,
        comm=raw.comm.decode(errors="replace"),
        value=raw.value,
        value2=raw.value2,
        family=raw.family,
        proto=raw.proto,
        remote_addr=format_addr(raw.family, bytes(raw.raddr)),
        remote_port=raw.rport,
        local_addr=format_addr(raw.family, bytes(raw.laddr)),
        local_port=raw.lport,
        payload=payload,
        payload_size=payload_size,
    )


def family_name(family: int) -> str:
    """``inet`` / ``inet6``, as the preload hooks write it."""
    return FAMILY_NAMES.get(family, str(family))


def proto_name(proto: int) -> str:
    """``tcp`` / ``udp`` / ``other``, as the preload hooks write it."""
    return PROTO_NAMES.get(proto, "other")
