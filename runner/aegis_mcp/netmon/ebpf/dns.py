"""DNS messages copied from the agent's packets, parsed with dnspython.

Only what netmon needs: the name asked, its type, the answer code and the
addresses of the answer, so that later connections to those addresses are
shown with the host name. dnspython is imported on the first message.
"""

from __future__ import annotations

import socket
from typing import Any


def parse_message(data: bytes, proto: int = socket.IPPROTO_UDP) -> dict[str, Any] | None:
    """The fields of a DNS message for a ``dns`` event, or None if it is not one.

    Over TCP a message starts with its 2-byte length; a message split across
    segments is parsed only when its first segment holds all of it.
    """
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rdatatype

    if proto == socket.IPPROTO_TCP:
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
    fields: dict[str, Any] = {
        "kind": "answer" if msg.flags & dns.flags.QR else "query",
        "host": question.name.to_text(omit_final_dot=True),
        "qtype": dns.rdatatype.to_text(question.rdtype),
    }
    if fields["kind"] == "answer":
        fields["rcode"] = msg.rcode()
        answers: list[str] = []
        for rrset in msg.answer:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                answers.extend(rdata.address for rdata in rrset)
        fields["answers"] = answers
    return fields
