"""Runners with --netmon=ebpf: the agent's cgroup watched and, with a policy, enforced."""

from __future__ import annotations

import socket
import sys

import pytest

from aegis_mcp.netmon.ebpf import ebpf_available
from helpers import call, runner_socket, serve_connections, start_aegis, wait_for

READY, WHY = ebpf_available()
pytestmark = pytest.mark.skipif(not READY, reason=f"eBPF unavailable: {WHY}")


def _server() -> tuple[socket.socket, int, list[int]]:
    server = socket.create_server(("127.0.0.1", 0))
    received: list[int] = []

    def count(conn: socket.socket) -> None:
        with conn:
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            received.append(total)

    serve_connections(server, count)
    return server, server.getsockname()[1], received


def _agent(tmp_path, port: int, nbytes: int) -> str:
    script = tmp_path / "agent.py"
    script.write_text(
        "import socket, sys, time\n"
        "try:\n"
        f"    s = socket.create_connection(('127.0.0.1', {port}))\n"
        f"    s.sendall(b'z' * {nbytes})\n"
        "    s.close()\n"
        "    print('SENT', flush=True)\n"
        "except OSError as exc:\n"
        "    print('REFUSED', exc.errno, flush=True)\n"
        "time.sleep(300)\n"
    )
    return str(script)


@pytest.mark.parametrize("mode", ["--netmon=ebpf", "--netmon"])
def test_ebpf_counts_the_agents_bytes_exactly(aegis_env, runtime_dir, tmp_path, mode):
    server, port, received = _server()
    proc = start_aegis(
        ["run", mode, "--no-watchdog", "--", sys.executable, _agent(tmp_path, port, 4321)],
        aegis_env,
    )
    try:
        sock = runner_socket(runtime_dir, timeout=60)
        # The BPF programs compile before the agent starts.
        wait_for(lambda: call(sock, "server_status")["agent"]["pid"], timeout=60)
        status = wait_for(
            lambda: (s := call(sock, "netmon_status"))["bytes_sent"] >= 4321 and s, timeout=60
        )
        assert status["mode"] == "ebpf" and status["bytes_sent"] == 4321
        events = call(sock, "netmon_log", count=100)["events"]
        connect = next(e for e in events if e["event"] == "connect")
        assert connect["source"] == "ebpf" and connect["remote_port"] == port
        assert connect["comm"].startswith("python")
        assert call(sock, "server_status")["netmon"]["ebpf"]["tier"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.close()
    assert received == [4321]


def test_ebpf_policy_refuses_a_denied_destination(aegis_env, runtime_dir, tmp_path):
    server, port, received = _server()
    proc = start_aegis(
        [
            "run",
            "--netmon=ebpf",
            f"--deny=127.0.0.1:{port}",
            "--no-watchdog",
            "--",
            sys.executable,
            _agent(tmp_path, port, 10),
        ],
        aegis_env,
    )
    try:
        sock = runner_socket(runtime_dir, timeout=60)
        wait_for(lambda: call(sock, "server_status")["agent"]["pid"], timeout=60)
        blocked = wait_for(
            lambda: [
                e for e in call(sock, "netmon_log", count=100)["events"] if e["event"] == "blocked"
            ],
            timeout=60,
        )
        assert blocked[0]["remote_port"] == port and blocked[0]["source"] == "ebpf"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        server.close()
    assert "REFUSED 1" in out  # EPERM
    assert received == []


def test_netmon_ops_asked_while_the_programs_compile_answer_once_ready(
    aegis_env, runtime_dir, tmp_path
):
    # The socket is up before BCC has compiled: the netmon ops are known from the
    # first moment and answer with the mode once monitoring is set up.
    proc = start_aegis(
        [
            "run",
            "--netmon=ebpf",
            "--no-watchdog",
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(300)",
        ],
        aegis_env,
    )
    try:
        sock = runner_socket(runtime_dir, timeout=60)
        assert "netmon_status" in call(sock, "hello")["ops"]
        status = call(sock, "netmon_status")
        assert status["mode"] == "ebpf"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
