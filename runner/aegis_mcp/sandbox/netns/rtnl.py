"""Route netlink over a plain socket, with pyroute2's message classes.

pyroute2's ``IPRoute`` runs every request through its asyncio core (about
0.7 ms each here) and its ``netns=`` option starts a helper process (about
11 ms); a sandbox set-up needs a dozen requests in two namespaces within a
few milliseconds. So this module keeps pyroute2 for what it is good at,
encoding and decoding the messages (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``),
and sends them on a ``NETLINK_ROUTE`` socket of its own, several requests
per ``send`` where they do not depend on each other.

Create an :class:`Rtnl` in the namespace it must act on (see :mod:`.nlsock`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .nlsock import HEADER, NetlinkError, NetlinkSocket, Request, attributes

IFF_UP = 0x1
IFLA_IFNAME = 3
IFLA_IFALIAS = 20
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
_IFINFO = struct.Struct("=BxHiII")
_IFADDR_SIZE = 8
_RTMSG_SIZE = 12
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1

_NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_GETLINK: "RTM_GETLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE",
}


class Rtnl(NetlinkSocket):
    """A route netlink socket in the namespace of the thread that creates it."""

    names = _NAMES

    def __init__(self) -> None:
        super().__init__(socket.NETLINK_ROUTE)

    # ---- links --------------------------------------------------------------------------------

    def link_index(self, ifname: str) -> int | None:
        """Index of the link named ``ifname`` in this namespace, None if there is none."""
        try:
            replies = self.request([(link_msg(ifname=ifname), RTM_GETLINK, 0)])
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        # The index is a fixed field: no need for a full (slow) decode.
        return int(_IFINFO.unpack_from(replies[0], HEADER.size)[2])

    def link_info(self, index: int) -> dict[str, Any]:
        """Name, alias and 64-bit counters of link ``index`` (NetlinkError if gone)."""
        replies = self.request([(link_msg(index=index), RTM_GETLINK, 0)])
        msg = ifinfmsg(replies[0])
        msg.decode()
        stats = msg.get_attr("IFLA_STATS64") or {}
        return {
            "index": index,
            "ifname": msg.get_attr("IFLA_IFNAME"),
            "alias": msg.get_attr("IFLA_IFALIAS"),
            "stats": {k: v for k, v in dict(stats).items() if isinstance(v, int)},
        }

    def links(self) -> list[dict[str, Any]]:
        """Every link of this namespace: index, name and alias."""
        found = []
        for body in self.dump(link_msg(), RTM_GETLINK):
            attrs = attributes(body, HEADER.size + _IFINFO.size)
            found.append(
                {
                    "index": _IFINFO.unpack_from(body, HEADER.size)[2],
                    "ifname": _text(attrs.get(IFLA_IFNAME)),
                    "alias": _text(attrs.get(IFLA_IFALIAS)),
                }
            )
        return found

    def delete_link(self, index: int) -> bool:
        """Delete link ``index`` (a veth takes its peer with it); False if it was gone."""
        try:
            self.request([(link_msg(index=index), RTM_DELLINK, 0)])
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True

    # ---- what the host uses -------------------------------------------------------------------

    def addresses_and_networks(self) -> tuple[list[str], list[ipaddress.IPv4Network]]:
        """Every address of this namespace (IPv4 and IPv6), and the IPv4 networks in use.

        The networks are those of every IPv4 address and route, in any
        routing table; the default route is left out (every subnet is in it).
        """
        addresses: list[str] = []
        networks: list[ipaddress.IPv4Network] = []
        query = ifaddrmsg()
        query["family"] = socket.AF_UNSPEC
        for body in self.dump(query, RTM_GETADDR):
            family, prefixlen = body[HEADER.size], body[HEADER.size + 1]
            attrs = attributes(body, HEADER.size + _IFADDR_SIZE)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addr = ipaddress.ip_address(raw)
            addresses.append(str(addr))
            if family == socket.AF_INET:
                networks.append(ipaddress.IPv4Network((int(addr), prefixlen), strict=False))
        query = rtmsg()
        query["family"] = socket.AF_INET
        for body in self.dump(query, RTM_GETROUTE):
            dst_len = body[HEADER.size + 1]
            raw = attributes(body, HEADER.size + _RTMSG_SIZE).get(RTA_DST)
            if dst_len and raw is not None and len(raw) == 4:
                networks.append(ipaddress.IPv4Network((raw, dst_len), strict=False))
        return addresses, networks


def _text(raw: bytes | None) -> str | None:
    return raw.rstrip(b"\0").decode(errors="replace") if raw is not None else None


# ---- message builders --------------------------------------------------------------------------


def link_msg(
    index: int = 0,
    ifname: str | None = None,
    up: bool | None = None,
    attrs: list[tuple[str, Any]] | None = None,
) -> ifinfmsg:
    """An ifinfmsg naming a link by index or name, optionally setting it up or down."""
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = index
    msg["flags"] = IFF_UP if up else 0
    msg["change"] = IFF_UP if up is not None else 0
    nlas = list(attrs or [])
    if ifname is not None:
        nlas.insert(0, ("IFLA_IFNAME", ifname))
    msg["attrs"] = nlas
    return msg


def veth_msg(ifname: str, index: int, peer: str, peer_netns_fd: int) -> Request:
    """Create veth ``ifname`` with ``index`` here, its peer ``peer`` in ``peer_netns_fd``'s
    namespace. (Choosing the index saves asking for it: in a new namespace only lo's is taken.)"""
    peer_info = {
        "attrs": [
            ("IFLA_IFNAME", peer),
            ("IFLA_NET_NS_FD", peer_netns_fd),
        ]
    }
    info = {
        "attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_info)]}),
        ]
    }
    msg = link_msg(index=index, ifname=ifname, attrs=[("IFLA_LINKINFO", info)])
    return msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL


def up_msg(index: int) -> Request:
    """Set link ``index`` up."""
    return link_msg(index=index, up=True), RTM_NEWLINK, 0


def alias_msg(index: int, alias: str) -> Request:
    """Set the alias (``ip link set ... alias``) of link ``index``, and no IPv6 on it.

    IPv6 address generation off (``addrgenmode none``): the sandbox side is
    IPv4 only, and a link-local address would only add neighbour discovery
    chatter to the counters.
    """
    inet6 = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}
    attrs = [("IFLA_IFALIAS", alias), ("IFLA_AF_SPEC", inet6)]
    return link_msg(index=index, attrs=attrs), RTM_NEWLINK, 0


def addr_msg(index: int, address: str, prefixlen: int) -> Request:
    """Add an IPv4 address to link ``index``."""
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = prefixlen
    msg["index"] = index
    msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    return msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL


def default_route_msg(gateway: str, oif: int) -> Request:
    """Add the IPv4 default route via ``gateway`` on link ``oif``."""
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["table"] = RT_TABLE_MAIN
    msg["proto"] = RTPROT_STATIC
    msg["scope"] = 0
    msg["type"] = RTN_UNICAST
    msg["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", oif)]
    return msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL
