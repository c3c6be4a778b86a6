"""The netns sandbox against real namespaces, veths, nftables and a real agent process.

A second namespace stands in for the internet (the "outside" host: TCP, UDP
and DNS servers on 198.51.100.0/24, reached from the host through a veth of
the test's own). Nothing else is ever contacted; a blackhole route for that
range catches any packet that would otherwise leave through the default route.

The agent is a real child started by processes.AgentProcess with the
sandbox's confine steps, dropped to ``nobody``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.cleanup.registry import Kind
from aegis_mcp.cleanup.sweep import sweep
from aegis_mcp.netmon.stats import NetmonStats
from aegis_mcp.owners import process_start_time
from helpers import REPO, wait_for

if os.geteuid() != 0:
    pytest.skip("netns sandboxes need root (namespaces, veths, nftables)", allow_module_level=True)
if shutil.which("ip") is None:
    pytest.skip(
        "the outside host of these tests is built with iproute2's `ip`", allow_module_level=True
    )

from aegis_mcp.privileges import AgentUser
from aegis_mcp.processes import AgentProcess, ChildReaper, SpawnSpec
from aegis_mcp.sandbox.netns import namespaces
from aegis_mcp.sandbox.netns import nft as nft_module

if not nft_module.available():
    pytest.skip("nftables is not installed (apt-get install nftables)", allow_module_level=True)

from aegis_mcp.sandbox.netns import AddressPool, NetnsSandbox, create_sandbox
from aegis_mcp.sandbox.netns import sandbox as sandbox_module
from aegis_mcp.sandbox.netns.leftovers import NetnsLeftovers
from aegis_mcp.sandbox.netns.markers import DEFAULT_STATE_DIR
from aegis_mcp.sandbox.policy import Policy

OUT_NET = "198.51.100"
OUT_HOST_END = f"{OUT_NET}.1"  # the host's address on the outside link: the NAT address
OUT_DNS = f"{OUT_NET}.2"
ALLOWED = f"{OUT_NET}.10"
DENIED = f"{OUT_NET}.20"
TCP_PORT = 7000
UDP_PORT = 7001
PAYLOAD = 300_000
NOBODY = AgentUser(uid=65534, gid=65534, name="nobody", home="/", shell="/bin/sh", drop=True)

SERVER = textwrap.dedent(
    """
    import json, socket, sys, threading
    import dns.message, dns.rrset
    log = open(sys.argv[1], "a", buffering=1)
    ZONE = {"allowed.test.": "%(allowed)s", "denied.test.": "%(denied)s"}

    def tcp(addr):
        srv = socket.create_server((addr, %(tcp)d))
        while True:
            conn, peer = srv.accept()
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            conn.sendall(f"{total} {peer[0]}".encode())
            conn.close()
            log.write(json.dumps({"tcp": addr, "peer": peer[0], "bytes": total}) + "\\n")

    def udp():
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("%(allowed)s", %(udp)d))
        while True:
            data, peer = srv.recvfrom(2048)
            srv.sendto(peer[0].encode(), peer)
            log.write(json.dumps({"udp": peer[0], "bytes": len(data)}) + "\\n")

    def dns_server():
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("%(dns)s", 53))
        while True:
            wire, peer = srv.recvfrom(2048)
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            name = query.question[0].name.to_text()
            if name in ZONE and query.question[0].rdtype == 1:
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", ZONE[name]))
            srv.sendto(reply.to_wire(), peer)
            log.write(json.dumps({"dns": name, "peer": peer[0]}) + "\\n")

    for target in (lambda: tcp("%(allowed)s"), lambda: tcp("%(denied)s"), udp, dns_server):
        threading.Thread(target=target, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
    """
) % {"allowed": ALLOWED, "denied": DENIED, "tcp": TCP_PORT, "udp": UDP_PORT, "dns": OUT_DNS}

AGENT = textwrap.dedent(
    """
    import json, os, socket, sys
    out = {"uid": os.getuid(), "netns": os.stat("/proc/self/ns/net").st_ino}
    out["resolv"] = open("/etc/resolv.conf").read()

    def attempt(addr, port, payload=b""):
        try:
            with socket.create_connection((addr, port), timeout=5) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                return sock.recv(100).decode()
        except OSError as exc:
            return f"error: {exc.strerror or exc}"

    out["allowed_addr"] = socket.getaddrinfo("allowed.test", 7000, socket.AF_INET)[0][4][0]
    out["allowed"] = attempt(out["allowed_addr"], 7000, b"x" * %(payload)d)
    out["denied_addr"] = socket.getaddrinfo("denied.test", 7000, socket.AF_INET)[0][4][0]
    out["denied"] = attempt(out["denied_addr"], 7000)
    out["host"] = attempt(sys.argv[1], int(sys.argv[2]))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(5)
    udp.sendto(b"ping", ("%(allowed)s", %(udp)d))
    out["udp"] = udp.recvfrom(100)[0].decode()
    print(json.dumps(out), flush=True)
    """
) % {"payload": PAYLOAD, "allowed": ALLOWED, "udp": UDP_PORT}


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stand-in internet; yields the log its servers write."""
    pid = os.getpid()
    name, link = f"aegistest-out-{pid}", f"aeto{pid}"
    log = tmp_path_factory.mktemp("outside") / "servers.jsonl"
    server = None
    try:
        _ip("route", "add", "blackhole", f"{OUT_NET}.0/24", "metric", "4000")
        _ip("netns", "add", name)
        _ip("link", "add", link, "type", "veth", "peer", "name", "out0", "netns", name)
        _ip("addr", "add", f"{OUT_HOST_END}/24", "dev", link)
        _ip("link", "set", link, "up")
        for addr in (OUT_DNS, ALLOWED, DENIED):
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", "out0")
        _ip("-n", name, "link", "set", "out0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", SERVER, str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield log
    finally:
        if server is not None:
            server.kill()
            server.wait()
        _ip("link", "del", link, check=False)
        _ip("netns", "del", name, check=False)
        _ip("route", "del", "blackhole", f"{OUT_NET}.0/24", "metric", "4000", check=False)


def _server_log(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _host_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _host_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("table")}


def assert_gone(name: str, host_if: str) -> None:
    """Nothing of sandbox ``name`` is left (the veth may take the kernel a moment)."""
    wait_for(lambda: host_if not in _host_links(), what=f"{host_if} to disappear")
    assert not (Path("/var/run/netns") / name).exists()
    assert name not in _host_tables()
    assert not (Path("/etc/netns") / name).exists()
    assert not (DEFAULT_STATE_DIR / f"{name}.json").exists()


def run_agent(sandbox: NetnsSandbox, argv: list[str], user: AgentUser = NOBODY) -> tuple[int, str]:
    """Run ``argv`` as the agent, confined to ``sandbox``; returns (exit code, output)."""

    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        reaper = ChildReaper(loop)
        chunks: list[bytes] = []
        sink = os.open(os.devnull, os.O_WRONLY)
        try:
            spec = SpawnSpec(
                argv=argv,
                env={"PATH": "/usr/bin:/bin", "HOME": "/"},
                cwd="/",
                user=user,
                use_pty=False,
                stdin_devnull=True,
                confine=sandbox.confine,
            )
            agent = AgentProcess(spec, reaper, chunks.append, sink, sink)
            code = await asyncio.wait_for(agent.wait(), 60)
            await agent.cleanup()
        finally:
            reaper.close()
            os.close(sink)
        return code, b"".join(chunks).decode()

    return asyncio.run(main())


def test_agent_in_sandbox_reaches_out_through_nat_under_the_policy(outside: Path) -> None:
    stats = NetmonStats(mode="netns")
    policy = Policy(deny=("denied.test",))
    sandbox = create_sandbox(
        os.getpid(), "t1", policy, upstreams=[(OUT_DNS, 53)], on_event=stats.ingest
    )
    # A service on the host, which the agent must not reach through its gateway.
    listener = __import__("socket").create_server(("0.0.0.0", 0))
    host_port = listener.getsockname()[1]
    try:
        before = sandbox.counters()
        assert before is not None
        code, output = run_agent(
            sandbox,
            ["/usr/bin/python3", "-c", AGENT, sandbox.gateway, str(host_port)],
        )
        assert code == 0, output
        result = json.loads(output.strip().splitlines()[-1])

        # In its own namespace, as the dropped user, with the sandbox's resolver.
        assert result["netns"] != os.stat("/proc/self/ns/net").st_ino
        assert result["uid"] == 65534
        assert f"nameserver {sandbox.gateway}" in result["resolv"]

        # Out through NAT: the outside server saw the host's address, not the sandbox's.
        assert result["allowed_addr"] == ALLOWED
        count, peer = result["allowed"].split()
        assert int(count) == PAYLOAD
        assert peer == OUT_HOST_END != sandbox.address
        assert result["udp"] == OUT_HOST_END

        # The name resolved through the sandbox's forwarder, which told netmon.
        dns_events = [e for e in sandbox.recent_events(200) if e["event"] == "dns"]
        assert {"allowed.test", "denied.test"} <= {e["host"] for e in dns_events}
        assert any(e["answers"] == [ALLOWED] for e in dns_events if e["host"] == "allowed.test")

        # The denied host (learnt from DNS) and the host itself were refused, and logged.
        assert result["denied_addr"] == DENIED
        assert result["denied"].startswith("error")
        assert result["host"].startswith("error")
        assert not any(e.get("tcp") == DENIED for e in _server_log(outside))
        blocked = wait_for(
            lambda: (
                (b := [e for e in stats.recent(500) if e["event"] == "blocked"])
                and len(b) >= 2
                and b
            ),
            what="two blocked events",
        )
        denied = next(e for e in blocked if e["remote_addr"] == DENIED)
        assert denied["remote_port"] == TCP_PORT
        assert denied["source"] == "netns"
        assert denied["uid"] == 65534
        assert denied["rule"] == "deny denied.test"
        assert denied["host"] == "denied.test"  # named by the dns event, in NetmonStats
        to_host = next(e for e in blocked if e["remote_addr"] == sandbox.gateway)
        assert to_host["remote_port"] == host_port
        assert "host" in to_host["reason"]
        status = stats.status()
        assert status["blocked_connections"] >= 2

        # The allowed connection was seen with its process, then its bytes.
        connect = next(
            e
            for e in stats.recent(500)
            if e["event"] == "connect" and e["remote_addr"] == ALLOWED and e["proto"] == "tcp"
        )
        assert connect["uid"] == 65534
        assert connect["pid"] is None or isinstance(connect["pid"], int)

        # Bytes. conntrack counts IP packets (IP + TCP headers, handshake, ACKs) of
        # the flow; the veth counts Ethernet frames of everything the sandbox sent
        # (DNS and the refused attempts too). Both at least the payload, and at most
        # the payload plus 10 % (headers of ~1500-byte segments are ~4 %) plus 64 KiB.
        def flow_sent() -> int:
            return sum(
                e["bytes"]
                for e in stats.recent(5000)
                if e["event"] == "send"
                and e["remote_addr"] == ALLOWED
                and e["remote_port"] == TCP_PORT
            )

        wait_for(lambda: flow_sent() >= PAYLOAD, what="conntrack byte counts of the flow")
        assert PAYLOAD <= flow_sent() <= PAYLOAD * 1.1 + 65536
        after = sandbox.counters()
        assert after is not None
        sent = after["tx_bytes"] - before["tx_bytes"]
        assert PAYLOAD <= sent <= PAYLOAD * 1.1 + 65536
        assert after["rx_bytes"] > before["rx_bytes"]
    finally:
        listener.close()
        sandbox.teardown()
    assert_gone(sandbox.name, sandbox.host_if)


def test_teardown_is_complete_and_idempotent() -> None:
    sandbox = create_sandbox(os.getpid(), "t2", Policy(), upstreams=[])
    try:
        assert (Path("/var/run/netns") / sandbox.name).exists()
        assert sandbox.host_if in _host_links()
        assert sandbox.name in _host_tables()
        assert sandbox.resolv_path.exists()
        assert len(sandbox.confine) == 3
        assert sandbox.describe()["subnet"] == str(sandbox.subnet)
    finally:
        assert sandbox.teardown() == []
    assert sandbox.teardown() == []
    assert sandbox.confine == ()
    assert_gone(sandbox.name, sandbox.host_if)


def test_a_second_sandbox_of_the_same_name_is_a_clash() -> None:
    from aegis_mcp.sandbox.errors import NameClashError

    sandbox = create_sandbox(os.getpid(), "t3", Policy(), upstreams=[])
    try:
        with pytest.raises(NameClashError, match="already exists"):
            create_sandbox(os.getpid(), "t3", Policy(), upstreams=[])
    finally:
        sandbox.teardown()
    assert_gone(sandbox.name, sandbox.host_if)


def test_exhausted_pool_is_a_clear_error() -> None:
    from aegis_mcp.sandbox.errors import PoolExhaustedError

    # A pool of one /30, taken by the first sandbox.
    pool = AddressPool("10.213.255.252/30", 30)
    first = create_sandbox(os.getpid(), "t4a", Policy(), pool, upstreams=[])
    try:
        with pytest.raises(PoolExhaustedError, match="exhausted"):
            create_sandbox(os.getpid(), "t4b", Policy(), pool, upstreams=[])
        assert not (Path("/var/run/netns") / f"aegis-{os.getpid()}-t4b").exists()
        assert not (DEFAULT_STATE_DIR / f"aegis-{os.getpid()}-t4b.json").exists()
    finally:
        first.teardown()
    assert_gone(first.name, first.host_if)


HOLDER = textwrap.dedent(
    """
    import json, os, sys, threading
    sys.path.insert(0, %(runner)r)
    from aegis_mcp.sandbox.netns import create_sandbox
    from aegis_mcp.sandbox.policy import Policy
    count = int(sys.argv[1])
    made = [None] * count
    def make(i):
        made[i] = create_sandbox(os.getpid(), f"h{i}", Policy(), upstreams=[])
    threads = [threading.Thread(target=make, args=(i,)) for i in range(count)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps([[s.name, str(s.subnet), s.host_if] for s in made]), flush=True)
    sys.stdin.readline()
    for s in made: s.teardown()
    """
) % {"runner": str(REPO / "runner")}


def _holder(count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_twenty_concurrent_sandboxes_get_distinct_subnets() -> None:
    import ipaddress

    holders = [_holder(4), _holder(4)]
    mine: list[NetnsSandbox] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def make(i: int) -> None:
        try:
            sandbox = create_sandbox(os.getpid(), f"c{i}", Policy(), upstreams=[])
        except BaseException as exc:
            errors.append(exc)
        else:
            with lock:
                mine.append(sandbox)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(12)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        found = [[s.name, str(s.subnet), s.host_if] for s in mine]
        for holder in holders:
            assert holder.stdout is not None
            found += json.loads(holder.stdout.readline())
        assert not errors, errors
        assert len(found) == 20
        subnets = [ipaddress.ip_network(subnet) for _, subnet, _ in found]
        assert len(set(subnets)) == 20
        for i, a in enumerate(subnets):
            assert not any(a.overlaps(b) for b in subnets[i + 1 :])
        assert len({host_if for _, _, host_if in found}) == 20
        assert all(Path("/var/run/netns", name).exists() for name, _, _ in found)
    finally:
        for holder in holders:
            with contextlib.suppress(OSError):
                assert holder.stdin is not None
                holder.stdin.write("\n")
                holder.stdin.flush()
            holder.wait(60)
        for sandbox in mine:
            sandbox.teardown()
    for sandbox in mine:
        assert_gone(sandbox.name, sandbox.host_if)


KILLED = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, %(runner)r)
    from aegis_mcp.sandbox.netns import create_sandbox
    from aegis_mcp.sandbox.policy import Policy
    s = create_sandbox(os.getpid(), "k", Policy(deny=("192.0.2.99",)), upstreams=[])
    print(s.name, s.host_if, flush=True)
    time.sleep(600)
    """
) % {"runner": str(REPO / "runner")}


def netns_sweep(**where: Any) -> dict[str, Any]:
    """A sweep of the netns kind alone (``where``: NetnsLeftovers' directories)."""
    kind = Kind("netns", "namespaces", True, lambda: NetnsLeftovers(**where))
    return sweep(kinds=[kind]).to_dict()


def test_cleanup_removes_what_a_killed_runner_left_and_keeps_live_ones() -> None:
    live = create_sandbox(os.getpid(), "t5", Policy(), upstreams=[])
    proc = subprocess.Popen([sys.executable, "-c", KILLED], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        name, host_if = proc.stdout.readline().split()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Everything is still there after the crash...
        assert Path("/var/run/netns", name).exists()
        assert host_if in _host_links()
        assert name in _host_tables()
        assert Path("/etc/netns", name).exists()
        assert (DEFAULT_STATE_DIR / f"{name}.json").exists()
        listed = {n["name"]: n for n in namespaces.list_namespaces()}
        assert listed[name]["owner_alive"] is False
        assert listed[live.name]["owner_alive"] is True

        result = netns_sweep()
        # Another cleanup on this machine (other test runs) may get to some of it
        # first, and the kernel takes the veth along with the namespace: what must
        # hold is that nothing of the dead runner is left, and nothing of ours went.
        assert not any(r["group"] == live.name for r in result["removed"])
        kept = {(k["kind"], k["group"]): k["reason"] for k in result["kept"]}
        assert "is alive" in kept[("namespace", live.name)]
        assert {"nft_table", "veth", "marker"} <= {k for k, g in kept if g == live.name}
        assert_gone(name, host_if)
        # ...and the live sandbox was not touched.
        assert Path("/var/run/netns", live.name).exists()
        assert live.host_if in _host_links()
        assert live.name in _host_tables()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        live.teardown()
    assert_gone(live.name, live.host_if)


def test_cleanup_still_takes_a_bare_namespace_of_a_dead_owner() -> None:
    # No marker (a namespace made by an older runner): the name's pid decides.
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"aegis-{dead.pid}"
    _ip("netns", "add", name)
    try:
        removed = netns_sweep()["removed"]
        assert {"kind": "namespace", "group": name} in [
            {"kind": r["kind"], "group": r["group"]} for r in removed
        ] or not Path("/var/run/netns", name).exists()
    finally:
        _ip("netns", "del", name, check=False)
    assert not Path("/var/run/netns", name).exists()


def test_cleanup_kills_what_runs_in_a_dead_owners_namespace_by_pid_and_start_time(
    tmp_path: Path,
) -> None:
    """The owner's pid runs an aegis-looking process, but not the one that made the
    namespace (its start time differs): the namespace is a leftover, and the process
    in it is killed before it goes. A pool agent's namespace whose agent still runs
    stays (the agent is orphaned), and so does one whose owner is really alive."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "aegis"])
    start = process_start_time(owner.pid)
    assert start is not None
    dead, pool, live = (f"aegis-{owner.pid}{suffix}" for suffix in ("", "-pool1", "-live"))
    markers_dir = tmp_path / "markers"
    markers_dir.mkdir()
    inside: list[subprocess.Popen] = []
    try:
        for name, owner_start in ((dead, start - 1), (pool, start - 1), (live, start)):
            _ip("netns", "add", name)
            marker = {"name": name, "owner_pid": owner.pid, "owner_start": owner_start}
            (markers_dir / f"{name}.json").write_text(json.dumps(marker))
            # The pool agent leads its own session, as the pool starts it.
            inside.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", name, "sleep", "600"], start_new_session=name == pool
                )
            )
        wait_for(
            lambda: all(os.readlink(f"/proc/{p.pid}/exe").endswith("sleep") for p in inside),
            what="the sleepers in their namespaces",
        )
        result = netns_sweep(state_dir=markers_dir)
        removed = {(r["kind"], r["group"]): r for r in result["removed"]}
        assert removed[("namespace", dead)]["processes"] == [inside[0].pid]
        assert ("marker", dead) in removed
        assert inside[0].wait(timeout=10) == -signal.SIGKILL
        assert not Path("/var/run/netns", dead).exists()
        kept = {(k["kind"], k["group"]): k["reason"] for k in result["kept"]}
        assert "pool agent pool1" in kept[("namespace", pool)]
        assert "pool agent pool1" in kept[("marker", pool)]
        assert "is alive" in kept[("namespace", live)]
        assert inside[1].poll() is None and inside[2].poll() is None
        assert owner.poll() is None
    finally:
        for proc in (*inside, owner):
            proc.kill()
            proc.wait()
        for name in (dead, pool, live):
            _ip("netns", "del", name, check=False)


def test_the_forwarding_setting_comes_back_when_the_last_sandbox_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real switch stays on (other tests and containers on this machine may
    # need it): a file stands in for it, and a private marker directory makes
    # this sandbox the only, hence the last, one.
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    monkeypatch.setattr(sandbox_module, "IP_FORWARD", forward)
    state = tmp_path / "state"
    first = create_sandbox(os.getpid(), "t6a", Policy(), upstreams=[], state_dir=state)
    second = create_sandbox(os.getpid(), "t6b", Policy(), upstreams=[], state_dir=state)
    try:
        assert forward.read_text().strip() == "1"
        assert first.ip_forward_was == "0"
        assert second.ip_forward_was == "1"
        first.teardown()
        assert forward.read_text().strip() == "1"  # the second still needs it
    finally:
        first.teardown()
        second.teardown()
    assert forward.read_text().strip() == "0"
    assert not (state / "ip_forward.orig").exists()
