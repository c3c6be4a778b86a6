"""DNS messages copied from the agent's packets, as the fields of a ``dns`` event.

Parsing is :mod:`aegis_mcp.dns_wire`'s; this keeps what netmon shows: the
name asked, its type, the answer code and the addresses of the answer, so
that later connections to those addresses are shown with the host name.
"""

from __future__ import annotations

import socket
from typing import Any

from ...dns_wire import parse


def parse_message(data: bytes, proto: int = socket.IPPROTO_UDP) -> dict[str, Any] | None:
    """The fields of a DNS message for a ``dns`` event, or None if it is not one."""
    msg = parse(data, tcp=proto == socket.IPPROTO_TCP)
    if msg is None:
        return None
    fields: dict[str, Any] = {
        "kind": "answer" if msg.is_answer else "query",
        "host": msg.qname,
        "qtype": msg.qtype,
    }
    if msg.is_answer:
        fields["rcode"] = msg.rcode
        fields["answers"] = msg.addresses
    return fields
