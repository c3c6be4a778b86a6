"""eBPF netmon against the real kernel: BPF programs on a real cgroup, real processes.

Root and a working BCC set-up (scripts/setup_bpf.sh) are needed; elsewhere every test
skips with the reason ebpf_available() gives. Servers are started by this file on
127.0.0.0/8 only. Nothing here asserts timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.netmon.ebpf import EbpfMonitor, EbpfUnavailable, ebpf_available
from aegis_mcp.netmon.ebpf.availability import kprobe_problem
from aegis_mcp.netmon.stats import NetmonStats
from aegis_mcp.privileges import AgentUser
from aegis_mcp.processes import AgentProcess, ChildReaper, SpawnSpec
from aegis_mcp.sandbox.policy import Policy
from helpers import REPO, wait_for

OK, REASON = ebpf_available()
pytestmark = pytest.mark.skipif(not OK, reason=f"eBPF monitoring unavailable: {REASON}")

TIMEOUT = 60
PYTHON_COMM = Path(sys.executable).name[:15]
HOOKS_LIB = REPO / "hooks" / "libaegis_hooks.so"

CLIENT = """
import socket, sys
host, port, n_out, n_in = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port))
s.sendall(b"x" * n_out)
s.shutdown(socket.SHUT_WR)
got = 0
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += len(chunk)
s.close()
assert got == n_in, got
"""

RAW_CONNECT_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Connects to port argv[1] with libc's connect() and to port argv[2] with a raw
   syscall, as Bun and Go binaries do; sends 5 bytes on each, through libc's send()
   and a raw sendto() respectively. */
static int dial(int port, int raw)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int r = raw ? (int)syscall(SYS_connect, fd, &a, sizeof a)
                : connect(fd, (struct sockaddr *)&a, sizeof a);
    if (r != 0) { perror("connect"); exit(1); }
    if (raw) syscall(SYS_sendto, fd, "hello", 5, 0, NULL, 0); else send(fd, "hello", 5, 0);
    return fd;
}

int main(int argc, char **argv)
{
    int a = dial(atoi(argv[1]), 0);
    int b = dial(atoi(argv[2]), 1);
    close(a);
    syscall(SYS_close, b);
    return 0;
}
"""


# ---- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def exchange_server(reply: int, host: str = "127.0.0.1") -> Iterator[tuple[int, list[int]]]:
    """A TCP server on ``host``: for each connection reads to EOF, then sends ``reply`` bytes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(16)
    listener.settimeout(TIMEOUT)
    received: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT)
                got = 0
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(65536):
                        got += len(chunk)
                    conn.sendall(b"y" * reply)
                received.append(got)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


@contextlib.contextmanager
def dns_responder(answers: dict[str, str]) -> Iterator[int]:
    """A DNS server on 127.0.0.1 (UDP, a free port) answering A queries from ``answers``."""
    import dns.message
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            name = query.question[0].name.to_text(omit_final_dot=True)
            if name in answers:
                reply.answer.append(dns.rrset.from_text(name + ".", 30, "IN", "A", answers[name]))
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


@pytest.fixture
def monitor_factory() -> Iterator[Any]:
    """Makes EbpfMonitors for this test (agent ids t<pid>-<n>) and closes them after it."""
    made: list[EbpfMonitor] = []

    def make(**kwargs: Any) -> EbpfMonitor:
        stats = kwargs.pop("stats", None) or NetmonStats(mode="ebpf")
        monitor = EbpfMonitor(os.getpid(), f"t{len(made)}", stats, **kwargs)
        made.append(monitor)
        return monitor

    yield make
    for monitor in made:
        for pid in monitor.cgroup_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        wait_for(lambda m=monitor: not m.cgroup_pids(), TIMEOUT, what="cgroup to empty")
        assert monitor.close(), f"{monitor.cgroup.path} left behind"


def run_in(monitor: EbpfMonitor | None, argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start ``argv`` inside the agent's cgroup (``monitor``) or outside (None)."""
    steps = monitor.confine if monitor is not None else ()

    def setup() -> None:
        for step in steps:
            step()

    return subprocess.Popen(argv, preexec_fn=setup, **kwargs)


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}: {out!r} {err!r}"


def events_of(monitor: EbpfMonitor, **match: Any) -> list[dict[str, Any]]:
    """The monitor's events (read fresh) whose fields equal ``match``."""
    found = monitor.fresh_stats().recent(5000)
    return [e for e in found if all(e.get(k) == v for k, v in match.items())]


def wait_events(monitor: EbpfMonitor, what: str, count: int = 1, **match: Any) -> list[dict]:
    return wait_for(
        lambda: (found := events_of(monitor, **match)) and len(found) >= count and found,
        TIMEOUT,
        what=what,
    )


async def _run_agent(monitor: EbpfMonitor, argv: list[str], user: AgentUser) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    reaper = ChildReaper(loop)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        spec = SpawnSpec(
            argv=argv,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
            user=user,
            use_pty=False,
            stdin_devnull=True,
            confine=monitor.confine,
        )
        agent = AgentProcess(spec, reaper, lambda _data: None, devnull, devnull)
        code = await agent.wait()
        await agent.cleanup()
        return agent.pid, code
    finally:
        reaper.close()
        os.close(devnull)


# ---- tests ---------------------------------------------------------------------------------------


def test_agent_connect_and_exact_payload_bytes(monitor_factory) -> None:
    """An agent started like the runner starts it (AgentProcess, confine steps, then the
    drop to another user) is seen with its pid, comm, uid and destination; the byte
    totals are the payload, to the byte."""
    monitor = monitor_factory()
    nobody = pwd.getpwnam("nobody")
    user = AgentUser(
        uid=nobody.pw_uid,
        gid=nobody.pw_gid,
        name="nobody",
        home="/",
        shell="/bin/sh",
        groups=(nobody.pw_gid,),
        drop=True,
    )
    sent, reply = 100_000, 12_345
    with exchange_server(reply) as (port, received):
        argv = [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), str(sent), str(reply)]
        pid, code = asyncio.run(_run_agent(monitor, argv, user))
        assert code == 0
        assert received == [sent]
    (connect,) = wait_events(monitor, "the connect event", event="connect", pid=pid)
    assert connect["comm"] == PYTHON_COMM
    assert connect["uid"] == nobody.pw_uid  # joined the cgroup as root, then dropped
    assert (connect["remote_addr"], connect["remote_port"]) == ("127.0.0.1", port)
    assert connect["result"] == 0 and connect["proto"] == "tcp" and connect["source"] == "ebpf"
    assert connect["agent"] == monitor.agent_id
    (close,) = wait_events(monitor, "the close event", event="close", pid=pid)
    assert (close["bytes_sent"], close["bytes_recv"]) == (sent, reply)
    stats = monitor.fresh_stats()
    (target,) = [t for t in stats.targets() if t["port"] == port]
    assert (target["bytes_sent"], target["bytes_received"]) == (sent, reply)
    assert target["connections"] == 1
    (proc,) = [p for p in stats.processes() if p["pid"] == pid]
    assert (proc["bytes_sent"], proc["bytes_received"]) == (sent, reply)
    assert monitor.lost_events == 0


@pytest.fixture(scope="module")
def raw_connect_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raw-syscall client, compiled here."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("needs gcc to build the raw-syscall client")
    src = tmp_path_factory.mktemp("raw") / "raw_connect.c"
    src.write_text(RAW_CONNECT_C)
    out = src.with_suffix("")
    subprocess.run([cc, "-O1", "-o", str(out), str(src)], check=True, timeout=TIMEOUT)
    return out


@pytest.fixture(scope="module")
def hooks_lib() -> Path:
    """The preload hooks library (built by `make build`)."""
    if not HOOKS_LIB.is_file():
        proc = subprocess.run(
            ["make", "-C", str(REPO), "build"], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0 or not HOOKS_LIB.is_file():
            pytest.skip(f"cannot build the hooks library: {proc.stderr[-500:]}")
    return HOOKS_LIB


def test_raw_syscall_connect_is_seen_by_ebpf_but_not_by_preload(
    monitor_factory, raw_connect_bin: Path, hooks_lib: Path, tmp_path: Path
) -> None:
    monitor = monitor_factory()
    log = tmp_path / "netmon.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LD_PRELOAD": str(hooks_lib),
        "AEGIS_NETMON_LOG": str(log),
    }
    with exchange_server(0) as (libc_port, _), exchange_server(0) as (raw_port, _):
        proc = run_in(
            monitor,
            [str(raw_connect_bin), str(libc_port), str(raw_port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        finish(proc)
        ebpf_ports = {
            e["remote_port"]
            for e in wait_events(monitor, "both connects", 2, event="connect", pid=proc.pid)
        }
    assert ebpf_ports == {libc_port, raw_port}
    for port in (libc_port, raw_port):
        (close,) = wait_events(monitor, f"close of :{port}", event="close", remote_port=port)
        assert close["bytes_sent"] == 5
    preload = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    preload_ports = {e.get("remote_port") for e in preload if e.get("event") == "connect"}
    # The control: preload does work in this process, for the libc call.
    assert libc_port in preload_ports
    assert raw_port not in preload_ports


def test_process_outside_the_cgroup_is_not_attributed(monitor_factory) -> None:
    monitor = monitor_factory()
    with exchange_server(10) as (port, received):
        inside = run_in(monitor, [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), "7", "10"])
        outside = run_in(None, [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), "9", "10"])
        finish(inside)
        finish(outside)
        wait_for(lambda: len(received) == 2, TIMEOUT, what="both clients served")
    wait_events(monitor, "the insider's close", event="close", pid=inside.pid)
    seen = monitor.fresh_stats().recent(5000)
    assert not [e for e in seen if e.get("pid") == outside.pid]
    (target,) = [t for t in monitor.fresh_stats().targets() if t["port"] == port]
    assert target["connections"] == 1 and target["bytes_sent"] == 7  # the insider's alone


DNS_CLIENT = """
import socket, sys
import dns.message
port, name, tcp_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
query = dns.message.make_query(name, "A")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(query.to_wire(), ("127.0.0.1", port))
answer = dns.message.from_wire(s.recv(4096))
address = answer.answer[0][0].address
c = socket.create_connection((address, tcp_port))
c.sendall(b"ping")
c.close()
"""


def test_dns_answers_name_the_hosts_connected_to(monitor_factory) -> None:
    name = "api.aegis-test.example"
    with dns_responder({name: "127.0.0.2"}) as dns_port:
        monitor = monitor_factory(dns_ports=(53, dns_port))
        with exchange_server(0, host="127.0.0.2") as (port, _):
            argv = [sys.executable, "-c", DNS_CLIENT, str(dns_port), name, str(port)]
            finish(
                run_in(monitor, argv, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            )
            (answer,) = wait_events(monitor, "the DNS answer", event="dns", kind="answer")
            (query,) = events_of(monitor, event="dns", kind="query")
            (connect,) = wait_events(monitor, "the connect", event="connect", remote_port=port)
    assert query["host"] == name and query["qtype"] == "A" and query["remote_port"] == dns_port
    assert answer["host"] == name and answer["answers"] == ["127.0.0.2"]
    assert connect["remote_addr"] == "127.0.0.2" and connect["host"] == name
    stats = monitor.fresh_stats()
    assert stats.status()["dns_lookups"] == 1
    (target,) = [t for t in stats.targets() if t["port"] == port]
    assert target["host"] == name


DENIED_CLIENT = """
import errno, socket, sys
allowed, port = int(sys.argv[1]), int(sys.argv[2])
for host in ("127.0.0.3",):
    s = socket.socket()
    try:
        s.connect((host, port))
    except PermissionError as exc:
        assert exc.errno == errno.EPERM
    else:
        raise SystemExit("connected to a denied destination")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", ("127.0.0.3", port))
except PermissionError:
    pass
else:
    raise SystemExit("sent to a denied destination")
ok = socket.create_connection(("127.0.0.1", allowed))
ok.close()
"""


def test_denied_destination_fails_with_eperm_and_is_logged(monitor_factory) -> None:
    policy = Policy(deny=("127.0.0.3/32",))
    monitor = monitor_factory(policy=policy)
    with exchange_server(0) as (allowed, _):
        proc = run_in(monitor, [sys.executable, "-c", DENIED_CLIENT, str(allowed), "9"])
        finish(proc)
        wait_events(monitor, "the allowed connect", event="connect", remote_port=allowed)
    blocked = events_of(monitor, event="blocked", pid=proc.pid)
    assert {(e["proto"], e["remote_addr"], e["remote_port"]) for e in blocked} == {
        ("tcp", "127.0.0.3", 9),
        ("udp", "127.0.0.3", 9),
    }
    assert all(e["result"] == "EPERM" for e in blocked)
    status = monitor.fresh_stats().status()
    assert status["blocked_connections"] == 2
    assert monitor.status()["policy"]["default"] == "allow"


def test_failed_connect_and_inbound_accept(monitor_factory) -> None:
    """The tracepoint tier settles connects (refused -> failed) and sees accepts."""
    monitor = monitor_factory()
    if "tracepoint" not in monitor.tiers:
        pytest.skip(f"tracepoint tier unavailable: {monitor.skipped.get('tracepoint')}")
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()  # nobody listens there now
    code = (
        "import socket, sys\n"
        "try:\n    socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "except ConnectionRefusedError:\n    pass\n"
        "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n"
        "print(l.getsockname()[1], flush=True)\n"
        "c, _ = l.accept(); c.recv(10); c.close()\n"
    )
    proc = run_in(
        monitor, [sys.executable, "-c", code, str(closed_port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    listen_port = int(proc.stdout.readline())
    with socket.create_connection(("127.0.0.1", listen_port)) as peer:
        peer.sendall(b"hi")
    finish(proc)
    (failed,) = wait_events(monitor, "the refused connect", event="connect", pid=proc.pid)
    assert failed["remote_port"] == closed_port and failed["result"] == "failed"
    (accept,) = wait_events(monitor, "the accept", event="accept", local_port=listen_port)
    assert accept["remote_addr"] == "127.0.0.1"
    status = monitor.fresh_stats().status()
    assert status["failed_connections"] == 1 and status["accepted_connections"] == 1


def test_close_removes_the_cgroup_only_once_it_is_empty(monitor_factory) -> None:
    monitor = monitor_factory()
    path = monitor.cgroup.path
    sleeper = run_in(monitor, ["sleep", "60"])
    wait_for(lambda: sleeper.pid in monitor.cgroup_pids(), TIMEOUT, what="sleeper in cgroup")
    assert monitor.close() is False and path.is_dir()  # a leftover: the runner's to kill
    sleeper.kill()
    sleeper.wait()
    wait_for(lambda: not monitor.cgroup_pids(), TIMEOUT, what="cgroup to empty")
    assert monitor.close() is True and not path.exists()


def test_unavailable_headers_fall_back_without_leaving_a_cgroup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "missing"))
    with pytest.raises(EbpfUnavailable, match="kernel headers missing"):
        EbpfMonitor(os.getpid(), "nohdr", NetmonStats())
    assert not any(Path("/sys/fs/cgroup").glob(f"**/aegis-mcp/{os.getpid()}-nohdr"))


def test_kprobe_tier_compiles() -> None:
    """All the tiers compile together with BCC here (the kprobes attach only where the
    kernel has them): kprobes.c's kernel headers beside the other programs."""
    from aegis_mcp.netmon.ebpf import programs
    from aegis_mcp.netmon.ebpf._bcc import import_bcc

    bcc = import_bcc()
    bpf = bcc.BPF(text=programs.source_for(programs.TIERS).encode(), cflags=programs.cflags())
    try:
        for probe in programs.KPROBES:
            assert bcc.lib.bpf_function_start(bpf.module, probe.function.encode())
    finally:
        bpf.cleanup()


# ---- the kprobe tier (a kernel with kprobes and its own headers: the test VM) ---------------


@pytest.fixture(scope="module")
def kprobe_monitor() -> Iterator[EbpfMonitor]:
    """One monitor with every tier for all the kprobe tests: BCC compiles the kprobe
    programs once (tens of seconds under software emulation). Tests tell their events
    apart by pid and port."""
    problem = kprobe_problem()
    if problem is not None:
        pytest.skip(f"kprobe tier unavailable here: {problem} (make vm-test runs it)")
    monitor = EbpfMonitor(os.getpid(), "kp", NetmonStats(mode="ebpf"))
    assert monitor.tier == "kprobe", monitor.skipped
    yield monitor
    for pid in monitor.cgroup_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    wait_for(lambda: not monitor.cgroup_pids(), TIMEOUT, what="cgroup to empty")
    assert monitor.close(), f"{monitor.cgroup.path} left behind"


def kprobe_bytes(monitor: EbpfMonitor, kind: str, **match: Any) -> int:
    """Bytes of the kprobe tier's ``kind`` (send/recv) events matching ``match``."""
    return sum(e["bytes"] for e in events_of(monitor, event=kind, **match))


def kp_entries(monitor: EbpfMonitor, pid: int) -> list[Any]:
    """The kp_bytes map's entries of process ``pid`` now: (key, value) pairs."""
    return [(k, v) for k, v in monitor._bpf.table("kp_bytes").items() if k.tgid == pid]


FORK_CLIENT = """
import os, socket, sys
port, parent_out, child_out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"p" * parent_out)
child = os.fork()
if child == 0:
    with open("/proc/self/comm", "w") as f:
        f.write("kp-child")
    s.sendall(b"c" * child_out)
    s.shutdown(socket.SHUT_WR)
    got = 0
    while chunk := s.recv(65536):
        got += len(chunk)
    print(os.getpid(), got, flush=True)
    os._exit(0)
s.close()
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_kprobe_tier_attributes_each_call_to_the_calling_process(kprobe_monitor) -> None:
    """A socket made and connected by one process, then used by its child: each one's
    sends (and the child's receives) carry that process's pid and comm, to the byte;
    the cgroup tier alone could only name the socket's creator."""
    monitor = kprobe_monitor
    with exchange_server(7_777) as (port, received):
        argv = [sys.executable, "-c", FORK_CLIENT, str(port), "1234", "56789"]
        proc = run_in(monitor, argv, stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0
        wait_for(lambda: received, TIMEOUT, what="the server's count")
    child_pid, child_got = map(int, out.split())
    assert (received, child_got) == ([1234 + 56789], 7_777)
    wait_events(monitor, "the close", event="close", remote_port=port)
    (connect,) = events_of(monitor, event="connect", remote_port=port)
    assert (connect["pid"], connect["comm"], connect["result"]) == (proc.pid, PYTHON_COMM, 0)
    parent = {"pid": proc.pid, "comm": PYTHON_COMM, "remote_port": port}
    child = {"pid": child_pid, "comm": "kp-child", "remote_port": port}
    wait_for(lambda: kprobe_bytes(monitor, "recv", **child) == 7_777, TIMEOUT, what="recv")
    assert kprobe_bytes(monitor, "send", **parent) == 1234
    assert kprobe_bytes(monitor, "send", **child) == 56789
    assert kprobe_bytes(monitor, "recv", **parent) == 0
    sends = events_of(monitor, event="send", remote_port=port)
    assert {e["remote_addr"] for e in sends} == {"127.0.0.1"} and sends[0]["source"] == "ebpf"
    processes = {p["pid"]: p for p in monitor.fresh_stats().processes()}
    assert processes[child_pid]["bytes_sent"] == 56789
    assert processes[child_pid]["bytes_received"] == 7_777


def test_kprobe_tier_sees_a_raw_syscall_client(kprobe_monitor, raw_connect_bin: Path) -> None:
    """connect() and sendto() as raw syscalls (as Bun and Go make them) are kernel calls
    all the same: both sends are counted, with the caller's pid."""
    monitor = kprobe_monitor
    with exchange_server(0) as (libc_port, _), exchange_server(0) as (raw_port, _):
        proc = run_in(monitor, [str(raw_connect_bin), str(libc_port), str(raw_port)])
        finish(proc)
        for port in (libc_port, raw_port):
            wait_for(
                lambda p=port: kprobe_bytes(monitor, "send", pid=proc.pid, remote_port=p) == 5,
                TIMEOUT,
                what=f"the 5 bytes to :{port}",
            )
    comms = {e["comm"] for e in events_of(monitor, event="send", pid=proc.pid)}
    assert comms == {raw_connect_bin.name}


REUSE_CLIENT = """
import json, socket, struct, sys
ports, rounds = [int(p) for p in sys.argv[1].split(",")], int(sys.argv[2])
seen = []
for i in range(rounds):
    port = ports[i % len(ports)]
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"r" * (100 + i))
    local = s.getsockname()[1]
    # The kernel's address of this struct sock (hashed, but the same address hashes alike).
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == local and fields[3] == "01":
                seen.append([port, fields[11]])
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    # An abortive close frees the socket at once: the next one may get its address.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print(json.dumps(seen))
"""


def test_kprobe_tier_a_reused_socket_address_is_a_new_peer(kprobe_monitor) -> None:
    """Sockets opened and closed one after the other reuse struct sock addresses; each
    new socket's bytes go to its own peer, not to the one the address had before."""
    monitor = kprobe_monitor
    rounds = 16
    with exchange_server(0) as (port_a, _), exchange_server(0) as (port_b, _):
        argv = [sys.executable, "-c", REUSE_CLIENT, f"{port_a},{port_b}", str(rounds)]
        proc = run_in(monitor, argv, stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0
    seen = json.loads(out)
    assert len(seen) == rounds and all(int(addr, 16) for _, addr in seen)
    peers_of: dict[str, set[int]] = {}
    for port, addr in seen:
        peers_of.setdefault(addr, set()).add(port)
    assert any(len(ports) > 1 for ports in peers_of.values()), (
        f"no struct sock address served both peers, the test shows nothing: {seen}"
    )
    expected = {port_a: 0, port_b: 0}
    for i in range(rounds):
        expected[(port_a, port_b)[i % 2]] += 100 + i
    for port, total in expected.items():
        wait_for(
            lambda p=port, t=total: kprobe_bytes(monitor, "send", pid=proc.pid, remote_port=p) >= t,
            TIMEOUT,
            what=f"the bytes to :{port}",
        )
        assert kprobe_bytes(monitor, "send", pid=proc.pid, remote_port=port) == total


LINGER_CLIENT = """
import socket, sys
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", tcp_port))
s.sendall(b"t" * 3000)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"u" * 700, ("127.0.0.1", udp_port))
print("sent", flush=True)
sys.stdin.readline()
s.close()
u.close()
"""


def test_kprobe_counters_are_deleted_once_their_socket_is_finished(kprobe_monitor) -> None:
    """tcp_sendmsg and udp_sendmsg count into kp_bytes while the sockets live; once they
    are closed and reported, user space deletes their entries (the map does not fill)."""
    monitor = kprobe_monitor
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    with sink, exchange_server(0) as (tcp_port, _):
        argv = [sys.executable, "-c", LINGER_CLIENT, str(tcp_port), str(sink.getsockname()[1])]
        proc = run_in(monitor, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "sent\n"
        entries = wait_for(
            lambda: len(found := kp_entries(monitor, proc.pid)) == 2 and found,
            TIMEOUT,
            what="a TCP and a UDP counter",
        )
        counted = {v.proto: (v.sent, v.rport, v.comm.decode()) for _, v in entries}
        assert counted == {
            socket.IPPROTO_TCP: (3000, tcp_port, PYTHON_COMM),
            socket.IPPROTO_UDP: (700, 0, PYTHON_COMM),  # unconnected: no peer of its own
        }
        assert all(k.cookie for k, _ in entries)  # named like the cgroup tier's sockets
        proc.stdin.write("\n")
        proc.stdin.flush()
        finish(proc)
        wait_events(monitor, "the TCP close", event="close", pid=proc.pid, proto="tcp")
    wait_for(lambda: not kp_entries(monitor, proc.pid), TIMEOUT, what="the counters deleted")
    assert kprobe_bytes(monitor, "send", pid=proc.pid, remote_port=tcp_port) == 3000


NETNS_CONNECT_CLIENT = """
import ctypes, os, socket
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
# A namespace of its own whose loopback is down: no route anywhere, nothing leaves.
# IPv4 says ENETUNREACH, IPv6 EADDRNOTAVAIL (no source address): print what each said.
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect((host, 9))
    except OSError as exc:
        print(exc.errno)
    else:
        raise SystemExit("connected")
"""


def test_kprobe_tier_names_the_errno_of_a_failed_connect(kprobe_monitor) -> None:
    """tcp_v4_connect and tcp_v6_connect return the error before any packet: the kprobe
    tier settles the connect with that errno (the tracepoint tier sees no state change)."""
    monitor = kprobe_monitor
    proc = run_in(monitor, [sys.executable, "-c", NETNS_CONNECT_CLIENT], stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    v4, v6 = map(int, out.split())
    assert (v4, v6) == (errno.ENETUNREACH, errno.EADDRNOTAVAIL)
    failed = wait_events(monitor, "both failed connects", 2, event="connect", pid=proc.pid)
    assert {(e["family"], e["remote_port"], e["result"], e["errno"]) for e in failed} == {
        ("inet", 9, "ENETUNREACH", v4),
        ("inet6", 9, "EADDRNOTAVAIL", v6),
    }


HOST_CLIENT = """
import errno, socket, sys, time
import dns.message
dns_port, name, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(10)
u.sendto(dns.message.make_query(name, "A").to_wire(), ("127.0.0.1", dns_port))
address = dns.message.from_wire(u.recv(4096)).answer[0][0].address
# The policy learns the address from the answer a moment after the agent got it
# (see netmon/ebpf/policy.py): try until the kernel refuses.
deadline = time.monotonic() + 30
while True:
    s = socket.socket()
    try:
        s.connect((address, port))
    except PermissionError as exc:
        assert exc.errno == errno.EPERM
        break
    s.close()
    if time.monotonic() > deadline:
        raise SystemExit("never refused")
    time.sleep(0.05)
"""


def test_host_name_rules_learn_addresses_from_dns_answers(monitor_factory) -> None:
    name = "blocked.aegis-test.example"
    policy = Policy(deny=(name,))
    with dns_responder({name: "127.0.0.4"}) as dns_port:
        monitor = monitor_factory(dns_ports=(53, dns_port), policy=policy)
        with exchange_server(0, host="127.0.0.4") as (port, _):
            argv = [sys.executable, "-c", HOST_CLIENT, str(dns_port), name, str(port)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            proc = run_in(monitor, argv, env=env)
            finish(proc)
    blocked = wait_events(monitor, "the blocked connect", event="blocked", pid=proc.pid)
    assert blocked[-1]["remote_addr"] == "127.0.0.4" and blocked[-1]["host"] == name
    assert policy.decide("127.0.0.4", port)[0] == "deny"


def test_cgroup_tier_alone_counts_the_same(monitor_factory) -> None:
    """Without tracefs (only the cgroup programs): connects are reported at once, closes
    once the released socket's counts stop moving, with the same exact bytes."""
    monitor = monitor_factory(tiers=("cgroup",))
    assert monitor.tiers == ("cgroup",)
    with exchange_server(2_000) as (port, _):
        argv = [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), "30000", "2000"]
        proc = run_in(monitor, argv)
        finish(proc)
    (connect,) = wait_events(monitor, "the connect", event="connect", pid=proc.pid)
    assert connect["remote_port"] == port and "result" not in connect
    (close,) = wait_events(monitor, "the close", event="close", pid=proc.pid)
    assert (close["bytes_sent"], close["bytes_recv"]) == (30_000, 2_000)


# TCP bytes come from the sockets' own counters (bpf/tcp_bytes.c), which count the SYN and
# the FINs too: these check that every way a connection ends leaves exactly the payload.
CLOSING_CLIENT = """
import socket, sys
family, host, port, n_out, n_in, how = sys.argv[1:7]
s = socket.socket(int(family), socket.SOCK_STREAM)
s.connect((host, int(port)))
s.sendall(b"x" * int(n_out))
if how == "agent-first":
    s.close()  # an orphan: FIN_WAIT1, FIN_WAIT2, closed before the peer's FIN
    sys.exit(0)
got = 0
while got < int(n_in):
    got += len(s.recv(65536))
if how == "peer-first":
    assert s.recv(1) == b""  # CLOSE_WAIT, then LAST_ACK
    s.close()
elif how == "reset":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\0\\0\\0\\0\\0\\0\\0")
    s.close()  # an RST, no FIN
"""


@contextlib.contextmanager
def closing_server(family: int, host: str, reply: int, how: str) -> Iterator[int]:
    """A TCP server that reads the request, replies ``reply`` bytes and, for ``peer-first``,
    closes first; otherwise it reads until the client's FIN or RST."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(4)
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                if reply:
                    conn.recv(65536)
                    conn.sendall(b"y" * reply)
                if how != "peer-first":
                    while conn.recv(65536):
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"]
)
@pytest.mark.parametrize("how", ["peer-first", "agent-first", "reset"])
def test_exact_tcp_bytes_whichever_way_the_connection_ends(
    monitor_factory, family: int, host: str, how: str
) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    monitor = monitor_factory()
    sent, reply = (4321, 0) if how == "agent-first" else (4321, 765)
    with closing_server(family, host, reply, how) as port:
        argv = [sys.executable, "-c", CLOSING_CLIENT, str(int(family)), host, str(port)]
        proc = run_in(monitor, [*argv, str(sent), str(reply), how])
        finish(proc)
    (close,) = wait_events(monitor, "the close", event="close", pid=proc.pid)
    assert (close["remote_port"], close["proto"]) == (port, "tcp")
    assert (close["bytes_sent"], close["bytes_recv"]) == (sent, reply)
    traffic = events_of(monitor, pid=proc.pid, remote_port=port)
    assert sum(e["bytes"] for e in traffic if e["event"] == "send") == sent
    assert sum(e["bytes"] for e in traffic if e["event"] == "recv") == reply


LIVE_CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"x" * 777)
assert s.recv(5) == b"zzzzz"
sys.stdin.read()  # open until the test has seen the counts
s.sendall(b"y" * 23)
s.close()
"""


def test_a_live_connection_is_counted_before_it_changes_state(monitor_factory) -> None:
    """Bytes of an established connection show while it stays established (read through
    sock_diag between state changes), then the rest at its close."""
    monitor = monitor_factory()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    proc = run_in(monitor, [sys.executable, "-c", LIVE_CLIENT, str(port)], stdin=subprocess.PIPE)
    try:
        conn, _ = listener.accept()
        with conn:
            got = 0
            while got < 777:
                got += len(conn.recv(65536))
            conn.sendall(b"z" * 5)
            send = wait_events(monitor, "the live send", event="send", pid=proc.pid)
            recv = wait_events(monitor, "the live recv", event="recv", pid=proc.pid)
            assert (sum(e["bytes"] for e in send), sum(e["bytes"] for e in recv)) == (777, 5)
            assert not events_of(monitor, event="close", pid=proc.pid)
            finish(proc)
            while conn.recv(65536):
                pass
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (close,) = wait_events(monitor, "the close", event="close", pid=proc.pid)
    assert (close["bytes_sent"], close["bytes_recv"]) == (800, 5)
    assert monitor.status()["lost_events"] == 0


NETNS_PAIR = """
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
client.sendall(b"x" * 777)
got = 0
while got < 777:
    got += len(server.recv(65536))
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_a_live_connection_in_another_network_namespace_is_counted(monitor_factory) -> None:
    """An agent in a namespace of its own (a sandbox's): its established connections are
    read in that namespace, not only at their state changes."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    monitor = monitor_factory()
    argv = ["unshare", "--net", sys.executable, "-c", NETNS_PAIR]
    proc = run_in(monitor, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        sends = wait_events(monitor, "the live send", event="send", remote_port=port)
        assert sum(e["bytes"] for e in sends) == 777
        assert not events_of(monitor, event="close", remote_port=port)
    finally:
        proc.communicate(timeout=TIMEOUT)
