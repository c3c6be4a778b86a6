"""Netmon from the preload log to the ops: PreloadLog, NetmonStats, namespaces, netmon_* ops.

Real processes run under libaegis_hooks.so and talk only to servers this file starts on
127.0.0.1; the namespace tests create (and remove) only namespaces of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp import owners
from aegis_mcp.cleanup import ops as cleanup_ops_module
from aegis_mcp.control.protocol import INVALID_ARGUMENT, ControlError
from aegis_mcp.netmon.ops import DEFAULT_LOG_COUNT, netmon_ops
from aegis_mcp.netmon.preload_log import MAX_LINE_BYTES, PreloadLog
from aegis_mcp.netmon.stats import NetmonStats
from aegis_mcp.sandbox.netns import names, namespaces
from aegis_mcp.sandbox.netns.ops import namespace_ops
from helpers import REPO

HOOKS_DIR = REPO / "hooks"
HOOKS_LIB = HOOKS_DIR / "libaegis_hooks.so"
TIMEOUT = 60

CLIENT = """
import socket, sys
port, n_out, n_in = map(int, sys.argv[1:])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("127.0.0.1", port))
s.sendall(b"x" * n_out)
got = 0
while got < n_in:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += len(chunk)
s.close()
assert got == n_in, got
"""

REFUSED = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except ConnectionRefusedError:
    pass
else:
    raise SystemExit("connected to a port nobody listens on")
s.close()
"""


# ---- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hooks_lib() -> Path:
    """The repository's hooks library, built if it is missing."""
    if not HOOKS_LIB.is_file():
        if shutil.which("make") is None or (shutil.which("gcc") or shutil.which("cc")) is None:
            pytest.skip("needs make and a C compiler to build hooks/libaegis_hooks.so")
        proc = subprocess.run(
            ["make", "-C", str(HOOKS_DIR)], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"
    return HOOKS_LIB


def run_preloaded(lib: Path, log: Path, code: str, *args: object) -> int:
    """Run Python code under the hooks library with netmon on; returns the child's pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_") and k != "LD_PRELOAD"}
    env.update(LD_PRELOAD=str(lib), AEGIS_NETMON_LOG=str(log))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{out}\n{err}"
    return proc.pid


@contextlib.contextmanager
def exchange_server(n_in: int, n_out: int) -> Iterator[tuple[int, threading.Event]]:
    """A one-connection server on 127.0.0.1: reads exactly n_in bytes, then sends n_out."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    done = threading.Event()
    received = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            got = 0
            while got < n_in:
                chunk = conn.recv(min(65536, n_in - got))
                if not chunk:
                    break
                got += len(chunk)
            received.append(got)
            conn.sendall(b"y" * n_out)
        done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], done
    finally:
        listener.close()
        thread.join(TIMEOUT)
    assert received == [n_in]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nobody else takes it meanwhile)
    but never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def line(**fields: Any) -> bytes:
    """One log line in the preload library's shape."""
    event = {
        "ts": 1_790_000_000.5,
        "pid": 4242,
        "ppid": 1,
        "comm": "agent",
        "source": "preload",
        "bytes": 0,
    }
    event.update(fields)
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def connect_line(addr: str = "10.1.2.3", port: int = 443, **extra: Any) -> bytes:
    """A successful connect line."""
    return line(
        event="connect",
        fd=3,
        family="inet",
        proto="tcp",
        remote_addr=addr,
        remote_port=port,
        local_port=40000,
        result=0,
        **extra,
    )


def call(handler: Any, args: dict[str, Any]) -> Any:
    """Run one async op handler to completion."""
    return asyncio.run(handler(args))


# ---- real processes under the preload library ----------------------------------------------------


def test_preload_log_counts_a_real_connection(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    sent, received = 12_345, 6_789
    with exchange_server(sent, received) as (port, done):
        pid = run_preloaded(hooks_lib, log, CLIENT, port, sent, received)
        assert done.wait(TIMEOUT)

    reader = PreloadLog(log)
    assert reader.poll() > 0
    status = reader.stats.status()
    assert status["total_connections"] == 1
    assert status["failed_connections"] == 0
    assert status["bytes_sent"] == sent
    assert status["bytes_received"] == received
    assert status["unique_addresses"] == 1
    assert status["sources"] == ["preload"]
    assert status["log_file"] == str(log)
    assert status["malformed_lines"] == 0

    (target,) = status["top_targets"]
    assert target["target"] == f"127.0.0.1:{port}"
    assert (target["addr"], target["port"], target["direction"]) == ("127.0.0.1", port, "out")
    assert (target["connections"], target["bytes_sent"], target["bytes_received"]) == (
        1,
        sent,
        received,
    )

    procs = {p["pid"]: p for p in status["processes"]}
    assert pid in procs
    assert procs[pid]["connections"] == 1
    assert (procs[pid]["bytes_sent"], procs[pid]["bytes_received"]) == (sent, received)

    connects = [e for e in reader.stats.recent(100) if e["event"] == "connect"]
    assert [(e["pid"], e["remote_port"]) for e in connects] == [(pid, port)]

    # Nothing new: a second poll adds nothing and changes nothing.
    assert reader.poll() == 0
    assert reader.stats.status()["bytes_sent"] == sent


def test_preload_log_counts_a_refused_connect(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    with closed_port() as port:
        pid = run_preloaded(hooks_lib, log, REFUSED, port)

    stats = PreloadLog(log).fresh_stats()
    status = stats.status()
    assert status["total_connections"] == 1
    assert status["failed_connections"] == 1
    assert status["top_targets"][0]["failed"] == 1
    (event,) = [e for e in stats.recent(10) if e["event"] == "connect"]
    assert event["pid"] == pid and event["result"] == "ECONNREFUSED"


SERVER = """
import socket
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(1)
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
got = 0
while got < 300:
    got += len(conn.recv(65536))
conn.sendall(b"z" * 50)
conn.close()
"""


def test_accepted_connections_are_inbound_targets(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_") and k != "LD_PRELOAD"}
    env.update(LD_PRELOAD=str(hooks_lib), AEGIS_NETMON_LOG=str(log))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(b"a" * 300)
            got = 0
            while got < 50:
                got += len(client.recv(65536))
        assert server.wait(TIMEOUT) == 0
    finally:
        server.kill()
        server.wait()

    status = PreloadLog(log).fresh_stats().status()
    assert status["accepted_connections"] == 1
    assert status["total_connections"] == 0  # outbound connects only
    (target,) = status["top_targets"]
    # one target for the listening port, not one per ephemeral client port
    assert (target["direction"], target["port"], target["target"]) == (
        "in",
        port,
        f"127.0.0.1 -> :{port}",
    )
    assert (target["bytes_received"], target["bytes_sent"]) == (300, 50)


def test_ops_serve_a_real_log(hooks_lib: Path, tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    with exchange_server(100, 200) as (port, done):
        run_preloaded(hooks_lib, log, CLIENT, port, 100, 200)
        assert done.wait(TIMEOUT)

    reader = PreloadLog(log)
    ops = netmon_ops(reader.fresh_stats, "preload")
    status = call(ops["netmon_status"], {})
    assert status["enabled"] is True and status["mode"] == "preload"
    assert (status["bytes_sent"], status["bytes_received"]) == (100, 200)
    json.dumps(status)  # JSON-able, as the control socket needs

    result = call(ops["netmon_log"], {"count": 1})
    assert result["count"] == 1 and len(result["events"]) == 1
    # newest last: the connection's close line comes after its connect line
    assert result["events"][-1]["event"] == "close"


# ---- reading the log -----------------------------------------------------------------------------


def test_partial_last_line_is_read_once_completed(tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    reader = PreloadLog(log)
    assert reader.poll() == 0  # not there yet: not an error

    whole = connect_line()
    log.write_bytes(whole[:25])
    assert reader.poll() == 0
    assert reader.stats.status()["malformed_lines"] == 0

    with log.open("ab") as f:
        f.write(whole[25:-1])
    assert reader.poll() == 0  # still no newline

    with log.open("ab") as f:
        f.write(b"\n" + connect_line(port=80))
    assert reader.poll() == 2
    status = reader.stats.status()
    assert status["total_connections"] == 2
    assert status["malformed_lines"] == 0
    assert {t["target"] for t in status["top_targets"]} == {"10.1.2.3:443", "10.1.2.3:80"}


def test_garbage_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    log.write_bytes(
        b"this is not json\n"
        + connect_line()
        + b"[1, 2, 3]\n"
        + b"\xff\xfe{\n"
        + b'{"ts": 1, "no_event": true}\n'
        + b"\n"
        + line(event="send", fd=3, remote_addr="10.1.2.3", remote_port=443, bytes=70)
    )
    reader = PreloadLog(log)
    assert reader.poll() == 2
    assert reader.malformed_lines == 4
    status = reader.stats.status()
    assert status["malformed_lines"] == 4
    assert status["events"] == 2
    assert status["bytes_sent"] == 70


def test_truncated_or_replaced_log_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    log.write_bytes(connect_line() + connect_line(port=80))
    reader = PreloadLog(log)
    assert reader.poll() == 2

    log.write_bytes(connect_line(port=22))  # truncated and rewritten, shorter
    assert reader.poll() == 1

    log.unlink()
    assert reader.poll() == 0
    log.write_bytes(connect_line(port=25) + connect_line(port=26))  # a new file
    assert reader.poll() == 2
    assert reader.stats.status()["total_connections"] == 5


def test_overlong_line_is_dropped_and_reading_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "netmon.jsonl"
    log.write_bytes(b"{" + b"x" * (MAX_LINE_BYTES + 10))
    reader = PreloadLog(log)
    assert reader.poll() == 0
    with log.open("ab") as f:
        f.write(b"y" * 100 + b"\n" + connect_line())
    assert reader.poll() == 1
    assert reader.malformed_lines == 1


def test_symlinked_log_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.jsonl"
    real.write_bytes(connect_line())
    log = tmp_path / "netmon.jsonl"
    log.symlink_to(real)
    assert PreloadLog(log).poll() == 0


# ---- aggregation ---------------------------------------------------------------------------------


def test_stats_names_hosts_learnt_from_dns_and_ranks_targets() -> None:
    stats = NetmonStats(mode="preload")
    events = [
        {"event": "dns", "kind": "getaddrinfo", "host": "example.org", "answers": ["10.0.0.7"]},
        {"event": "connect", "remote_addr": "10.0.0.7", "remote_port": 443, "result": 0},
        {"event": "send", "remote_addr": "10.0.0.7", "remote_port": 443, "bytes": 10},
        {"event": "connect", "remote_addr": "10.0.0.8", "remote_port": 80, "result": 0},
        {"event": "send", "remote_addr": "10.0.0.8", "remote_port": 80, "bytes": 5000},
        {"event": "connect", "remote_addr": "::1", "remote_port": 8080, "result": "ECONNREFUSED"},
        {"event": "close", "remote_addr": "10.0.0.8", "remote_port": 80, "bytes_sent": 5000},
    ]
    for i, ev in enumerate(events):
        assert stats.ingest({"ts": 100.0 + i, "pid": 7, "comm": "x", "source": "ebpf", **ev})
    assert not stats.ingest({"ts": 1.0, "pid": 7})  # no event name

    status = stats.status()
    assert status["total_connections"] == 3
    assert status["failed_connections"] == 1
    assert status["bytes_sent"] == 5010  # close lines repeat totals; not counted again
    assert status["dns_lookups"] == 1
    assert status["malformed_lines"] == 1
    assert status["events_by_source"] == {"ebpf": 7}
    ranked = [t["target"] for t in status["top_targets"]]
    assert ranked == ["10.0.0.8:80", "10.0.0.7:443", "[::1]:8080"]
    assert status["top_targets"][1]["host"] == "example.org"
    # events are enriched with the host name once it is known
    assert stats.recent(7)[2]["host"] == "example.org"
    assert [e["ts"] for e in stats.recent(2)] == [105.0, 106.0]


def test_ring_keeps_the_newest_events() -> None:
    stats = NetmonStats(ring_size=10)
    for i in range(25):
        stats.ingest({"ts": float(i), "event": "connect", "remote_addr": "10.0.0.1", "pid": 1})
    recent = stats.recent(100)
    assert [e["ts"] for e in recent] == [float(i) for i in range(15, 25)]
    assert stats.status()["events"] == 25


# ---- ops -----------------------------------------------------------------------------------------


def test_netmon_log_validates_count() -> None:
    stats = NetmonStats()
    for i in range(30):
        stats.ingest({"ts": float(i), "event": "connect", "pid": 1})
    ops = netmon_ops(lambda: stats, "preload")
    log = ops["netmon_log"]

    assert len(call(log, {})["events"]) == DEFAULT_LOG_COUNT
    assert len(call(log, {"count": None})["events"]) == DEFAULT_LOG_COUNT
    assert [e["ts"] for e in call(log, {"count": 3})["events"]] == [27.0, 28.0, 29.0]
    assert len(call(log, {"count": 1000})["events"]) == 30

    for bad in (True, False, 0, -1, 1001, "5", 2.0, [5]):
        with pytest.raises(ControlError) as info:
            call(log, {"count": bad})
        assert info.value.code == INVALID_ARGUMENT, bad
    with pytest.raises(ControlError) as info:
        call(log, {"count": 5, "verbose": True})
    assert info.value.code == INVALID_ARGUMENT
    ops.update({**namespace_ops(), **cleanup_ops_module.cleanup_ops()})
    for op in ("netmon_status", "netmon_namespace_list", "netmon_namespace_cleanup"):
        with pytest.raises(ControlError) as info:
            call(ops[op], {"bogus": 1})
        assert info.value.code == INVALID_ARGUMENT


def test_ops_when_netmon_is_off() -> None:
    ops = netmon_ops(lambda: None, "off")
    status = call(ops["netmon_status"], {})
    assert status["enabled"] is False
    assert "aegis-mcp AGENT --netmon" in status["message"]
    result = call(ops["netmon_log"], {"count": 5})
    assert result["events"] == [] and result["enabled"] is False
    assert "--netmon" in result["message"]
    with pytest.raises(ControlError):  # arguments are still checked
        call(ops["netmon_log"], {"count": "all"})


def test_namespace_cleanup_op_without_root_is_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleanup_ops_module.os, "geteuid", lambda: 1000)
    ops = cleanup_ops_module.cleanup_ops()
    with pytest.raises(ControlError) as info:
        call(ops["netmon_namespace_cleanup"], {})
    assert info.value.code == "forbidden"
    assert "needs root: sudo aegis-mcp cleanup" in info.value.message
    with pytest.raises(ControlError) as info:  # arguments are still checked
        call(ops["netmon_namespace_cleanup"], {"dry_run": True})
    assert info.value.code == INVALID_ARGUMENT


# ---- namespaces ----------------------------------------------------------------------------------


@pytest.fixture
def aegis_like_process() -> Iterator[int]:
    """A live process whose command line mentions aegis, as a runner's does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "aegis-owner"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not Path(f"/proc/{proc.pid}").exists()
    return proc.pid


def test_namespace_names_and_owner_check(aegis_like_process: int, dead_pid: int) -> None:
    assert names.parse_name("aegis-123") == (123, None)
    assert names.parse_name("aegis-123-agent_7") == (123, "agent_7")
    assert names.namespace_name(123, "a1") == "aegis-123-a1"
    for foreign in ("aegis", "aegis-", "aegis-x", "aegis-0", "other-123", "aegis-12-", "xaegis-1"):
        assert names.parse_name(foreign) is None, foreign

    assert owners.owner_alive(aegis_like_process)
    assert not owners.owner_alive(dead_pid)


def test_namespace_listing_without_root(
    tmp_path: Path, aegis_like_process: int, dead_pid: int
) -> None:
    run_dir = tmp_path / "netns"
    assert namespaces.list_namespaces(run_dir) == []  # no directory: nothing, no error
    run_dir.mkdir()
    for name in (f"aegis-{dead_pid}", f"aegis-{aegis_like_process}-x", "someone-else"):
        (run_dir / name).touch()
    listed = {n["name"]: n for n in namespaces.list_namespaces(run_dir)}
    assert set(listed) == {f"aegis-{dead_pid}", f"aegis-{aegis_like_process}-x"}
    assert listed[f"aegis-{dead_pid}"]["owner_alive"] is False
    assert listed[f"aegis-{dead_pid}"]["agent_id"] is None
    live = listed[f"aegis-{aegis_like_process}-x"]
    assert (live["owner_pid"], live["agent_id"], live["owner_alive"]) == (
        aegis_like_process,
        "x",
        True,
    )
    assert live["path"] == str(run_dir / f"aegis-{aegis_like_process}-x")


def test_namespace_cleanup_removes_only_dead_owners(aegis_like_process: int, dead_pid: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating and removing network namespaces needs root")
    from pyroute2 import netns

    run_dir = Path(netns.NETNS_RUN_DIR)
    dead = f"aegis-{dead_pid}"
    live = f"aegis-{aegis_like_process}-x"
    foreign = f"aegistest-{dead_pid}"  # no aegis- prefix: never ours to remove
    created = []
    try:
        for name in (dead, live, foreign):
            netns.create(name)
            created.append(name)
        ops = namespace_ops()
        listed = {n["name"]: n for n in call(ops["netmon_namespace_list"], {})["namespaces"]}
        assert listed[dead]["owner_alive"] is False
        assert listed[live]["owner_alive"] is True
        assert foreign not in listed

        # The tool's op sweeps every kind, as `aegis-mcp cleanup` does.
        result = call(cleanup_ops_module.cleanup_ops()["netmon_namespace_cleanup"], {})
        groups = {kind: {e["group"] for e in result[kind]} for kind in ("removed", "kept")}
        assert dead in groups["removed"] or not (run_dir / dead).exists()
        assert live in groups["kept"]
        assert not any(e.get("group") in (dead, live) for e in result["errors"])
        assert not (run_dir / dead).exists()
        assert (run_dir / live).exists()
        assert (run_dir / foreign).exists()
    finally:
        for name in created:
            if (run_dir / name).exists():
                netns.remove(name)
    assert not any((run_dir / name).exists() for name in created)
