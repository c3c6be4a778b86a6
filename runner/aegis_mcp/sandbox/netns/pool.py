"""The private address pool sandboxes take their point-to-point subnets from.

Each sandbox gets a /30 (gateway .1 on the host end, the sandbox .2) or a
/31 (RFC 3021: .0 and .1) from the pool, 10.213.0.0/16 unless configured.
A subnet is free when it overlaps no address or route of the host (in any
routing table) and no other sandbox's marker. Creators in different
processes are serialised by an ``flock`` on ``<state dir>/pool.lock``: the
marker that claims a subnet is written before the lock is released.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import PoolExhaustedError, SandboxError
from .markers import read_markers

DEFAULT_POOL = "10.213.0.0/16"
LOCK_NAME = "pool.lock"


@dataclass(frozen=True)
class AddressPool:
    """Where sandbox subnets come from: ``cidr`` cut into ``/prefixlen`` pieces (30 or 31)."""

    cidr: str = DEFAULT_POOL
    prefixlen: int = 30

    def __post_init__(self) -> None:
        try:
            net = ipaddress.IPv4Network(self.cidr, strict=True)
        except ValueError as exc:
            raise SandboxError(
                f"sandbox pool {self.cidr!r} is not an IPv4 network: {exc}"
            ) from None
        if self.prefixlen not in (30, 31):
            raise SandboxError(f"sandbox subnets must be /30 or /31, not /{self.prefixlen}")
        if net.prefixlen > self.prefixlen:
            raise SandboxError(f"sandbox pool {self.cidr} is smaller than one /{self.prefixlen}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The pool as a network."""
        return ipaddress.IPv4Network(self.cidr)

    @property
    def size(self) -> int:
        """How many subnets the pool holds."""
        return 1 << (self.prefixlen - self.network.prefixlen)

    def subnet(self, number: int) -> ipaddress.IPv4Network:
        """Subnet ``number`` (0-based) of the pool."""
        base = int(self.network.network_address) + (number << (32 - self.prefixlen))
        return ipaddress.IPv4Network((base, self.prefixlen))


def endpoints(subnet: ipaddress.IPv4Network) -> tuple[str, str]:
    """(host-end gateway, sandbox address) of a /30 or /31."""
    first = int(subnet.network_address)
    if subnet.prefixlen == 31:
        return str(ipaddress.IPv4Address(first)), str(ipaddress.IPv4Address(first + 1))
    return str(ipaddress.IPv4Address(first + 1)), str(ipaddress.IPv4Address(first + 2))


@contextmanager
def pool_lock(directory: Path) -> Iterator[None]:
    """Hold the pool lock (an flock: released by the kernel if the holder dies)."""
    # In the checked marker directory; never through a link planted under its name.
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(directory / LOCK_NAME, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def choose_subnet(
    pool: AddressPool,
    name: str,
    used: list[ipaddress.IPv4Network],
) -> ipaddress.IPv4Network:
    """The first subnet of ``pool`` that overlaps nothing in ``used``.

    The search starts at a place derived from ``name`` so that concurrent
    creators rarely want the same subnet (the lock makes it safe anyway).
    """
    spans = [(int(n.network_address), int(n.broadcast_address)) for n in used if n.version == 4]
    size = pool.size
    start = zlib.crc32(name.encode()) % size
    for step in range(size):
        candidate = pool.subnet((start + step) % size)
        low, high = int(candidate.network_address), int(candidate.broadcast_address)
        if not any(low <= end and begin <= high for begin, end in spans):
            return candidate
    raise PoolExhaustedError(
        f"the sandbox address pool {pool.cidr} is exhausted ({size} /{pool.prefixlen} subnets, "
        "all used by the host or other sandboxes): run `sudo aegis-mcp netns cleanup`, or "
        "configure a larger pool"
    )


def allocate(
    pool: AddressPool,
    name: str,
    directory: Path,
    host_networks: Callable[[], list[ipaddress.IPv4Network]],
    claim: Callable[[ipaddress.IPv4Network], None],
) -> ipaddress.IPv4Network:
    """Pick a free subnet and ``claim`` it (write the marker) under the pool lock."""
    with pool_lock(directory):
        used = list(host_networks())
        for marker in read_markers(directory):
            if marker.get("name") != name and marker.get("subnet"):
                try:
                    used.append(ipaddress.IPv4Network(marker["subnet"]))
                except ValueError:
                    continue
        subnet = choose_subnet(pool, name, used)
        claim(subnet)
        return subnet
