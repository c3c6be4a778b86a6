"""The two nftables tables of a sandbox, as libnftables JSON commands.

- **Inside the namespace**, table ``inet aegis``, hook ``output``: the egress
  policy. Rules there see the agent's own sockets, so a logged packet carries
  the uid of the process that sent it. Every new outbound flow is logged to
  NFLOG group :data:`NFLOG_GROUP` with a prefix saying what decided it
  (``a:<rule>`` accepted, ``d:<rule>`` refused): the monitor turns those into
  ``connect`` and ``blocked`` events. The table goes with the namespace.
- **On the host**, table ``inet <namespace name>`` (its NAT rule commented
  with the sandbox and its owner, the mark cleanup looks for):
  NAT (masquerade) for the sandbox's subnet, and an ``input`` backstop that
  drops what the sandbox sends to the host itself except the DNS forwarder
  and what an allow spec names. Teardown is one ``delete table``.

Decision order of the egress chain (see :mod:`..policy` for the rule):
loopback, established flows, the DNS forwarder; the user's specs, most
specific first; the host's addresses and the pool (other sandboxes); DNS to
anything but the forwarder when host-name specs exist (so names cannot be
resolved around the forwarder that keeps them fresh); the default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ..policy import ALLOW, Policy, Rule

NS_TABLE = "aegis"
NFLOG_GROUP = 1
FAMILY = "inet"
REJECT = {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
ACCEPT = {"accept": None}

# Log prefixes: what decided a logged packet (parsed back by the monitor).
ALLOWED = "a:"
DENIED = "d:"
IMPLICIT_HOST = "host"
IMPLICIT_POOL = "pool"
IMPLICIT_DNS = "dns"
DEFAULT = "default"


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


_ESTABLISHED = _match({"ct": {"key": "state"}}, ["established", "related"], "in")


def _daddr(version: int, right: Any) -> dict[str, Any]:
    proto = "ip" if version == 4 else "ip6"
    return _match({"payload": {"protocol": proto, "field": "daddr"}}, right)


def _saddr(version: int, right: Any) -> dict[str, Any]:
    proto = "ip" if version == 4 else "ip6"
    return _match({"payload": {"protocol": proto, "field": "saddr"}}, right)


def _net(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _port(port: int) -> list[dict[str, Any]]:
    return [
        _match({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]}),
        _match({"payload": {"protocol": "th", "field": "dport"}}, port),
    ]


def _meta(key: str, value: str, op: str = "==") -> dict[str, Any]:
    return _match({"meta": {"key": key}}, value, op)


def _verdict(action: str, tag: str) -> list[dict[str, Any]]:
    prefix = (ALLOWED if action == ALLOW else DENIED) + tag
    log = {"log": {"prefix": prefix, "group": NFLOG_GROUP}}
    return [log, ACCEPT if action == ALLOW else REJECT]


def host_set(rule: Rule, version: int) -> str:
    """Name of the set holding the addresses learnt for host-name ``rule``."""
    return f"h{rule.index}_{version}"


def _split(addresses: Iterable[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {4: [], 6: []}
    for addr in addresses:
        out[ipaddress.ip_address(addr).version].append(str(addr))
    return out


def _set(name: str, version: int, elems: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "family": FAMILY,
        "table": NS_TABLE,
        "name": name,
        "type": "ipv4_addr" if version == 4 else "ipv6_addr",
    }
    if elems:
        spec["elem"] = elems
    return {"add": {"set": spec}}


def _rule(
    chain: str, expr: list[dict[str, Any]], table: str = NS_TABLE, comment: str | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"family": FAMILY, "table": table, "chain": chain, "expr": expr}
    if comment is not None:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def sandbox_ruleset(
    policy: Policy,
    gateway: str,
    pool: ipaddress.IPv4Network,
    host_addresses: Iterable[str],
) -> list[dict[str, Any]]:
    """Commands creating the egress table inside the namespace."""
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": FAMILY, "name": NS_TABLE, "comment": "aegis-mcp egress"}}},
    ]
    hosts = _split(host_addresses)
    cmds += [_set("hostaddr_4", 4, hosts[4]), _set("hostaddr_6", 6, hosts[6])]
    for rule in policy.host_rules:
        learned = _split(policy.learned(rule))
        cmds += [_set(host_set(rule, 4), 4, learned[4]), _set(host_set(rule, 6), 6, learned[6])]
    cmds.append(
        {
            "add": {
                "chain": {
                    "family": FAMILY,
                    "table": NS_TABLE,
                    "name": "egress",
                    "type": "filter",
                    "hook": "output",
                    "prio": 0,
                    "policy": "accept",
                }
            }
        }
    )
    rules: list[list[dict[str, Any]]] = [
        [_meta("oifname", "lo"), ACCEPT],
        [_ESTABLISHED, ACCEPT],
        [_daddr(4, gateway), *_port(53), ACCEPT],
    ]
    for rule in policy.rules:
        ports = _port(rule.port) if rule.port is not None else []
        tag = str(rule.index)
        if rule.network is not None:
            rules.append([_daddr(rule.network.version, _net(rule.network)), *ports])
            rules[-1] += _verdict(rule.action, tag)
        else:
            for version in (4, 6):
                target = "@" + host_set(rule, version)
                rules.append([_daddr(version, target), *ports, *_verdict(rule.action, tag)])
    rules += [
        [_daddr(4, "@hostaddr_4"), *_verdict("deny", IMPLICIT_HOST)],
        [_daddr(6, "@hostaddr_6"), *_verdict("deny", IMPLICIT_HOST)],
        [_daddr(4, _net(pool)), *_verdict("deny", IMPLICIT_POOL)],
    ]
    if policy.host_rules:
        rules.append([*_port(53), *_verdict("deny", IMPLICIT_DNS)])
    rules.append(_verdict(policy.default, DEFAULT))
    cmds += [_rule("egress", expr) for expr in rules]
    return cmds


def learned_elements(changes: list[tuple[Rule, list[str]]]) -> list[dict[str, Any]]:
    """Commands adding newly learnt addresses to the host-name rules' sets."""
    cmds = []
    for rule, addrs in changes:
        for version, elems in _split(addrs).items():
            if elems:
                name = host_set(rule, version)
                element = {"family": FAMILY, "table": NS_TABLE, "name": name, "elem": elems}
                cmds.append({"add": {"element": element}})
    return cmds


def host_table_comment(name: str, owner_pid: int) -> str:
    """The marker comment of a sandbox's host table and its NAT rule (cleanup reads it)."""
    return f"aegis-mcp sandbox {name} owner {owner_pid}"


def host_ruleset(
    table: str,
    comment: str,
    host_if: str,
    subnet: ipaddress.IPv4Network,
    gateway: str,
    policy: Policy,
) -> list[dict[str, Any]]:
    """Commands creating the sandbox's table on the host: NAT and the input backstop."""

    def chain(name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
        spec = {"family": FAMILY, "table": table, "name": name, "type": kind, "hook": hook}
        return {"add": {"chain": {**spec, "prio": prio, "policy": "accept"}}}

    from_sandbox = _meta("iifname", host_if)
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": FAMILY, "name": table, "comment": comment}}},
        chain("postrouting", "nat", "postrouting", 100),
        chain("input", "filter", "input", 0),
        # The marker goes on a rule too: nft 1.0.6 drops a table's comment.
        _rule(
            "postrouting",
            [_saddr(4, _net(subnet)), _meta("oifname", host_if, "!="), {"masquerade": None}],
            table,
            comment,
        ),
        _rule("input", [from_sandbox, _daddr(4, gateway), *_port(53), ACCEPT], table),
        _rule("input", [from_sandbox, _ESTABLISHED, ACCEPT], table),
    ]
    # What an allow spec names on the host itself passes the backstop too
    # (host-name specs excepted: their addresses are only known inside).
    for rule in policy.rules:
        if rule.action == ALLOW and rule.network is not None:
            ports = _port(rule.port) if rule.port is not None else []
            expr = [from_sandbox, _daddr(rule.network.version, _net(rule.network)), *ports]
            cmds.append(_rule("input", [*expr, ACCEPT], table))
    cmds.append(_rule("input", [from_sandbox, {"drop": None}], table))
    return cmds


def delete_table(table: str) -> list[dict[str, Any]]:
    """The command removing a table and everything in it."""
    return [{"delete": {"table": {"family": FAMILY, "name": table}}}]
