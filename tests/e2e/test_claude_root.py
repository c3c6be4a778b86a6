"""Claude Code started by root under a sudo user: the privilege drop, and the network
sandbox with the model server in a second namespace reached through the sandbox's NAT."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.standin import Script, read_record
from e2e.test_agents import RESUMED, TIMEOUT, restart_script, tool_json
from helpers import REPO, start_aegis

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")

# A documentation address (RFC 5737), in a namespace of this test's own.
SERVER_ADDR, HOST_ADDR, PORT = "203.0.113.2", "203.0.113.1", 8080


def _as_sudo_user(env: dict[str, str], user: str, runtime: Path, workdir: Path) -> None:
    """Make ``env`` that of ``sudo aegis-mcp`` by ``user``, who owns ``workdir``."""
    entry = pwd.getpwnam(user)
    env.update(SUDO_USER=user, SUDO_UID=str(entry.pw_uid), SUDO_GID=str(entry.pw_gid))
    env["AEGIS_MCP_RUNTIME_DIR"] = str(runtime)
    shutil.chown(workdir, entry.pw_uid, entry.pw_gid)
    for path in workdir.rglob("*"):
        os.lchown(path, entry.pw_uid, entry.pw_gid)


def _check_resumed(done, user: str, name: str = "claude") -> None:
    agent = tool_json(done, "server_status")["agent"]
    assert agent["user"] == {
        "uid": pwd.getpwnam(user).pw_uid,
        "name": user,
        "dropped_from_root": True,
    }
    # Claude refuses this flag as root (DESIGN.md fact 2): it ran as the user.
    assert "--dangerously-skip-permissions" in agent["command"]
    assert agent["restarts"] == 1 and agent["headless"] is True
    command = agent["command"]
    assert all(a in command for a in RESUMED[name]), command


def test_claude_as_root_runs_as_the_sudo_user(
    agent_env, standin, throwaway_user, public_runtime, tmp_path
):
    user, _group = throwaway_user
    server = standin(restart_script())
    env = agent_env("claude", server)
    workdir = Path(pwd.getpwnam(user).pw_dir) / "work"
    workdir.mkdir()
    _as_sudo_user(env, user, public_runtime, workdir)
    proc = start_aegis(["claude", "-p", "go"], env, cwd=workdir)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    _check_resumed(server.wait_for(lambda r: r.rule == "resumed done", 1), user)
    # Claude kept its conversation in the user's home, not root's.
    assert list((workdir.parent / ".claude" / "projects").glob("*/*.jsonl"))
    assert "resumed fine" in out


@contextlib.contextmanager
def _server_namespace(tmp_path: Path, script: Script):
    """A stand-in server in a network namespace of its own at SERVER_ADDR, linked to
    the host by a veth pair; yields the record file. Everything is removed after."""
    tag = f"{os.getpid() % 100000}"
    ns, host_if = f"e2e-model-{tag}", f"e2em{tag}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    proc = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "m0", "netns", ns)
        run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", f"{SERVER_ADDR}/30", "dev", "m0")
        run("ip", "-n", ns, "link", "set", "m0", "up")
        script_file, record, ready = (
            tmp_path / "script.json",
            tmp_path / "record.jsonl",
            tmp_path / "ready",
        )
        script_file.write_text(script.to_json())
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        serve = ["--script", script_file, "--record", record, "--ready", ready]
        serve += ["--host", SERVER_ADDR, "--port", PORT]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "e2e.standin", *map(str, serve)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the stand-in server in the namespace did not start"
            time.sleep(0.05)
        yield record
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def test_claude_in_a_network_sandbox_reaches_its_model_through_the_nat(
    agent_env, standin, throwaway_user, public_runtime, tmp_path
):
    user, _group = throwaway_user
    placeholder = standin(Script())  # only for agent_env's shape; the model is elsewhere
    env = agent_env("claude", placeholder)
    env["ANTHROPIC_BASE_URL"] = f"http://{SERVER_ADDR}:{PORT}"
    workdir = Path(pwd.getpwnam(user).pw_dir) / "work"
    workdir.mkdir()
    _as_sudo_user(env, user, public_runtime, workdir)
    with _server_namespace(tmp_path, restart_script()) as record:
        proc = start_aegis(["claude", "--sandbox=netns", "-p", "go"], env, cwd=workdir)
        out, err = proc.communicate(timeout=TIMEOUT)
        requests = read_record(record)
    assert proc.returncode == 0, err[-3000:]
    done = [r for r in requests if r.rule == "resumed done"]
    assert done, [(r.path, r.rule) for r in requests]
    _check_resumed(done[0], user)
    status = tool_json(done[0], "server_status")
    assert status["sandbox"]["kind"] == "netns"
    # The sandbox's NAT: the server saw the host's end of its own link.
    assert {r.client for r in requests} == {HOST_ADDR}
    assert not placeholder.requests
    assert "resumed fine" in out
