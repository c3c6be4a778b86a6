"""A small DNS forwarder for one sandbox, listening on the host end of its veth.

The sandbox's resolv.conf names only this forwarder. Each query is passed on
to the host's resolvers (those of the host's /etc/resolv.conf, or the ones
given) and each answer is read before it is relayed:
the names and addresses in it go to ``on_answer`` first, so that the egress
policy's host-name sets hold an address before the agent can connect to it.

UDP queries are handled by one thread with a selector (an upstream socket per
query in flight); TCP queries, rare, by a short thread each. Nothing here
knows about nftables or netmon: the callback does.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..dns_wire import DNS_PORT, Upstream, parse

TIMEOUT = 2.0
MAX_IN_FLIGHT = 256
MAX_MESSAGE = 65535
IP_FREEBIND = 15


@dataclass
class DnsAnswer:
    """What an answer relayed to the sandbox said."""

    qname: str
    qtype: str
    rcode: str
    names: set[str] = field(default_factory=set)
    """The query name and every CNAME target in the answer (lowercase, no trailing dot)."""
    addresses: list[str] = field(default_factory=list)
    client: tuple[str, int] | None = None
    upstream: Upstream | None = None


def parse_answer(wire: bytes) -> DnsAnswer | None:
    """Names, addresses and status of a DNS response; None if it does not parse."""
    msg = parse(wire)
    if msg is None:
        return None
    return DnsAnswer(
        qname=msg.qname.lower(),
        qtype=msg.qtype,
        rcode=msg.rcode_text,
        names=msg.names,
        addresses=msg.addresses,
    )


def servfail(query: bytes) -> bytes | None:
    """A SERVFAIL reply to ``query`` (None if the query does not parse)."""
    # dnspython is imported at the first message, not at every sandboxed start.
    import dns.exception
    import dns.message
    import dns.rcode

    try:
        msg = dns.message.from_wire(query)
    except (dns.exception.DNSException, ValueError):
        return None
    reply = dns.message.make_response(msg)
    reply.set_rcode(dns.rcode.SERVFAIL)
    return reply.to_wire()


@dataclass
class _Pending:
    client: tuple[str, int]
    query: bytes
    attempt: int
    deadline: float


class DnsForwarder:
    """Forwards the sandbox's DNS queries to upstream resolvers, reading every answer."""

    def __init__(
        self,
        listen: str,
        upstreams: list[Upstream],
        on_answer: Callable[[DnsAnswer], None] | None = None,
        port: int = DNS_PORT,
        timeout: float = TIMEOUT,
    ) -> None:
        self.listen = listen
        self.port = port
        self.upstreams = list(upstreams)
        self.on_answer = on_answer
        self.timeout = timeout
        self.queries = 0
        self.failures = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._udp = self._socket(socket.SOCK_DGRAM)
        self._tcp = self._socket(socket.SOCK_STREAM)
        self._tcp.listen(16)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._pending: dict[socket.socket, _Pending] = {}

    def _socket(self, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # The host end's address may not be configured yet when we bind.
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((self.listen, self.port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._serve, name=f"aegis-dns-{self.listen}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every socket (idempotent)."""
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        for sock in (self._udp, self._tcp, *self._pending):
            sock.close()
        self._pending.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # ---- the UDP loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "query")
        sel.register(self._tcp, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop:
                now = time.monotonic()
                deadline = min((p.deadline for p in self._pending.values()), default=now + 60)
                for key, _ in sel.select(max(deadline - now, 0)):
                    if key.data == "query":
                        self._query(sel)
                    elif key.data == "accept":
                        self._accept()
                    elif key.data == "reply":
                        self._reply(sel, key.fileobj)  # type: ignore[arg-type]
                self._expire(sel)
        finally:
            sel.close()

    def _query(self, sel: selectors.BaseSelector) -> None:
        try:
            query, client = self._udp.recvfrom(MAX_MESSAGE)
        except (BlockingIOError, OSError):
            return
        self.queries += 1
        if len(self._pending) >= MAX_IN_FLIGHT or not self.upstreams:
            self._answer_failure(client, query)
            return
        self._send_upstream(sel, _Pending(client, query, 0, 0.0))

    def _send_upstream(self, sel: selectors.BaseSelector, pending: _Pending) -> None:
        upstream = self.upstreams[pending.attempt % len(self.upstreams)]
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(upstream)
            sock.send(pending.query)
        except OSError:
            sock.close()
            self._retry(sel, pending)
            return
        pending.deadline = time.monotonic() + self.timeout
        self._pending[sock] = pending
        sel.register(sock, selectors.EVENT_READ, "reply")

    def _retry(self, sel: selectors.BaseSelector, pending: _Pending) -> None:
        pending.attempt += 1
        if pending.attempt >= len(self.upstreams):
            self._answer_failure(pending.client, pending.query)
        else:
            self._send_upstream(sel, pending)

    def _drop(self, sel: selectors.BaseSelector, sock: socket.socket) -> _Pending | None:
        pending = self._pending.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()
        return pending

    def _reply(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        try:
            wire = sock.recv(MAX_MESSAGE)
        except OSError:
            wire = b""
        pending = self._drop(sel, sock)
        if pending is None:
            return
        # A reply must answer this query (same id), else it is someone's spoof attempt.
        if len(wire) < 12 or wire[:2] != pending.query[:2]:
            self._retry(sel, pending)
            return
        upstream = self.upstreams[pending.attempt % len(self.upstreams)]
        self._relay(wire, pending.client, upstream)
        with contextlib.suppress(OSError):
            self._udp.sendto(wire, pending.client)

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for sock, pending in list(self._pending.items()):
            if pending.deadline <= now:
                self._drop(sel, sock)
                self._retry(sel, pending)

    def _answer_failure(self, client: tuple[str, int], query: bytes) -> None:
        self.failures += 1
        reply = servfail(query)
        if reply is not None:
            with contextlib.suppress(OSError):
                self._udp.sendto(reply, client)

    def _relay(self, wire: bytes, client: tuple[str, int], upstream: Upstream) -> None:
        if self.on_answer is None:
            return
        answer = parse_answer(wire)
        if answer is None:
            return
        answer.client = (str(client[0]), int(client[1]))
        answer.upstream = upstream
        # The callback runs before the reply leaves: the policy must know the
        # addresses before the agent can use them. Its failure must not cost the reply.
        with contextlib.suppress(Exception):
            self.on_answer(answer)

    # ---- TCP -------------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            conn, client = self._tcp.accept()
        except OSError:
            return
        thread = threading.Thread(target=self._serve_tcp, args=(conn, client), daemon=True)
        thread.start()

    def _serve_tcp(self, conn: socket.socket, client: tuple[str, int]) -> None:
        with conn:
            conn.setblocking(True)
            conn.settimeout(self.timeout)
            try:
                size = struct.unpack("!H", _read_exact(conn, 2))[0]
                query = _read_exact(conn, size)
            except (OSError, struct.error):
                return
            self.queries += 1
            for upstream in self.upstreams:
                try:
                    wire = _tcp_exchange(query, upstream, self.timeout)
                except OSError:
                    continue
                self._relay(wire, client, upstream)
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
                return
            self.failures += 1
            reply = servfail(query)
            if reply is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("!H", len(reply)) + reply)


def _read_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _tcp_exchange(query: bytes, upstream: Upstream, timeout: float) -> bytes:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(upstream)
        sock.sendall(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", _read_exact(sock, 2))[0]
        return _read_exact(sock, size)
