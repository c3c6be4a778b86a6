"""Pool agents in their own git worktree (``isolation``), and the ``sandbox`` option
with the hook a host provides sandboxes through."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from aegis_mcp.control.protocol import INVALID_ARGUMENT, ControlError
from aegis_mcp.pool import AgentPool, FileLocks, PoolStore, pool_ops
from aegis_mcp.pool.sandbox import SandboxFor
from aegis_mcp.privileges import resolve_agent_user
from aegis_mcp.processes import ChildReaper, SpawnSpec

WAIT = 60.0
GIT = shutil.which("git") or "git"
"""Found once: a test takes git off PATH."""


def git(cwd: Path, *args: str) -> str:
    """Output of a git command that must work."""
    done = subprocess.run(
        [GIT, *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=WAIT
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit and a subdirectory."""
    path = tmp_path / "repo"
    (path / "sub").mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "config", "user.email", "test@example.invalid")
    git(path, "config", "user.name", "test")
    (path / "README").write_text("hello\n")
    (path / "sub" / "keep.txt").write_text("kept\n")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "first")
    return path


def with_pool(
    tmp_path: Path,
    env: dict[str, str],
    body: Callable[[AgentPool], Awaitable[Any]],
    sandbox_for: SandboxFor | None = None,
) -> Any:
    """``body(pool)`` with a pool on a database in ``tmp_path/state``."""

    async def main() -> Any:
        reaper = ChildReaper(asyncio.get_running_loop())
        store = PoolStore.open(tmp_path / "state")
        pool = AgentPool(
            BUILTIN_PROFILES,
            reaper,
            max_agents=2,
            user=resolve_agent_user(keep_root=True),
            env_for=lambda agent_id: {**env, "AEGIS_MCP_AGENT_ID": agent_id},
            mcp_config=None,
            log_dir=tmp_path / "logs",
            default_cwd=str(tmp_path),
            stop_grace=1.0,
            store=store,
            sandbox_for=sandbox_for,
        )
        try:
            return await body(pool)
        finally:
            await pool.shutdown()
            reaper.close()
            store.close()

    return asyncio.run(main())


# -- worktrees -----------------------------------------------------------------------


def test_worktree_agent_leaves_its_change_on_its_branch(tmp_path, aegis_env, repo):
    async def body(pool: AgentPool) -> dict[str, Any]:
        ops = pool_ops(pool, FileLocks(str(repo)))
        spawned = await ops["agent_spawn"](
            {
                "description": "/scenario write:out.txt:made by the agent",
                "agent_type": "demo",
                "working_directory": str(repo),
                "isolation": "worktree",
            }
        )
        agent_id = spawned["agent_id"]
        assert spawned["isolation"] == "worktree"
        assert spawned["branch"] == f"aegis/{agent_id}"
        assert spawned["worktree"] == str(tmp_path / "state" / "worktrees" / agent_id)
        assert spawned["working_directory"] == spawned["worktree"]
        assert spawned["base_commit"] == git(repo, "rev-parse", "HEAD").strip()
        final = await ops["agent_await"]({"agent_id": agent_id, "timeout_secs": WAIT})
        assert final["status"] == "completed", final
        return final

    final = with_pool(tmp_path, aegis_env, body)
    worktree = Path(final["worktree"])
    branch = final["branch"]
    # The change is in the agent's worktree, not in the user's checkout.
    assert (worktree / "out.txt").read_text() == "made by the agent"
    assert not (repo / "out.txt").exists()
    assert final["changes"]["commits_ahead"] == 0
    assert final["changes"]["uncommitted"] == ["?? out.txt"]
    assert final["changes"]["uncommitted_count"] == 1
    assert git(repo, "branch", "--list", branch).strip().endswith(branch)
    listed = git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {worktree}" in listed
    # It is kept for the user, and the status says how to merge and remove it.
    assert f"git worktree remove {worktree}" in final["worktree_help"]
    assert f"git merge {branch}" in final["worktree_help"]
    git(repo, "worktree", "remove", "--force", str(worktree))
    git(repo, "branch", "-D", branch)
    assert not worktree.exists()


def test_worktree_keeps_the_subdirectory_and_counts_commits(tmp_path, aegis_env, repo):
    async def body(pool: AgentPool) -> dict[str, Any]:
        spawned = await pool.spawn(
            "/scenario write:new.txt:x;sleep:1",
            agent_type="demo",
            working_directory=str(repo / "sub"),
            isolation="worktree",
        )
        worktree = Path(spawned["worktree"])
        assert spawned["working_directory"] == str(worktree / "sub")
        # A commit made on the agent's branch while it runs counts as ahead.
        (worktree / "committed.txt").write_text("c\n")
        git(worktree, "add", "committed.txt")
        git(worktree, "commit", "--quiet", "-m", "agent work")
        return await pool.await_agent(spawned["agent_id"], WAIT)

    final = with_pool(tmp_path, aegis_env, body)
    assert final["status"] == "completed", final
    assert (Path(final["worktree"]) / "sub" / "new.txt").read_text() == "x"
    assert final["changes"]["commits_ahead"] == 1
    assert final["changes"]["uncommitted"] == ["?? sub/new.txt"]
    assert git(repo, "log", "--format=%s", final["branch"]).splitlines()[0] == "agent work"


def test_worktree_refusals(tmp_path, aegis_env, repo, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "--quiet")

    async def body(pool: AgentPool) -> None:
        for directory, needle in ((plain, "not inside a git repository"), (empty, "no commit")):
            with pytest.raises(ControlError) as refused:
                await pool.spawn(
                    "x", agent_type="demo", working_directory=str(directory), isolation="worktree"
                )
            assert refused.value.code == INVALID_ARGUMENT
            assert needle in refused.value.message
        nowhere = tmp_path / "no-git-here"
        nowhere.mkdir()
        monkeypatch.setenv("PATH", str(nowhere))
        with pytest.raises(ControlError) as refused:
            await pool.spawn(
                "x", agent_type="demo", working_directory=str(repo), isolation="worktree"
            )
        assert refused.value.code == INVALID_ARGUMENT
        assert "git" in refused.value.message
        assert "not found" in refused.value.message
        # Nothing was recorded for the refused requests.
        assert pool.list() == []

    with_pool(tmp_path, aegis_env, body)
    assert git(repo, "branch", "--list", "aegis/*") == ""


# -- sandboxes -----------------------------------------------------------------------


def test_sandbox_hook_confines_the_agent(tmp_path, aegis_env):
    calls: list[tuple[str, str]] = []
    marker = tmp_path / "confined"

    def sandbox_for(kind: str, agent_id: str, spec: SpawnSpec) -> SpawnSpec:
        calls.append((kind, agent_id))
        if kind == "container":
            raise RuntimeError("no container engine on this host")
        path = str(marker)

        def step() -> None:
            # Runs in the child between fork and exec: a plain syscall only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

        return dataclasses.replace(spec, confine=(*spec.confine, step))

    async def body(pool: AgentPool) -> None:
        confined = await pool.spawn("/scenario say:inside", agent_type="demo", sandbox="netns")
        assert confined["sandbox"] == "netns"
        final = await pool.await_agent(confined["agent_id"], WAIT)
        assert final["status"] == "completed"
        assert final["sandbox"] == "netns"
        assert calls == [("netns", confined["agent_id"])]
        assert marker.exists()
        failed = await pool.spawn("/scenario say:never", agent_type="demo", sandbox="container")
        final = await pool.await_agent(failed["agent_id"], WAIT)
        assert final["status"] == "failed"
        assert "no container engine" in final["error"]

    with_pool(tmp_path, aegis_env, body, sandbox_for=sandbox_for)


BAD_ARGS: list[tuple[dict[str, Any], str]] = [
    ({"sandbox": "netns"}, "not available"),
    ({"sandbox": "container"}, "not available"),
    ({"sandbox": "vm"}, "none, netns, container"),
    ({"sandbox": 1}, "sandbox"),
    ({"sandbox": ""}, "sandbox"),
    ({"isolation": "branch"}, "none, worktree"),
    ({"isolation": True}, "isolation"),
]


def test_bad_sandbox_and_isolation_are_refused(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> list[Any]:
        ops = pool_ops(pool, FileLocks(str(tmp_path)))
        wrong = []
        for args, needle in BAD_ARGS:
            try:
                result = await ops["agent_spawn"](
                    {"description": "x", "agent_type": "demo", **args}
                )
            except ControlError as exc:
                if exc.code != INVALID_ARGUMENT or needle not in exc.message:
                    wrong.append((args, exc.code, exc.message))
            else:
                wrong.append((args, "no error", result))
        assert pool.list() == []
        return wrong

    assert with_pool(tmp_path, aegis_env, body) == []
