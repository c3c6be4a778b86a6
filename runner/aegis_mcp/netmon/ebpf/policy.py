"""The egress policy in the kernel: the sandbox's policy, applied by cgroup/connect4|6 and
sendmsg4|6 (bpf/policy.h) without a network namespace.

The policy is the project's one (``aegis_mcp.sandbox.policy.Policy``: ``--allow`` /
``--deny`` and ``[policy]``), used here through its attributes only, with the same rule:
the most specific matching spec wins (longer prefix; a host name is one address; with a
port beats without; deny beats an equally specific allow); no match, the default. A
refused ``connect()`` or ``sendto()`` fails with EPERM and is logged as ``blocked``.

Host names become addresses as in the sandbox: resolved when monitoring starts, then
learnt from each DNS answer the agent receives. One difference: the answer reaches the
agent before user space has read it, so a connection made within a millisecond of its
lookup is judged without the new address (by the default, or a network rule). With
``default = "deny"`` the resolvers of /etc/resolv.conf stay reachable on port 53, else no
name could be looked up at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

ALLOW = 1
DENY = 2
POLICY_OFF = 0
POLICY_DEFAULT_ALLOW = 1
POLICY_DEFAULT_DENY = 2

VERDICTS = {"allow": ALLOW, "deny": DENY}


class PolicyLike(Protocol):
    """What is used of ``aegis_mcp.sandbox.policy.Policy``."""

    default: str
    rules: list[Any]  # each with .action, .network, .host, .port, .is_host

    def learn(self, names: Iterable[str], addresses: Iterable[str]) -> list[tuple[Any, list[str]]]:
        """Addresses newly learnt per host-name rule."""
        ...

    def learned(self, rule: Any) -> set[str]:
        """The addresses known for a host-name rule."""
        ...


Entry = tuple[int, int, bytes, int, int]
"""(IP version, trie prefix length in bits, key data, verdict, network prefix bits)."""


def mode_of(policy: PolicyLike | None) -> int:
    """The config[CFG_POLICY] value: 0 off, 1 allow unless denied, 2 deny unless allowed."""
    if policy is None:
        return POLICY_OFF
    return POLICY_DEFAULT_DENY if policy.default == "deny" else POLICY_DEFAULT_ALLOW


def entry(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, port: int | None, verdict: int
) -> Entry:
    """One trie entry: the port (0 for any, network order) then the network address,
    matching ``struct lpm4_key`` / ``lpm6_key``; the prefix covers the 16 port bits and
    the network's prefix."""
    data = (port or 0).to_bytes(2, "big") + network.network_address.packed
    return (network.version, 16 + network.prefixlen, data, verdict, network.prefixlen)


def address_entry(addr: str, port: int | None, verdict: int) -> Entry:
    """The entry for one address (a host-name rule's learnt address)."""
    return entry(ipaddress.ip_network(addr), port, verdict)


def rule_entries(rule: Any, learned: Iterable[str] = ()) -> list[Entry]:
    """The entries of one rule: its network, or the addresses learnt for its host name."""
    verdict = VERDICTS[rule.action]
    if rule.network is not None:
        return [entry(rule.network, rule.port, verdict)]
    return [address_entry(addr, rule.port, verdict) for addr in learned]


def resolver_entries(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[Entry]:
    """Allow entries for the system's resolvers on port 53 (default-deny policies)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(address_entry(fields[1].split("%")[0], 53, ALLOW))
            except ValueError:
                continue
    return found


def merge(entries: Iterable[Entry]) -> dict[tuple[int, int, bytes], tuple[int, int]]:
    """Entries by trie key; of an allow and a deny for the same key, the deny stays."""
    merged: dict[tuple[int, int, bytes], tuple[int, int]] = {}
    for version, prefixlen, data, verdict, netbits in entries:
        key = (version, prefixlen, data)
        if merged.get(key, (0, 0))[0] != DENY:
            merged[key] = (verdict, netbits)
    return merged
