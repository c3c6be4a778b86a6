"""What each netmon mode sees of each real agent CLI, measured; the README's table.

Each agent runs under ``sudo aegis-mcp AGENT --netmon=MODE`` (root's runner, dropped
to a test user; the hooks library where ``make install`` as root puts it) against a
stand-in model server that streams its answer slowly, so the agent's connection
lives while it is looked at. What netmon saw of the traffic to the server (its
connects, its bytes, against what the server itself received) makes the cell:
``fully``, ``partly`` or ``not at all``; and the runner's own verdict
(``coverage``) must say the same: a mode that missed bytes reports them unknown
(None), never 0. The README's table under "Network monitoring" must hold what was
measured here.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.control.protocol import ControlError
from aegis_mcp.netmon.ebpf import ebpf_available
from e2e.agents import agents_bin, git_workdir, model_env, require
from e2e.standin import Match, Script, SlowText, read_record
from e2e.test_agents import HEADLESS
from e2e.test_claude_root import PORT, SERVER_ADDR
from e2e.test_claude_root import _server_namespace as server_namespace
from helpers import REPO, call, runner_socket, start_aegis, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a privilege drop needs root")

AGENTS = ["claude", "codex", "gemini", "aider"]
MODES = ["preload", "ebpf", "netns"]
CELLS = ("fully", "partly", "not at all")
LOOKS = 3
"""Coverage checks to wait for once the model server has the agent's request."""


def readme_table() -> dict[tuple[str, str], str]:
    """The README's cells: (agent, mode) -> ``fully``, ``partly`` or ``not at all``."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Network monitoring") :]
    section = section[: section.index("\n### ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| agent"))
    modes = [cell.strip(" `") for cell in header.strip("|").split("|")[1:]]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        agent = cells[0].strip("`")
        for mode, cell in zip(modes, cells[1:], strict=True):
            word = re.match(r"\*\*(fully|partly|not at all)\*\*", cell)
            assert word, f"README table cell {agent}/{mode} names no verdict: {cell!r}"
            table[(agent, mode.removeprefix("--netmon="))] = word.group(1)
    return table


def readme_example_line() -> str:
    """The start-up line the README quotes (``for example `aegis-mcp: netmon ...` ``)."""
    text = " ".join((REPO / "README.md").read_text().split())
    return re.search(r"for example `(aegis-mcp: netmon [^`]*)`", text).group(1)


@contextlib.contextmanager
def model_server(mode: str, standin, tmp_path: Path, script: Script):
    """(url, endpoint, requests) of a stand-in model server the agent can reach: on
    loopback, or for a netns sandbox in a namespace of its own behind the sandbox's NAT
    (that one records a request once it is answered: ``requests()`` waits for it)."""
    if mode != "netns":
        server = standin(script)
        yield server.url, f"127.0.0.1:{server.port}", lambda: server.requests
        return
    with server_namespace(tmp_path, script) as record:
        yield f"http://{SERVER_ADDR}:{PORT}", f"{SERVER_ADDR}:{PORT}", lambda: read_record(record)


def measure(name: str, mode: str, env: dict[str, str], url: str, endpoint: str, requests):
    """Run agent ``name`` under ``--netmon=mode`` (``auto``: plain ``--netmon``, the best
    available); what netmon saw of its model traffic."""
    user = env["SUDO_USER"]
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir)
    env = {**env, **model_env(name, url, home)}
    env["PATH"] = f"{agents_bin()}:{env['PATH']}"
    workdir = git_workdir(home / "work")
    subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(home)], check=True)
    flag = "--netmon" if mode == "auto" else f"--netmon={mode}"
    argv = [name, flag, "--no-watchdog", *HEADLESS[name]]
    proc = start_aegis(argv, env, cwd=workdir)
    try:
        sock = runner_socket(Path(env["AEGIS_MCP_RUNTIME_DIR"]), timeout=60)
        first = wait_for(lambda: _arrived(sock, endpoint, requests, mode), 120, 1, "the request")
        base = first["coverage"]["checks"]
        status = wait_for(
            lambda: (s := call(sock, "netmon_status"))["coverage"]["checks"] >= base + LOOKS and s,
            60,
            what=f"{LOOKS} coverage checks",
        )
        events = call(sock, "netmon_log", count=1000)["events"]
    except (AssertionError, ControlError) as exc:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"{exc}\nstdout: {out[-1000:]}\nstderr: {err[-3000:]}") from exc
    proc.terminate()
    _out, err = proc.communicate(timeout=60)
    left = _processes_of(entry.pw_uid)
    assert not left, f"the run left processes of {user} behind: {left}"
    asked = wait_for(lambda: _slow(requests()), 30, what="the agent's request on record")
    addr, port = endpoint.rsplit(":", 1)
    targets = [t for t in status["top_targets"] if t["target"] == endpoint]
    connects = [
        e
        for e in events
        if e["event"] == "connect"
        and (e.get("remote_addr"), e.get("remote_port")) == (addr, int(port))
    ]
    return {
        "status": status,
        "connects": len(connects) or (targets[0]["connections"] if targets else 0),
        "sent": targets[0]["bytes_sent"] if targets else 0,
        "request_bytes": asked.body_bytes,
        "stderr": err,
    }


def _processes_of(uid: int) -> list[str]:
    """What still runs as ``uid`` (a process that is exiting, or a zombie waiting to be
    reaped, gets a moment)."""
    import psutil

    def alive() -> list[str]:
        found = []
        for proc in psutil.process_iter(["uids", "cmdline", "status"]):
            info = proc.info
            # Zombies too: until reaped they keep the user from being removed.
            if info["uids"] and info["uids"].real == uid:
                command = " ".join(info["cmdline"] or []) or f"({info['status']})"
                found.append(f"{proc.pid} {command[:120]}")
        return found

    try:
        wait_for(lambda: not alive(), 10, what="the user's processes to end")
    except AssertionError:
        return alive()
    return []


def _slow(requests: list[Any]) -> Any:
    return next((r for r in requests if r.rule == "slow"), None)


def _arrived(sock: Path, endpoint: str, requests, mode: str) -> dict[str, Any] | None:
    """netmon_status once the agent's request is at the server (and coverage is on)."""
    status = call(sock, "netmon_status")
    if not status or not status.get("coverage"):
        return None
    if mode == "netns":
        # The namespace's server records only answered requests: netns sees the flow.
        started = any(t["target"] == endpoint and t["bytes_sent"] for t in status["top_targets"])
    else:
        started = _slow(requests()) is not None
    return status if started else None


def cell_of(seen: dict[str, Any]) -> str:
    """The README's word for what was seen of the traffic to the model server."""
    if not seen["connects"]:
        return "not at all"
    sent = seen["sent"]
    return "fully" if sent is not None and sent >= seen["request_bytes"] else "partly"


@pytest.fixture
def sudo_env(aegis_env, throwaway_user, public_runtime, hooks_in_roots_home):
    """``sudo aegis-mcp`` by the test user, the hooks library in root's home."""
    user, _group = throwaway_user
    entry = pwd.getpwnam(user)
    env = dict(aegis_env)
    env.update(
        SUDO_USER=user,
        SUDO_UID=str(entry.pw_uid),
        SUDO_GID=str(entry.pw_gid),
        AEGIS_HOOKS_LIB=str(hooks_in_roots_home),
    )
    return env


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", AGENTS)
def test_what_each_mode_sees_of_each_agent(name, mode, sudo_env, standin, tmp_path):
    require(name)
    if mode == "ebpf" and not (ready := ebpf_available())[0]:
        pytest.skip(f"eBPF unavailable: {ready[1]}")
    slow = SlowText("netmon is watching", chunks=60, interval=0.5)
    script = Script().on(Match(user_says="go"), slow, name="slow")
    with model_server(mode, standin, tmp_path, script) as (url, endpoint, requests):
        seen = measure(name, mode, sudo_env, url, endpoint, requests)
    status, coverage = seen["status"], seen["status"]["coverage"]
    cell = cell_of(seen)
    lines = [p["line"] for p in coverage["processes"]]
    print(
        f"{name} --netmon={mode}: {cell}; {seen['connects']} connect(s), sent {seen['sent']}"
        f" for {seen['request_bytes']} request bytes; coverage {coverage['verdict']}: {lines}"
    )
    assert mode in status["mode"].split("+")
    assert cell == readme_table()[(name, mode)], coverage
    # The runner says what it could not see, and does not count it as 0.
    if cell == "fully":
        assert coverage["verdict"] == "full", coverage
        assert status["bytes_sent"] >= seen["request_bytes"]
    else:
        assert coverage["verdict"] in ("partial", "blind"), coverage
        assert status["bytes_sent"] is None and seen["sent"] in (None, 0)
        missed = [p["line"] for p in coverage["processes"] if p["verdict"] != "full"]
        assert any(line in seen["stderr"] for line in missed), seen["stderr"][-2000:]
    if (name, mode) == ("codex", "preload"):
        assert readme_example_line() in seen["stderr"]


# The agent, and the one the hooks cannot see at all (the others cost 20 s each).
@pytest.mark.parametrize("name", ["claude", "codex"])
def test_best_available_sees_each_agent_whole(name, sudo_env, standin, tmp_path):
    """Plain ``--netmon`` picks the source that sees every agent whole where the machine
    has one (eBPF), also for those the hooks cannot see."""
    require(name)
    if not (ready := ebpf_available())[0]:
        pytest.skip(f"eBPF unavailable: {ready[1]}")
    script = Script().on(Match(user_says="go"), SlowText("best available", 60, 0.5), name="slow")
    with model_server("auto", standin, tmp_path, script) as (url, endpoint, requests):
        seen = measure(name, "auto", sudo_env, url, endpoint, requests)
    status = seen["status"]
    assert status["mode"] == "ebpf", status.get("reason")
    assert cell_of(seen) == "fully" and status["coverage"]["verdict"] == "full", status
    assert status["bytes_sent"] >= seen["request_bytes"]
    assert "netmon (" not in seen["stderr"], seen["stderr"][-2000:]
