"""The leftover sources one by one: owners by pid and start time, what is spared, what is
killed. Each test makes its own leftovers, owned by processes it started, and sweeps only
those (``runners=``): nothing of anyone else is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aegis_mcp import owners
from aegis_mcp.cleanup.registry import KINDS, Kind
from aegis_mcp.cleanup.sweep import sweep
from aegis_mcp.leftovers import belonging_to
from aegis_mcp.runner.strays import StrayProcesses
from helpers import gone, wait_for

AEGIS_LIKE = [sys.executable, "-c", "import time; time.sleep(600)", "aegis"]
"""A process whose command line says aegis: what a runner looks like by its pid alone."""


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_identity_is_pid_and_start_time() -> None:
    me = owners.identity(os.getpid())
    assert owners.identity_alive(me)
    pid, start = me.split()
    assert not owners.identity_alive(f"{pid} {int(start) - 1}")  # the pid, reused
    assert not owners.identity_alive(f"{_exited_pid()} {start}")
    assert not owners.identity_alive("garbage")


def test_belonging_to_follows_sessions_and_parents() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
    other = subprocess.Popen(["sleep", "600"])
    try:
        child = wait_for(lambda: _children(leader.pid), what="the leader's child")[0]
        pids = [leader.pid, child, other.pid]
        assert belonging_to({leader.pid}, pids) == {leader.pid, child}
        assert belonging_to(set(), pids) == set()
    finally:
        for proc in (leader, other):
            proc.kill()
            proc.wait()


def test_strays_of_a_dead_runner_are_killed_but_its_pool_agents_spared() -> None:
    dead = _exited_pid()
    owner = subprocess.Popen(AEGIS_LIKE)

    def agent(runner: int, agent_id: str) -> subprocess.Popen:
        env = dict(os.environ, AEGIS_MCP_WRAPPER_PID=str(runner), AEGIS_MCP_AGENT_ID=agent_id)
        return subprocess.Popen(["sleep", "600"], env=env)

    stray, orphan, live = agent(dead, "primary"), agent(dead, "pool1"), agent(owner.pid, "primary")
    try:
        assert StrayProcesses().possible()
        kind = next(k for k in KINDS if k.name == "processes")
        report = sweep(runners={dead, owner.pid}, kinds=[kind]).to_dict()
        removed = {e["id"]: e for e in report["removed"]}
        assert removed[f"runner {dead} agent primary"]["processes"] == [stray.pid]
        assert stray.wait(timeout=10) == -9
        kept = {e["id"]: e["reason"] for e in report["kept"]}
        assert "orphaned" in kept[f"runner {dead} agent pool1"]
        assert "is alive" in kept[f"runner {owner.pid} agent primary"]
        assert orphan.poll() is None and live.poll() is None
    finally:
        for proc in (stray, orphan, live, owner):
            proc.kill()
            proc.wait()


@pytest.fixture
def cgroup_root() -> Path:
    if os.geteuid() != 0:
        pytest.skip("making cgroups needs root")
    from aegis_mcp.netmon.ebpf.availability import cgroup2_mount

    root = cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    return root


def test_a_dead_runners_cgroup_is_kept_for_its_orphaned_pool_agent(cgroup_root: Path) -> None:
    from aegis_mcp.netmon.ebpf.cgroup import AgentCgroup
    from aegis_mcp.netmon.ebpf.leftovers import CgroupLeftovers

    owner = subprocess.Popen(AEGIS_LIKE)
    cgroup = AgentCgroup(cgroup_root, owner.pid, "primary")
    kind = Kind("cgroups", "cgroups", True, lambda: CgroupLeftovers(cgroup_root))
    left = subprocess.Popen(["sleep", "600"], preexec_fn=cgroup.join_step("primary"))
    # A pool agent leads its own session and records itself (pid, start, id) as it joins.
    pool = subprocess.Popen(
        ["sh", "-c", "sleep 600 & wait"],
        preexec_fn=cgroup.join_step("pool1"),
        start_new_session=True,
    )
    procs = [left, pool, owner]
    try:
        pool_child = wait_for(lambda: _children(pool.pid), what="the pool agent's child")[0]
        assert sweep(runners={owner.pid}, kinds=[kind]).kept[0]["reason"].startswith("its runner")
        owner.kill()
        owner.wait()

        dry = sweep(True, runners={owner.pid}, kinds=[kind])
        assert dry.kept[0]["killed"] == [left.pid] and left.poll() is None
        report = sweep(runners={owner.pid}, kinds=[kind])
        assert report.removed == []
        (kept,) = report.kept
        assert f"pool agent pool1 (pid {pool.pid})" in kept["reason"]
        assert kept["killed"] == [left.pid]
        assert left.wait(timeout=10) == -9
        assert pool.poll() is None and not gone(pool_child)
        assert cgroup.path.is_dir()

        # Once the pool agent is gone, its children are nobody's: all goes.
        pool.kill()
        pool.wait()
        report = sweep(runners={owner.pid}, kinds=[kind])
        (removed,) = report.removed
        assert removed["processes"] == [pool_child]
        assert gone(pool_child) and not cgroup.path.exists()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        if cgroup.path.exists():
            cgroup.kill()
            cgroup.remove()


def test_a_cgroup_whose_owner_pid_was_reused_is_a_leftover(cgroup_root: Path) -> None:
    from aegis_mcp.netmon.ebpf.cgroup import OWNER_XATTR, AgentCgroup
    from aegis_mcp.netmon.ebpf.leftovers import CgroupLeftovers

    owner = subprocess.Popen(AEGIS_LIKE)
    cgroup = AgentCgroup(cgroup_root, owner.pid, "primary")
    kind = Kind("cgroups", "cgroups", True, lambda: CgroupLeftovers(cgroup_root))
    try:
        pid, start = os.getxattr(cgroup.path, OWNER_XATTR).decode().split()
        assert int(pid) == owner.pid
        # The pid runs an aegis-looking process, but one that started at another time.
        os.setxattr(cgroup.path, OWNER_XATTR, f"{pid} {int(start) - 1}".encode())
        report = sweep(runners={owner.pid}, kinds=[kind])
        assert [e["id"] for e in report.removed] == [str(cgroup.path)]
        assert not cgroup.path.exists() and owner.poll() is None
    finally:
        owner.kill()
        owner.wait()
        cgroup.remove()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
