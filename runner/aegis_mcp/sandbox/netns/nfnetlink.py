"""Netfilter netlink sources read in process: NFLOG packets and conntrack ends.

- :class:`NflogSocket` binds one NFLOG group (the firewall's ``log group``)
  and yields each logged packet's prefix, uid/gid of the sending socket and
  addresses. pyroute2 has no NFLOG messages, so :class:`nflog_msg` declares
  them with its nla machinery (linux/netfilter/nfnetlink_log.h).
- :class:`ConntrackSocket` subscribes to conntrack DESTROY events and dumps
  the conntrack table (pyroute2's ``nfct_msg``): each flow's packet and byte
  counters, both directions.

Both belong to the namespace of the thread that creates them (see nlsock).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink import nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK, NFNL_SUBSYS_ULOG, nfgen_msg
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from .nlsock import NetlinkSocket

NETLINK_NETFILTER = 12
NFULNL_MSG_PACKET = NFNL_SUBSYS_ULOG << 8
NFULNL_MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | 1
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
IPCTNL_MSG_CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | 1
IPCTNL_MSG_CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | 2
NFNLGRP_CONNTRACK_DESTROY = 3
SNAPLEN = 96
"""Bytes of each logged packet copied to us: IP and transport headers are all we read."""

PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


class nflog_msg(nfgen_msg):
    """An NFLOG packet message (NFULNL_MSG_PACKET)."""

    prefix = "NFULA_"
    nla_map = (
        ("NFULA_UNSPEC", "none"),
        ("NFULA_PACKET_HDR", "packet_hdr"),
        ("NFULA_MARK", "be32"),
        ("NFULA_TIMESTAMP", "timestamp"),
        ("NFULA_IFINDEX_INDEV", "be32"),
        ("NFULA_IFINDEX_OUTDEV", "be32"),
        ("NFULA_IFINDEX_PHYSINDEV", "be32"),
        ("NFULA_IFINDEX_PHYSOUTDEV", "be32"),
        ("NFULA_HWADDR", "hex"),
        ("NFULA_PAYLOAD", "cdata"),
        ("NFULA_PREFIX", "asciiz"),
        ("NFULA_UID", "be32"),
        ("NFULA_SEQ", "be32"),
        ("NFULA_SEQ_GLOBAL", "be32"),
        ("NFULA_GID", "be32"),
    )

    class packet_hdr(nla):
        fields = (("hw_protocol", "!H"), ("hook", "B"), ("pad", "x"))

    class timestamp(nla):
        fields = (("sec", "!Q"), ("usec", "!Q"))


class nflog_config_msg(nfgen_msg):
    """An NFLOG configuration message (NFULNL_MSG_CONFIG)."""

    prefix = "NFULA_CFG_"
    nla_map = (
        ("NFULA_CFG_UNSPEC", "none"),
        ("NFULA_CFG_CMD", "cfg_cmd"),
        ("NFULA_CFG_MODE", "cfg_mode"),
        ("NFULA_CFG_NLBUFSIZ", "be32"),
        ("NFULA_CFG_TIMEOUT", "be32"),
        ("NFULA_CFG_QTHRESH", "be32"),
        ("NFULA_CFG_FLAGS", "be16"),
    )

    class cfg_cmd(nla):
        fields = (("command", "B"),)

    class cfg_mode(nla):
        fields = (("copy_range", "!I"), ("copy_mode", "B"), ("pad", "B"))


def parse_ip(payload: bytes) -> dict[str, Any] | None:
    """Family, protocol, addresses and ports of an IP packet's first bytes."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = payload[12:16], payload[16:20]
        family = "inet"
        transport = payload[ihl:]
    elif version == 6 and len(payload) >= 40:
        # Extension headers are not followed: a port is reported only for plain TCP/UDP.
        proto = payload[6]
        src, dst = payload[8:24], payload[24:40]
        family = "inet6"
        transport = payload[40:]
    else:
        return None
    info: dict[str, Any] = {
        "family": family,
        "proto": PROTOCOLS.get(proto, str(proto)),
        "local_addr": str(ipaddress.ip_address(src)),
        "remote_addr": str(ipaddress.ip_address(dst)),
        "local_port": None,
        "remote_port": None,
    }
    if proto in (6, 17) and len(transport) >= 4:
        info["local_port"], info["remote_port"] = struct.unpack_from("!HH", transport)
    return info


class NflogSocket(NetlinkSocket):
    """Receives the packets logged to one NFLOG group of this namespace."""

    def __init__(self, group: int) -> None:
        super().__init__(NETLINK_NETFILTER)
        self.group = group
        cfg = nflog_config_msg()
        cfg["nfgen_family"] = socket.AF_UNSPEC
        cfg["res_id"] = group
        cfg["attrs"] = [
            ("NFULA_CFG_CMD", {"command": NFULNL_CFG_CMD_BIND}),
            ("NFULA_CFG_MODE", {"copy_range": SNAPLEN, "copy_mode": NFULNL_COPY_PACKET}),
            # Deliver each packet at once (the default batches up to 100 or 1 s).
            ("NFULA_CFG_QTHRESH", 1),
            ("NFULA_CFG_TIMEOUT", 0),
        ]
        self.request([(cfg, NFULNL_MSG_CONFIG, 0)])

    def read(self) -> list[dict[str, Any]]:
        """The packets of one datagram: prefix, uid, gid, addresses, ports, protocol."""
        packets = []
        for kind, _seq, body in self.messages():
            if kind != NFULNL_MSG_PACKET:
                continue
            msg = nflog_msg(body)
            msg.decode()
            info = parse_ip(msg.get_attr("NFULA_PAYLOAD") or b"")
            if info is None:
                continue
            info["prefix"] = msg.get_attr("NFULA_PREFIX") or ""
            info["uid"] = msg.get_attr("NFULA_UID")
            info["gid"] = msg.get_attr("NFULA_GID")
            packets.append(info)
        return packets


def _tuple(msg: nla) -> dict[str, Any] | None:
    if msg is None:
        return None
    ip = msg.get_attr("CTA_TUPLE_IP")
    proto = msg.get_attr("CTA_TUPLE_PROTO")
    if ip is None or proto is None:
        return None
    src = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
    dst = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    number = proto.get_attr("CTA_PROTO_NUM")
    return {
        "family": "inet6" if ip.get_attr("CTA_IP_V6_SRC") else "inet",
        "proto": PROTOCOLS.get(number, str(number)),
        "local_addr": src,
        "remote_addr": dst,
        "local_port": proto.get_attr("CTA_PROTO_SRC_PORT"),
        "remote_port": proto.get_attr("CTA_PROTO_DST_PORT"),
    }


def _counters(msg: nla | None) -> tuple[int, int]:
    if msg is None:
        return 0, 0
    packets = msg.get_attr("CTA_COUNTERS_PACKETS") or msg.get_attr("CTA_COUNTERS32_PACKETS")
    octets = msg.get_attr("CTA_COUNTERS_BYTES") or msg.get_attr("CTA_COUNTERS32_BYTES")
    return int(packets or 0), int(octets or 0)


def parse_flow(body: bytes) -> dict[str, Any] | None:
    """Original tuple and counters both ways of one conntrack message."""
    msg = nfct_msg(body)
    msg.decode()
    flow = _tuple(msg.get_attr("CTA_TUPLE_ORIG"))
    if flow is None:
        return None
    flow["packets_out"], flow["bytes_out"] = _counters(msg.get_attr("CTA_COUNTERS_ORIG"))
    flow["packets_in"], flow["bytes_in"] = _counters(msg.get_attr("CTA_COUNTERS_REPLY"))
    return flow


class ConntrackSocket(NetlinkSocket):
    """This namespace's conntrack: DESTROY events (flows that ended), and table dumps.

    Counters are IP-level (headers included) and need
    ``net.netfilter.nf_conntrack_acct=1`` in the namespace; without it they read 0.
    """

    def __init__(self, events: bool = True) -> None:
        groups = 1 << (NFNLGRP_CONNTRACK_DESTROY - 1) if events else 0
        super().__init__(NETLINK_NETFILTER, groups=groups)

    def read(self) -> list[dict[str, Any]]:
        """The flows that ended, from one datagram of events."""
        flows = []
        for kind, _seq, body in self.messages():
            if kind == IPCTNL_MSG_CT_DELETE:
                flow = parse_flow(body)
                if flow is not None:
                    flows.append(flow)
        return flows

    def flows(self) -> list[dict[str, Any]]:
        """Every flow conntrack tracks now, with its counters so far."""
        query = nfgen_msg()
        query["nfgen_family"] = socket.AF_UNSPEC
        found = []
        for body in self.dump(query, IPCTNL_MSG_CT_GET):
            flow = parse_flow(body)
            if flow is not None:
                found.append(flow)
        return found
