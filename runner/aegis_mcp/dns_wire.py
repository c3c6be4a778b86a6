"""DNS on the wire: reading the messages an agent's lookups produce, and asking resolvers.

One parser for every place that sees DNS: eBPF monitoring reads the messages it
copies from the agent's packets, the netns sandbox's forwarder the answers it
relays. Both want the same few things: the name asked, its type, the answer
code, the names of the answer's CNAME chain and the addresses it gives, so that
later connections to those addresses are shown (and judged) by host name.
dnspython does the parsing; it is imported on first use, as only these paths
need it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

DNS_PORT = 53

Upstream = tuple[str, int]
"""A resolver's address and port."""


@dataclass
class DnsMessage:
    """What one DNS message says."""

    is_answer: bool
    qname: str
    """The name asked, as on the wire (case kept), without the trailing dot."""
    qtype: str
    rcode: int
    names: set[str] = field(default_factory=set)
    """The query name and every name of the answer's CNAME chain (lowercase, no trailing dot)."""
    addresses: list[str] = field(default_factory=list)
    """The A and AAAA addresses of the answer, in wire order."""

    @property
    def rcode_text(self) -> str:
        """The answer code by name (``NOERROR``, ``NXDOMAIN``, ...)."""
        import dns.rcode

        return dns.rcode.to_text(self.rcode)


def parse(data: bytes, tcp: bool = False) -> DnsMessage | None:
    """The DNS message in ``data``, or None if it is not one.

    Over TCP (``tcp``) a message starts with its 2-byte length; a message split
    across segments is parsed only when its first segment holds all of it.
    """
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rdatatype

    if tcp:
        if len(data) < 2:
            return None
        length = int.from_bytes(data[:2], "big")
        data = data[2 : 2 + length]
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if not msg.question:
        return None
    question = msg.question[0]
    qname = question.name.to_text(omit_final_dot=True)
    parsed = DnsMessage(
        is_answer=bool(msg.flags & dns.flags.QR),
        qname=qname,
        qtype=dns.rdatatype.to_text(question.rdtype),
        rcode=msg.rcode(),
        names={qname.lower()},
    )
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            parsed.names.add(rrset.name.to_text(omit_final_dot=True).lower())
            for rdata in rrset:
                parsed.names.add(rdata.target.to_text(omit_final_dot=True).lower())
        elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            parsed.names.add(rrset.name.to_text(omit_final_dot=True).lower())
            parsed.addresses.extend(rdata.address for rdata in rrset)
    return parsed


def host_upstreams(resolv_conf: str | Path = "/etc/resolv.conf") -> list[Upstream]:
    """The host's resolvers: the ``nameserver`` lines of its resolv.conf.

    Read here rather than through ``dns.resolver``, whose import (with importlib.metadata and
    the email package under it) costs about 150 ms of every sandboxed start, for lines that
    are an address each (resolv.conf(5)); a line that is not one is skipped, as the resolver
    library skips it.
    """
    import ipaddress

    try:
        text = Path(resolv_conf).read_text(errors="replace")
    except OSError:
        return []
    found: list[Upstream] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(words[1])  # a scope (fe80::1%eth0) is kept
        except ValueError:
            continue
        if (str(address), DNS_PORT) not in found:
            found.append((str(address), DNS_PORT))
    return found


def resolve(
    names: list[str], upstreams: list[Upstream], lifetime: float = 2.0
) -> dict[str, list[str]]:
    """A and AAAA addresses of each name, asked of ``upstreams`` (a name that fails: [])."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [ip for ip, _ in upstreams]
    resolver.nameserver_ports = {ip: port for ip, port in upstreams}
    resolver.lifetime = lifetime
    found: dict[str, list[str]] = {}
    for name in names:
        addrs: list[str] = []
        for rdtype in ("A", "AAAA"):
            with contextlib.suppress(dns.exception.DNSException):
                addrs += [r.address for r in resolver.resolve(name, rdtype, search=False)]
        found[name] = addrs
    return found
