"""The runner with the hooks library: .mcp.json overlay injection and --netmon."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aegis_mcp.hooks_lib import find_hooks
from helpers import AEGIS, REPO, call, runner_socket, start_aegis, wait_for


@pytest.fixture(scope="module", autouse=True)
def hooks_built():
    if find_hooks() is None:
        subprocess.run(["make", "-C", str(REPO), "build"], check=True, capture_output=True)
    if find_hooks() is None:
        pytest.skip("the hooks library could not be built (gcc missing?)")


def test_preload_profile_sees_the_overlay_with_project_servers(aegis_env, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    own = {"mcpServers": {"mine": {"command": "my-server", "args": []}}}
    (project / ".mcp.json").write_text(json.dumps(own))
    reader = tmp_path / "reader.py"
    # Reads the project's .mcp.json through libc, as agents of this kind do.
    reader.write_text("print(open('.mcp.json').read())\n")
    Path(aegis_env["AEGIS_MCP_CONFIG"]).write_text(
        f'[agents.reader]\ncommand = ["{sys.executable}", "{reader}"]\nmcp_inject = "preload"\n'
    )
    result = subprocess.run(
        [*AEGIS, "reader"], env=aegis_env, cwd=project, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)["mcpServers"]
    assert set(seen) == {"mine", "aegis-mcp"}
    assert seen["aegis-mcp"]["args"][-1] == "--mcp-server"
    assert "AEGIS_MCP_SOCKET" in seen["aegis-mcp"]["env"]
    # The file on disk is untouched.
    assert json.loads((project / ".mcp.json").read_text()) == own


def test_netmon_counts_the_agents_traffic(aegis_env, runtime_dir, tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while len(data) < 5000:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            received.append(len(data))
            conn.sendall(b"y" * 321)

    threading.Thread(target=serve, daemon=True).start()
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import socket, sys, time\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "s.sendall(b'x' * 5000)\n"
        "got = 0\n"
        "while got < 321:\n"
        "    got += len(s.recv(65536))\n"
        "s.close()\n"
        "print('done', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = start_aegis(
        ["run", "--netmon=preload", "--no-watchdog", "--", sys.executable, str(agent)], aegis_env
    )
    try:
        sock = runner_socket(runtime_dir)
        status = wait_for(lambda: (s := call(sock, "netmon_status"))["bytes_received"] == 321 and s)
        assert status["enabled"] and status["mode"] == "preload"
        assert status["total_connections"] == 1 and status["bytes_sent"] == 5000
        assert status["top_targets"][0]["target"] == f"127.0.0.1:{port}"
        events = call(sock, "netmon_log", count=50)["events"]
        connect = next(e for e in events if e["event"] == "connect")
        assert connect["remote_port"] == port and connect["source"] == "preload"
        assert call(sock, "server_status")["netmon"]["mode"] == "preload"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.close()
    assert received == [5000]
