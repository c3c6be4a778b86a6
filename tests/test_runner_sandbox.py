"""Runners with --sandbox=netns: the agent in its own namespace, teardown, crash clean-up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import AEGIS, call, gone, runner_socket, start_aegis, wait_for, wait_reports

NETNS_DIR = Path("/var/run/netns")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network sandboxes need root")


def _namespaces(pid: int) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"aegis-{pid}"))
    except FileNotFoundError:
        return []


def _own_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def test_agent_runs_in_its_own_namespace_which_is_removed_after(aegis_env, tmp_path):
    out = tmp_path / "ns.txt"
    proc = subprocess.run(
        [
            *AEGIS,
            "run",
            "--sandbox=netns",
            "--",
            "sh",
            "-c",
            f"readlink /proc/self/ns/net > {out}; cat /etc/resolv.conf >> {out}",
        ],
        env=aegis_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0] != _own_netns()
    assert any(line.startswith("nameserver 10.") for line in lines[1:])
    # Its runner has exited: no namespace of a dead runner is left.
    leftovers = os.listdir(NETNS_DIR) if NETNS_DIR.exists() else []
    assert not [n for n in leftovers if n.startswith("aegis-") and _owner_dead(n)]


def _owner_dead(name: str) -> bool:
    pid = int(name.split("-")[1])
    return not Path(f"/proc/{pid}").exists()


def test_status_and_netmon_report_the_sandbox(aegis_env, runtime_dir, report):
    proc = start_aegis(
        ["demo", "--sandbox=netns", "--no-watchdog", "--no-inject-mcp", "--scenario", "quiet"],
        aegis_env,
        output=False,
    )
    try:
        sock = runner_socket(runtime_dir)
        first = wait_reports(report, 1)[0]
        assert first["netns"] != _own_netns()
        status = call(sock, "server_status")
        assert status["sandbox"]["kind"] == "netns"
        assert list(status["sandbox"]["sandboxes"]) == ["primary"]
        assert status["netmon"]["mode"] == "netns"
        assert _namespaces(proc.pid) == [f"aegis-{proc.pid}"]
        netmon = call(sock, "netmon_status")
        assert netmon["enabled"] and netmon["mode"] == "netns"
        # A restart keeps the agent in the same sandbox.
        call(sock, "restart", reason="sandboxed restart")
        second = wait_reports(report, 2)[1]
        assert second["netns"] == first["netns"]
        # A pool agent asking for its own sandbox gets a separate namespace.
        spawned = call(
            sock,
            "agent_spawn",
            description="/scenario sleep:1",
            agent_type="demo",
            sandbox="netns",
        )
        wait_for(lambda: f"aegis-{proc.pid}-{spawned['agent_id']}" in _namespaces(proc.pid))
        done = call(sock, "agent_await", agent_id=spawned["agent_id"], timeout_secs=60)
        assert done["status"] == "completed", done
        pool_report = wait_for(
            lambda: next(
                (
                    r
                    for r in _all_reports(report)
                    if r["env"].get("AEGIS_MCP_AGENT_ID") == spawned["agent_id"]
                ),
                None,
            )
        )
        assert pool_report["netns"] not in (first["netns"], _own_netns())
        # From the first pool agent on, one more namespace is kept ready, and the next pool
        # agent starts in it, with its own id on it.
        warm = f"aegis-{proc.pid}-warm-1"
        wait_for(lambda: _namespaces(proc.pid) == sorted([f"aegis-{proc.pid}", warm]))
        second = call(
            sock, "agent_spawn", description="/scenario sleep:1", agent_type="demo", sandbox="netns"
        )
        boxes = call(sock, "server_status")["sandbox"]["sandboxes"]
        assert boxes[second["agent_id"]]["name"] == warm
        assert boxes[second["agent_id"]]["agent_id"] == second["agent_id"]
        assert (
            call(sock, "agent_await", agent_id=second["agent_id"], timeout_secs=60)["status"]
            == "completed"
        )
        # The claimed one goes with its agent; the pool made the next.
        wait_for(
            lambda: (
                _namespaces(proc.pid) == sorted([f"aegis-{proc.pid}", f"aegis-{proc.pid}-warm-2"])
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Nothing of the run is left, the namespace kept ready included.
    wait_for(lambda: _namespaces(proc.pid) == [])


def _all_reports(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sandbox_of_a_killed_runner_is_cleaned_by_the_next(aegis_env, runtime_dir, report):
    proc = start_aegis(
        ["demo", "--sandbox=netns", "--no-watchdog", "--scenario", "quiet"], aegis_env, output=False
    )
    agent_pid = None
    try:
        runner_socket(runtime_dir)
        agent_pid = wait_reports(report, 1)[0]["pid"]
        assert _namespaces(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Its agent dies with it, inside the namespace.
        wait_for(lambda: gone(agent_pid), what="the agent to die with its runner")
        result = subprocess.run(
            [*AEGIS, "run", "--", "true"], env=aegis_env, capture_output=True, timeout=60
        )
        assert result.returncode == 0
        assert _namespaces(proc.pid) == []
    finally:
        if agent_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent_pid, signal.SIGKILL)
        subprocess.run([*AEGIS, "netns", "cleanup"], env=aegis_env, capture_output=True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--allow", "example.com", "--", "true"], "--netmon=ebpf): add one"),
        (["run", "--sandbox=netns", "--deny", "10.0.0.0/33", "--", "true"], "--sandbox=netns:"),
        (["run", "--sandbox=netns", "--allow", "host:99999", "--", "true"], "--sandbox=netns:"),
    ],
)
def test_bad_policy_specs_are_usage_errors(aegis_env, argv, message):
    result = subprocess.run(
        [*AEGIS, *argv], env=aegis_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_namespace_kept_ready_of_a_killed_runner_goes_with_the_cleanup(
    aegis_env, runtime_dir, report
):
    proc = start_aegis(
        ["demo", "--no-watchdog", "--no-inject-mcp", "--scenario", "quiet"], aegis_env, output=False
    )
    try:
        sock = runner_socket(runtime_dir)
        wait_reports(report, 1)
        spawned = call(
            sock,
            "agent_spawn",
            description="/scenario sleep:60",
            agent_type="demo",
            sandbox="netns",
        )
        warm = f"aegis-{proc.pid}-warm-1"
        wait_for(lambda: warm in _namespaces(proc.pid))
        assert f"aegis-{proc.pid}-{spawned['agent_id']}" in _namespaces(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for pid in [r["pid"] for r in _all_reports(report)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: all(gone(r["pid"]) for r in _all_reports(report)))
        result = subprocess.run(
            [*AEGIS, "netns", "cleanup"], env=aegis_env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert _namespaces(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
