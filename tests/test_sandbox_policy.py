"""The sandbox's parts that need no root: policy, firewall rules, pool, DNS forwarder, errors.

The DNS forwarder test talks to a DNS server of its own on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rrset
import pytest

from aegis_mcp.sandbox.dns_proxy import DnsAnswer, DnsForwarder, parse_answer
from aegis_mcp.sandbox.errors import (
    NftablesMissingError,
    NotRootError,
    PolicyError,
    PoolExhaustedError,
    SandboxError,
)
from aegis_mcp.sandbox.netns import firewall
from aegis_mcp.sandbox.netns import pool as pool_module
from aegis_mcp.sandbox.netns import sandbox as sandbox_module
from aegis_mcp.sandbox.netns.markers import write_marker
from aegis_mcp.sandbox.netns.pool import AddressPool, choose_subnet, endpoints
from aegis_mcp.sandbox.policy import Policy, parse_spec

# ---- specs and the deciding rule -----------------------------------------------------------


def test_specs_parse_hosts_networks_and_ports() -> None:
    rule = parse_spec("api.example.com:443", "allow")
    assert (rule.host, rule.port, rule.network) == ("api.example.com", 443, None)
    rule = parse_spec("10.0.0.0/8", "deny")
    assert (rule.network, rule.port) == (ipaddress.ip_network("10.0.0.0/8"), None)
    rule = parse_spec("[2001:db8::/32]:25", "deny")
    assert (rule.network, rule.port) == (ipaddress.ip_network("2001:db8::/32"), 25)
    assert parse_spec("2001:db8::1", "deny").network == ipaddress.ip_network("2001:db8::1/128")
    assert parse_spec("Example.COM.", "deny").host == "example.com"
    assert parse_spec("*.example.com", "deny").matches_name("a.b.example.com")
    assert not parse_spec("*.example.com", "deny").matches_name("example.com")
    for bad in ("", "host:0", "host:99999", "host:http", "bad_name!", "[::1", "10.0.0.0/33"):
        with pytest.raises(PolicyError):
            parse_spec(bad, "deny")


def test_most_specific_spec_wins_and_deny_wins_a_tie() -> None:
    policy = Policy(allow=("10.1.2.3", "10.0.0.0/8:443", "192.0.2.0/24"), deny=("10.0.0.0/8",))
    assert policy.decide("10.1.2.3", 80)[0] == "allow"  # /32 beats /8
    assert policy.decide("10.9.9.9", 443)[0] == "allow"  # same prefix, with port beats without
    assert policy.decide("10.9.9.9", 80)[0] == "deny"
    assert policy.decide("203.0.113.1", 80) == ("allow", None)  # the default
    tie = Policy(allow=("192.0.2.0/24",), deny=("192.0.2.0/24",))
    assert tie.decide("192.0.2.7", 22)[0] == "deny"
    strict = Policy(allow=("192.0.2.0/24",), default="deny")
    assert strict.decide("198.51.100.1", 80) == ("deny", None)
    assert strict.decide("192.0.2.1", 80)[0] == "allow"


def test_host_rules_learn_addresses_from_answers() -> None:
    policy = Policy(deny=("tracker.example", "*.ads.example"))
    assert policy.decide("192.0.2.5")[0] == "allow"
    changes = policy.learn(["www.tracker.example", "tracker.example"], ["192.0.2.5"])
    assert [(rule.spec, addrs) for rule, addrs in changes] == [("tracker.example", ["192.0.2.5"])]
    assert policy.learn(["tracker.example"], ["192.0.2.5"]) == []  # nothing new
    assert policy.decide("192.0.2.5")[0] == "deny"
    assert policy.learn(["x.ads.example"], ["2001:db8::5"])[0][1] == ["2001:db8::5"]
    assert policy.describe()["rules"][0]["learned"] in (1, 0)


def test_policy_from_config_adds_command_line_specs() -> None:
    policy = Policy.from_config(
        {"default": "deny", "allow": ["pypi.org:443"]}, allow=["10.0.0.1"], deny=["10.0.0.2"]
    )
    assert policy.default == "deny"
    assert policy.allow == ("pypi.org:443", "10.0.0.1")
    assert policy.deny == ("10.0.0.2",)
    with pytest.raises(PolicyError, match="unknown"):
        Policy.from_config({"alow": []})
    with pytest.raises(PolicyError, match="list of strings"):
        Policy.from_config({"allow": "pypi.org"})
    with pytest.raises(PolicyError, match="default"):
        Policy.from_config({"default": "maybe"})


# ---- the firewall's order ------------------------------------------------------------------


def _verdicts(cmds: list[dict]) -> list[str]:
    out = []
    for cmd in cmds:
        rule = cmd.get("add", {}).get("rule")
        if rule is None:
            continue
        log = next((e["log"]["prefix"] for e in rule["expr"] if "log" in e), None)
        out.append(log or ("accept" if {"accept": None} in rule["expr"] else "other"))
    return out


def test_egress_chain_order() -> None:
    policy = Policy(allow=("192.0.2.0/24",), deny=("192.0.2.9", "bad.example"))
    cmds = firewall.sandbox_ruleset(
        policy, "10.213.0.1", ipaddress.ip_network("10.213.0.0/16"), ["192.0.2.2", "::1"]
    )
    deny_ip = next(r.index for r in policy.rules if r.spec == "192.0.2.9")
    deny_host = next(r.index for r in policy.rules if r.spec == "bad.example")
    allow = next(r.index for r in policy.rules if r.spec == "192.0.2.0/24")
    assert _verdicts(cmds) == [
        "accept",  # loopback
        "accept",  # established
        "accept",  # the DNS forwarder
        f"d:{deny_ip}",  # /32 first (the IP spec was given first: ties keep order)
        f"d:{deny_host}",  # the host-name set, IPv4
        f"d:{deny_host}",  # and IPv6
        f"a:{allow}",
        "d:host",
        "d:host",
        "d:pool",
        "d:dns",  # host-name specs exist: no DNS around the forwarder
        "a:default",
    ]
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in cmds if "set" in c.get("add", {})}
    assert sets["hostaddr_4"]["elem"] == ["192.0.2.2"]
    assert sets["hostaddr_6"]["elem"] == ["::1"]
    learned = firewall.learned_elements(policy.learn(["bad.example"], ["203.0.113.9"]))
    assert learned == [
        {
            "add": {
                "element": {
                    "family": "inet",
                    "table": "aegis",
                    "name": f"h{deny_host}_4",
                    "elem": ["203.0.113.9"],
                }
            }
        }
    ]


def test_host_table_masquerades_and_guards_the_host() -> None:
    policy = Policy(allow=("10.0.0.5:8080",))
    comment = firewall.host_table_comment("aegis-1-x", 1)
    cmds = firewall.host_ruleset(
        "aegis-1-x", comment, "ae1h0", ipaddress.ip_network("10.213.0.0/30"), "10.213.0.1", policy
    )
    rules = [c["add"]["rule"] for c in cmds if "rule" in c["add"]]
    assert rules[0]["comment"] == comment
    assert {"masquerade": None} in rules[0]["expr"]
    assert [r["chain"] for r in rules] == ["postrouting", "input", "input", "input", "input"]
    assert {"drop": None} in rules[-1]["expr"]


# ---- the pool ------------------------------------------------------------------------------


def test_pool_skips_used_subnets_and_says_when_full() -> None:
    pool = AddressPool("10.213.0.0/29", 30)
    assert pool.size == 2
    used = [ipaddress.ip_network("10.213.0.0/30")]
    assert choose_subnet(pool, "a", used) == ipaddress.ip_network("10.213.0.4/30")
    # A host route covering the whole pool leaves nothing.
    with pytest.raises(PoolExhaustedError, match="exhausted"):
        choose_subnet(pool, "a", [ipaddress.ip_network("10.0.0.0/8")])
    assert endpoints(ipaddress.ip_network("10.213.0.4/30")) == ("10.213.0.5", "10.213.0.6")
    assert endpoints(ipaddress.ip_network("10.213.0.4/31")) == ("10.213.0.4", "10.213.0.5")
    for bad in (("10.213.0.0/16", 29), ("10.213.0.1/16", 30), ("fd00::/64", 30)):
        with pytest.raises(SandboxError):
            AddressPool(*bad)


def test_pool_allocation_claims_under_the_lock(tmp_path) -> None:
    pool = AddressPool("10.213.0.0/28", 30)
    claimed = []

    def claim(subnet: ipaddress.IPv4Network) -> None:
        claimed.append(subnet)
        write_marker(tmp_path, {"name": f"n{len(claimed)}", "subnet": str(subnet)})

    got = {pool_module.allocate(pool, f"x{i}", tmp_path, list, claim) for i in range(4)}
    assert len(got) == 4
    with pytest.raises(PoolExhaustedError):
        pool_module.allocate(pool, "x5", tmp_path, list, claim)


# ---- clear errors --------------------------------------------------------------------------


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)
    with pytest.raises(NotRootError, match=r"needs root.*sudo"):
        sandbox_module.create_sandbox(12345, None)


def test_missing_nftables_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox_module, "nft_available", lambda: False)
    with pytest.raises(NftablesMissingError, match="apt-get install nftables"):
        sandbox_module.create_sandbox(12345, None)


# ---- the DNS forwarder ---------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[tuple[str, int]]:
    """A DNS server on loopback: example.test is 192.0.2.10 (via a CNAME), the rest NXDOMAIN."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = srv.recvfrom(2048)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            if query.question[0].name.to_text() == "example.test.":
                reply.answer.append(
                    dns.rrset.from_text("example.test.", 60, "IN", "CNAME", "cdn.test.")
                )
                reply.answer.append(dns.rrset.from_text("cdn.test.", 60, "IN", "A", "192.0.2.10"))
            else:
                reply.set_rcode(3)
            srv.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()
    finally:
        stop.set()
        thread.join()
        srv.close()


def _ask(port: int, name: str) -> dns.message.Message:
    import dns.query

    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)


def test_forwarder_relays_answers_after_telling_the_policy(upstream: tuple[str, int]) -> None:
    answers: list[DnsAnswer] = []
    # The port: a free one on loopback (the forwarder binds it; root would use 53).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    forwarder = DnsForwarder("127.0.0.1", [("127.0.0.1", 9), upstream], answers.append, port=port)
    forwarder.timeout = 0.5  # the first upstream never answers: the second must
    forwarder.start()
    try:
        reply = _ask(port, "example.test")
        assert [rr.to_text() for rrset in reply.answer for rr in rrset][-1] == "192.0.2.10"
        answer = answers[-1]
        assert (answer.qname, answer.qtype, answer.rcode) == ("example.test", "A", "NOERROR")
        assert answer.names == {"example.test", "cdn.test"}
        assert answer.addresses == ["192.0.2.10"]
        assert answer.upstream == upstream
        assert _ask(port, "missing.test").rcode() == 3
        assert forwarder.queries == 2
    finally:
        forwarder.stop()
    forwarder.stop()  # idempotent


def test_parse_answer_ignores_garbage() -> None:
    assert parse_answer(b"\x00\x01") is None
