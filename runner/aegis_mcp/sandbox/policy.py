"""The egress policy: which destinations a sandboxed agent may reach.

Specs come from ``--allow`` / ``--deny`` and the ``[policy]`` config section::

    [policy]
    default = "allow"                 # or "deny": only what is allowed goes out
    allow = ["api.anthropic.com:443", "10.1.0.0/16"]
    deny = ["169.254.169.254", "*.example.com", "[2001:db8::/32]:25"]

A spec is ``HOST|CIDR[:PORT]``: an IPv4 or IPv6 address or network (IPv6
in brackets when a port follows), or a host name (``*.`` in front matches
every name below it, not the name itself); a port applies to TCP and UDP.

**The rule that decides** (:data:`RULE_TEXT`): the most specific matching
spec wins. A longer prefix beats a shorter one, a host name counts as a
single address (/32, /128), a spec with a port beats the same destination
without one, and where an allow and a deny are equally specific the deny
wins. Nothing matching: the default. Around the user's specs the sandbox
adds fixed rules: loopback inside the namespace and the sandbox's own DNS
forwarder are always reachable (before any spec); the host's own addresses
and the other sandboxes' subnets are denied unless a spec allows them (after
the specs, before the default).

Host names are resolved when the sandbox starts and then learnt from every
DNS answer the agent receives through the sandbox's forwarder, so a name
keeps matching the addresses the agent actually uses.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PolicyError

ALLOW = "allow"
DENY = "deny"
RULE_TEXT = (
    "most specific matching spec wins (longer prefix; host name = one address; with port beats "
    "without); an allow and a deny equally specific: deny wins; no match: the default"
)
MAX_LEARNED_PER_RULE = 4096
"""A host-name rule stops learning addresses beyond this many (a bound on the nft set)."""

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rule:
    """One parsed spec."""

    action: str
    spec: str
    index: int
    network: Network | None = None
    host: str | None = None
    port: int | None = None

    @property
    def is_host(self) -> bool:
        """Whether the destination is a host name (resolved, then learnt from DNS)."""
        return self.host is not None

    def specificity(self) -> tuple[int, int, int]:
        """Sort key, most specific first: (prefix bits short of a single address, port, deny)."""
        missing = 0 if self.network is None else self.network.max_prefixlen - self.network.prefixlen
        return (missing, 0 if self.port is not None else 1, 0 if self.action == DENY else 1)

    def matches_name(self, name: str) -> bool:
        """Whether the host name ``name`` (lowercase, no trailing dot) is this rule's."""
        if self.host is None:
            return False
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "action": self.action,
            "spec": self.spec,
            "destination": self.host if self.network is None else str(self.network),
            "port": self.port,
        }


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise PolicyError(f"{spec!r}: the port must be a number from 1 to 65535")
    return int(text)


def _host(text: str, spec: str) -> str:
    name = text.lower().rstrip(".")
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise PolicyError(
            f"{spec!r} is not a host name, an address or a network "
            "(HOST|CIDR[:PORT], IPv6 with a port as [ADDR]:PORT)"
        )
    return name


def parse_spec(spec: str, action: str, index: int = 0) -> Rule:
    """Parse one ``HOST|CIDR[:PORT]`` spec; PolicyError says what is wrong."""
    if action not in (ALLOW, DENY):
        raise PolicyError(f"unknown action {action!r} (allow or deny)")
    text = spec.strip()
    if not text:
        raise PolicyError("an empty --allow/--deny spec")
    port: int | None = None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep:
            raise PolicyError(f"{spec!r}: missing ']'")
        if rest:
            if not rest.startswith(":"):
                raise PolicyError(f"{spec!r}: only ':PORT' may follow ']'")
            port = _port(rest[1:], spec)
        dest = inner
    elif text.count(":") == 1:
        dest, _, port_text = text.partition(":")
        port = _port(port_text, spec)
    else:
        dest = text
    try:
        network = ipaddress.ip_network(dest, strict=False)
    except ValueError:
        if ":" in dest or "/" in dest:
            raise PolicyError(f"{spec!r}: not a valid address or network") from None
        return Rule(action, spec, index, host=_host(dest, spec), port=port)
    return Rule(action, spec, index, network=network, port=port)


@dataclass
class Policy:
    """Allow/deny rules in decision order, and the addresses learnt for host-name rules."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    default: str = ALLOW
    rules: list[Rule] = field(init=False)
    _learned: dict[int, set[str]] = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.default not in (ALLOW, DENY):
            raise PolicyError(f"policy default must be 'allow' or 'deny', not {self.default!r}")
        self.allow = tuple(self.allow)
        self.deny = tuple(self.deny)
        parsed = [parse_spec(s, ALLOW, i) for i, s in enumerate(self.allow)]
        parsed += [parse_spec(s, DENY, len(parsed) + i) for i, s in enumerate(self.deny)]
        self.rules = sorted(parsed, key=lambda r: (*r.specificity(), r.index))
        self._learned = {r.index: set() for r in parsed if r.is_host}

    @classmethod
    def from_config(
        cls, table: Mapping[str, Any] | None, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> Policy:
        """The ``[policy]`` table plus command-line specs (added to the table's)."""
        table = dict(table or {})
        unknown = sorted(set(table) - {"default", "allow", "deny"})
        if unknown:
            raise PolicyError(f"[policy]: unknown setting(s) {', '.join(unknown)}")
        lists = {}
        for key in ("allow", "deny"):
            value = table.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PolicyError(f"[policy].{key} must be a list of strings")
            lists[key] = value
        default = table.get("default", ALLOW)
        if not isinstance(default, str):
            raise PolicyError('[policy].default must be "allow" or "deny"')
        return cls(allow=(*lists["allow"], *allow), deny=(*lists["deny"], *deny), default=default)

    @property
    def host_rules(self) -> list[Rule]:
        """The rules whose destination is a host name."""
        return [r for r in self.rules if r.is_host]

    def learned(self, rule: Rule) -> set[str]:
        """A copy of the addresses known for host-name ``rule``."""
        with self._lock:
            return set(self._learned.get(rule.index, ()))

    def learn(self, names: Iterable[str], addresses: Iterable[str]) -> list[tuple[Rule, list[str]]]:
        """Record that ``names`` (a query name and its CNAME chain) resolve to ``addresses``.

        Returns, per host-name rule that matches one of the names, the
        addresses it did not know yet: what the firewall must add.
        """
        clean = {n.lower().rstrip(".") for n in names}
        addrs = sorted({str(ipaddress.ip_address(a)) for a in addresses})
        changes = []
        with self._lock:
            for rule in self.rules:
                if not rule.is_host or not any(rule.matches_name(n) for n in clean):
                    continue
                known = self._learned[rule.index]
                fresh = [a for a in addrs if a not in known]
                room = MAX_LEARNED_PER_RULE - len(known)
                fresh = fresh[: max(room, 0)]
                if fresh:
                    known.update(fresh)
                    changes.append((rule, fresh))
        return changes

    def decide(self, addr: str, port: int | None = None) -> tuple[str, Rule | None]:
        """What the user's specs say about ``addr:port``: (action, deciding rule or None).

        Mirrors the firewall's order for the specs alone (the sandbox's fixed
        rules are not included); for explaining and for tests.
        """
        ip = ipaddress.ip_address(addr)
        with self._lock:
            for rule in self.rules:
                if rule.port is not None and rule.port != port:
                    continue
                if rule.network is not None and ip.version == rule.network.version:
                    if ip in rule.network:
                        return rule.action, rule
                elif rule.is_host and str(ip) in self._learned[rule.index]:
                    return rule.action, rule
        return self.default, None

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: default, rules in decision order, learnt address counts."""
        with self._lock:
            return {
                "default": self.default,
                "rule": RULE_TEXT,
                "rules": [
                    {**r.as_dict(), "learned": len(self._learned[r.index])}
                    if r.is_host
                    else r.as_dict()
                    for r in self.rules
                ],
            }
