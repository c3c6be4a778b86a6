"""The background agent pool and the file locks, driven with real demo agents.

Each test runs its own event loop (``asyncio.run``) with a ``ChildReaper``, as
the runner and the in-process MCP server host do.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.agents.profiles import BUILTIN_PROFILES, AgentProfile
from aegis_mcp.control.protocol import INVALID_ARGUMENT, NOT_FOUND, ControlError
from aegis_mcp.pool import AgentPool, FileLocks, pool_ops
from aegis_mcp.pool.errors import PoolUnavailable
from aegis_mcp.pool.results import OutputScanner
from aegis_mcp.privileges import resolve_agent_user
from aegis_mcp.processes import ChildReaper
from helpers import gone

FINAL = {"completed", "failed", "stopped", "timed_out"}

PROFILES = {
    **BUILTIN_PROFILES,
    "ghost": AgentProfile(
        name="ghost", command=("aegis-no-such-agent-xyz",), headless_args=("{task}",)
    ),
}


def scenario(spec: str) -> str:
    """A task that makes the demo agent run scenario steps."""
    return f"/scenario {spec}"


def with_pool(
    tmp_path: Path,
    env: dict[str, str],
    body: Callable[[AgentPool], Awaitable[Any]],
    max_agents: int = 2,
    events: list[tuple[str, str, str]] | None = None,
) -> Any:
    """Run ``body(pool)`` in a fresh loop with a reaper, shutting the pool down after."""
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)

    def env_for(agent_id: str) -> dict[str, str]:
        return {**env, "AEGIS_MCP_AGENT_ID": agent_id}

    async def main() -> Any:
        reaper = ChildReaper(asyncio.get_running_loop())
        pool = AgentPool(
            PROFILES,
            reaper,
            max_agents=max_agents,
            user=resolve_agent_user(keep_root=True),
            env_for=env_for,
            mcp_config=None,
            log_dir=tmp_path / "logs",
            default_cwd=str(workdir),
            stop_grace=1.0,
            on_event=None if events is None else lambda *event: events.append(event),
        )
        try:
            return await body(pool)
        finally:
            await pool.shutdown()
            reaper.close()

    return asyncio.run(main())


async def wait_output(pool: AgentPool, agent_id: str, text: str) -> dict[str, Any]:
    """Poll the agent's status until a line of its output contains ``text``."""
    for _ in range(3000):
        status = pool.status(agent_id)
        if any(text in line for line in status["last_output"]):
            return status
        assert status["status"] == "running", status
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} never appeared in the output of {agent_id}")


# -- the pool ------------------------------------------------------------------------


def test_queue_drains_with_at_most_max_agents_running(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = [
            await pool.spawn(scenario(f"sleep:1;say:done {n}"), agent_type="demo") for n in range(5)
        ]
        ids = [s["agent_id"] for s in spawned]
        assert len(set(ids)) == 5
        assert all(len(i) == 8 for i in ids)
        assert [s["status"] for s in spawned] == ["running"] * 2 + ["queued"] * 3
        assert [s.get("queue_position") for s in spawned[2:]] == [1, 2, 3]
        seen: dict[str, list[str]] = {i: [] for i in ids}
        max_running = 0
        while True:
            stats = pool.stats()
            max_running = max(max_running, stats["running"])
            assert stats["running"] <= 2, stats
            assert stats["active"] == stats["running"] + stats["queued"]
            for agent in pool.list():
                history = seen[agent["agent_id"]]
                if not history or history[-1] != agent["status"]:
                    history.append(agent["status"])
            if stats["active"] == 0:
                break
            await asyncio.sleep(0.02)
        assert max_running == 2
        for n, agent_id in enumerate(ids):
            expected = ["running", "completed"] if n < 2 else ["queued", "running", "completed"]
            assert seen[agent_id] == expected, (agent_id, seen[agent_id])
            status = pool.status(agent_id)
            assert status["result"] == f"done {n}"
            assert status["exit_code"] == 0
            assert gone(status["pid"])
        # FIFO: agents started in the order they were asked for.
        starts = [pool.status(i)["started_at"] for i in ids]
        assert starts == sorted(starts)
        stats = pool.stats()
        assert stats["completed"] == 5
        assert stats["max_agents"] == 2
        assert stats["mean_run_secs"] > 0

    with_pool(tmp_path, aegis_env, body)


def test_await_times_out_then_finishes(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        ops = pool_ops(pool, FileLocks(str(tmp_path)))
        spawned = await ops["agent_spawn"](
            {"description": scenario("sleep:3;say:late"), "agent_type": "demo"}
        )
        agent_id = spawned["agent_id"]
        early = await ops["agent_await"]({"agent_id": agent_id, "timeout_secs": 0.2})
        assert early["done"] is False
        assert early["status"] == "running"
        assert early["pid"] > 0
        final = await ops["agent_await"]({"agent_id": agent_id})
        assert final["done"] is True
        assert final["status"] == "completed"
        assert final["result"] == "late"
        assert final["ended_at"] >= final["started_at"] >= final["created_at"]

    with_pool(tmp_path, aegis_env, body)


def test_stop_escalates_past_an_ignored_sigint(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = await pool.spawn(
            scenario("spawn-child:120;ignore-sigint;quiet"), agent_type="demo"
        )
        agent_id = spawned["agent_id"]
        status = await wait_output(pool, agent_id, "ignoring SIGINT")
        child = next(
            int(line.rsplit(" ", 1)[1])
            for line in status["last_output"]
            if line.startswith("spawned child ")
        )
        stopped = await pool.stop(agent_id)
        assert stopped["status"] == "stopped"
        # SIGINT was ignored; SIGTERM ended it.
        assert stopped["exit_code"] == 143
        assert gone(stopped["pid"])
        # Its leftover child went with its session.
        assert gone(child)
        again = await pool.stop(agent_id)
        assert again["status"] == "stopped"
        assert "already finished" in again["message"]

    with_pool(tmp_path, aegis_env, body)


def test_stop_kills_an_agent_that_ignores_sigint_and_sigterm(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = await pool.spawn(
            scenario("ignore-sigint;ignore-sigterm;say:stubborn;quiet"), agent_type="demo"
        )
        await wait_output(pool, spawned["agent_id"], "stubborn")
        stopped = await pool.stop(spawned["agent_id"])
        assert stopped["status"] == "stopped"
        assert stopped["exit_code"] == 137
        assert gone(stopped["pid"])

    with_pool(tmp_path, aegis_env, body)


def test_stop_removes_a_queued_agent(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        running = await pool.spawn(scenario("quiet"), agent_type="demo")
        queued = await pool.spawn(scenario("say:never"), agent_type="demo")
        assert queued["status"] == "queued"
        stopped = await pool.stop(queued["agent_id"])
        assert stopped["status"] == "stopped"
        assert stopped["pid"] is None
        assert stopped["started_at"] is None
        assert pool.stats()["queued"] == 0
        assert pool.status(running["agent_id"])["status"] == "running"

    with_pool(tmp_path, aegis_env, body, max_agents=1)


def test_result_from_stream_json_and_log_file(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = await pool.spawn(
            scenario("say:working on it;say:the answer is 42"), agent_type="demo"
        )
        final = await pool.await_agent(spawned["agent_id"], 60)
        assert final["done"] is True
        assert final["status"] == "completed"
        assert final["exit_code"] == 0
        assert final["error"] is None
        assert final["result"] == "working on it\nthe answer is 42"
        # The tail shows the events readably, not as raw JSON.
        assert "the answer is 42" in final["last_output"]
        assert "[result] success" in final["last_output"]
        log = Path(final["log_file"])
        assert log.parent == tmp_path / "logs"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert '"type": "result"' in log.read_text()
        assert final["output_bytes"] == log.stat().st_size

    with_pool(tmp_path, aegis_env, body)


def test_working_directory_and_dash_task(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        (tmp_path / "work" / "sub").mkdir()
        spawned = await pool.spawn(
            scenario("write:out.txt:hello"), agent_type="demo", working_directory="sub"
        )
        assert spawned["working_directory"] == str(tmp_path / "work" / "sub")
        final = await pool.await_agent(spawned["agent_id"], 60)
        assert final["status"] == "completed"
        assert (tmp_path / "work" / "sub" / "out.txt").read_text() == "hello"
        # A Markdown-list task must reach the agent as its prompt, not as an option.
        listed = await pool.spawn("- fix the bug\n- add a test", agent_type="demo")
        final = await pool.await_agent(listed["agent_id"], 60)
        assert final["status"] == "completed", final
        assert "- fix the bug" in final["result"]

    with_pool(tmp_path, aegis_env, body)


def test_nonzero_exit_is_failed(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = await pool.spawn(scenario("say:oops;exit:3"), agent_type="demo")
        final = await pool.await_agent(spawned["agent_id"], 60)
        assert final["status"] == "failed"
        assert final["exit_code"] == 3
        assert "code 3" in final["error"]
        # No result event: the last lines stand in for the result.
        assert "oops" in final["result"]
        assert pool.stats()["failed"] == 1

    with_pool(tmp_path, aegis_env, body)


def test_error_result_is_failed(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        # Two tool calls with a budget of one: the demo reports error_max_turns.
        spawned = await pool.spawn(
            scenario("tool:first;tool:second"), agent_type="demo", max_iterations=1
        )
        final = await pool.await_agent(spawned["agent_id"], 60)
        assert final["status"] == "failed"
        assert "error_max_turns" in final["error"]

    with_pool(tmp_path, aegis_env, body)


def test_missing_binary_fails_with_error(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = await pool.spawn("do something", agent_type="ghost")
        assert spawned["status"] == "failed"
        assert "aegis-no-such-agent-xyz" in spawned["error"]
        assert "not found" in spawned["error"]
        final = await pool.await_agent(spawned["agent_id"], 5)
        assert final["done"] is True
        assert final["pid"] is None
        assert final["run_secs"] is None
        # The slot it would have used is free again.
        ok = await pool.spawn(scenario("say:fine"), agent_type="demo")
        assert (await pool.await_agent(ok["agent_id"], 60))["status"] == "completed"

    events: list[tuple[str, str, str]] = []
    with_pool(tmp_path, aegis_env, body, max_agents=1, events=events)
    assert any(
        level == "warning" and "failed to start" in message for _, message, level in events
    ), events


def test_timeout_is_timed_out(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        spawned = await pool.spawn(scenario("quiet"), agent_type="demo", timeout_secs=1)
        final = await pool.await_agent(spawned["agent_id"], 60)
        assert final["status"] == "timed_out"
        assert "timeout_secs" in final["error"]
        assert gone(final["pid"])
        assert pool.stats()["timed_out"] == 1

    with_pool(tmp_path, aegis_env, body)


def test_shutdown_stops_running_and_queued(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> list[dict[str, Any]]:
        for _ in range(3):
            await pool.spawn(scenario("quiet"), agent_type="demo")
        await pool.shutdown()
        with pytest.raises(PoolUnavailable):
            await pool.spawn("more", agent_type="demo")
        return [pool.status(a["agent_id"]) for a in pool.list()]

    statuses = with_pool(tmp_path, aegis_env, body, max_agents=2)
    assert [s["status"] for s in statuses] == ["stopped"] * 3
    assert all(gone(s["pid"]) for s in statuses if s["pid"] is not None)


def test_locks_of_a_pool_agent_go_when_it_ends(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> None:
        locks = FileLocks(str(tmp_path))
        ops = pool_ops(pool, locks)
        spawned = await ops["agent_spawn"](
            {"description": scenario("sleep:0.5"), "agent_type": "demo"}
        )
        agent_id = spawned["agent_id"]
        got = await ops["file_lock_acquire"]({"path": "a.py", "holder": agent_id})
        assert got["acquired"] is True
        await ops["agent_await"]({"agent_id": agent_id, "timeout_secs": 60})
        assert (await ops["agent_file_locks"]({}))["locks"] == []

    with_pool(tmp_path, aegis_env, body)


BAD_ARGS: list[tuple[str, dict[str, Any], str, str]] = [
    ("agent_spawn", {}, INVALID_ARGUMENT, "description"),
    ("agent_spawn", {"description": ""}, INVALID_ARGUMENT, "description"),
    ("agent_spawn", {"description": 5}, INVALID_ARGUMENT, "description"),
    ("agent_spawn", {"description": "x" * 100_001}, INVALID_ARGUMENT, "description"),
    ("agent_spawn", {"description": "x", "agent_type": "nope"}, INVALID_ARGUMENT, "demo"),
    ("agent_spawn", {"description": "x", "agent_type": 3}, INVALID_ARGUMENT, "agent_type"),
    (
        "agent_spawn",
        {"description": "x", "working_directory": "/no/such/dir"},
        INVALID_ARGUMENT,
        "working_directory",
    ),
    (
        "agent_spawn",
        {"description": "x", "working_directory": "file.txt"},
        INVALID_ARGUMENT,
        "not a directory",
    ),
    ("agent_spawn", {"description": "x", "max_iterations": True}, INVALID_ARGUMENT, "max_it"),
    ("agent_spawn", {"description": "x", "max_iterations": 0}, INVALID_ARGUMENT, "max_it"),
    ("agent_spawn", {"description": "x", "max_iterations": 10_001}, INVALID_ARGUMENT, "max_it"),
    ("agent_spawn", {"description": "x", "max_iterations": "5"}, INVALID_ARGUMENT, "max_it"),
    ("agent_spawn", {"description": "x", "timeout_secs": 0}, INVALID_ARGUMENT, "timeout_secs"),
    ("agent_spawn", {"description": "x", "timeout_secs": 86_401}, INVALID_ARGUMENT, "timeout"),
    ("agent_spawn", {"description": "x", "timeout_secs": "9"}, INVALID_ARGUMENT, "timeout"),
    ("agent_spawn", {"description": "x", "timeout_secs": True}, INVALID_ARGUMENT, "timeout"),
    ("agent_spawn", {"description": "x", "bogus": 1}, INVALID_ARGUMENT, "bogus"),
    ("agent_spawn", {"description": "x", "sandbox": "netns"}, INVALID_ARGUMENT, "not available"),
    ("agent_spawn", {"description": "x", "sandbox": "jail"}, INVALID_ARGUMENT, "sandbox"),
    ("agent_spawn", {"description": "x", "isolation": "copy"}, INVALID_ARGUMENT, "isolation"),
    (
        "agent_spawn",
        {"description": "x", "isolation": "worktree"},
        INVALID_ARGUMENT,
        "not inside a git repository",
    ),
    ("agent_list", {"all": True}, INVALID_ARGUMENT, "all"),
    ("agent_status", {}, INVALID_ARGUMENT, "agent_id"),
    ("agent_status", {"agent_id": 5}, INVALID_ARGUMENT, "agent_id"),
    ("agent_status", {"agent_id": "nope"}, NOT_FOUND, "nope"),
    ("agent_await", {"agent_id": "nope"}, NOT_FOUND, "nope"),
    ("agent_await", {"agent_id": "x", "timeout_secs": -1}, INVALID_ARGUMENT, "timeout_secs"),
    ("agent_await", {"agent_id": "x", "timeout_secs": 3601}, INVALID_ARGUMENT, "timeout_secs"),
    ("agent_await", {"agent_id": "x", "timeout_secs": "1"}, INVALID_ARGUMENT, "timeout_secs"),
    ("agent_stop", {}, INVALID_ARGUMENT, "agent_id"),
    ("agent_stop", {"agent_id": "nope"}, NOT_FOUND, "nope"),
    ("agent_pool_stats", {"verbose": 1}, INVALID_ARGUMENT, "verbose"),
    ("agent_pool_configure", {}, INVALID_ARGUMENT, "max_agents and/or max_spawn_depth"),
    ("agent_pool_configure", {"max_agents": 0}, INVALID_ARGUMENT, "max_agents"),
    ("agent_pool_configure", {"max_agents": True}, INVALID_ARGUMENT, "max_agents"),
    ("agent_pool_configure", {"max_spawn_depth": 17}, INVALID_ARGUMENT, "max_spawn_depth"),
    ("agent_pool_configure", {"depth": 1}, INVALID_ARGUMENT, "depth"),
    ("agent_file_locks", {"path": "x"}, INVALID_ARGUMENT, "path"),
    ("file_lock_acquire", {}, INVALID_ARGUMENT, "path"),
    ("file_lock_acquire", {"path": 3}, INVALID_ARGUMENT, "path"),
    ("file_lock_acquire", {"path": "/etc/passwd"}, INVALID_ARGUMENT, "outside"),
    ("file_lock_acquire", {"path": "../x"}, INVALID_ARGUMENT, "outside"),
    ("file_lock_acquire", {"path": "a", "ttl_secs": 0}, INVALID_ARGUMENT, "ttl_secs"),
    ("file_lock_acquire", {"path": "a", "ttl_secs": "1"}, INVALID_ARGUMENT, "ttl_secs"),
    ("file_lock_acquire", {"path": "a", "wait_secs": -1}, INVALID_ARGUMENT, "wait_secs"),
    ("file_lock_acquire", {"path": "a", "holder": ""}, INVALID_ARGUMENT, "holder"),
    ("file_lock_acquire", {"path": "a", "holder_pid": "1"}, INVALID_ARGUMENT, "holder_pid"),
    ("file_lock_acquire", {"path": "a", "holder_pid": True}, INVALID_ARGUMENT, "holder_pid"),
    ("file_lock_acquire", {"path": "a", "holder_pid": 2**31 - 2}, INVALID_ARGUMENT, "running"),
    ("file_lock_acquire", {"path": "a", "mode": "x"}, INVALID_ARGUMENT, "mode"),
    ("file_lock_release", {}, INVALID_ARGUMENT, "path"),
    ("file_lock_release", {"path": "/etc/passwd"}, INVALID_ARGUMENT, "outside"),
    ("file_lock_release", {"path": "a", "holder": 5}, INVALID_ARGUMENT, "holder"),
]


def test_bad_arguments_are_refused_for_every_op(tmp_path, aegis_env):
    async def body(pool: AgentPool) -> list[tuple[str, dict[str, Any], str, str]]:
        (tmp_path / "work" / "file.txt").write_text("")
        ops = pool_ops(pool, FileLocks(str(tmp_path / "work")))
        assert set(ops) == {op for op, *_ in BAD_ARGS}
        wrong = []
        for op, args, code, needle in BAD_ARGS:
            try:
                result = await ops[op](args)
            except ControlError as exc:
                if exc.code != code or needle not in exc.message:
                    wrong.append((op, args, exc.code, exc.message))
            else:
                wrong.append((op, args, "no error", repr(result)[:200]))
        return wrong

    assert with_pool(tmp_path, aegis_env, body) == []


def test_scanner_survives_stderr_in_front_and_split_chunks():
    scanner = OutputScanner()
    line = b'{"type": "result", "subtype": "success", "is_error": false, "result": "ok \xc3\xa9"}\n'
    scanner.feed(b"warning: slow disk\n" + b"stderr bits " + line[:20])
    scanner.feed(line[20:41])
    scanner.feed(line[41:])
    outcome = scanner.outcome()
    assert outcome.text == "ok é"
    assert outcome.is_error is False
    assert list(scanner.tail) == ["warning: slow disk", "stderr bits", "[result] success"]


# -- file locks ----------------------------------------------------------------------


def test_second_holder_waits_for_release(tmp_path):
    async def main() -> None:
        locks = FileLocks(str(tmp_path))
        first = await locks.acquire("src/a.py", "alice", None)
        assert first["acquired"] is True
        assert first["path"] == str(tmp_path / "src" / "a.py")
        busy = await locks.acquire("src/a.py", "bob", None)
        assert busy["acquired"] is False
        assert busy["held_by"] == "alice"
        waiting = asyncio.ensure_future(locks.acquire("src/./a.py", "bob", None, wait_secs=60))
        await asyncio.sleep(0.3)
        # alice holds it, so bob cannot have got it.
        assert not waiting.done()
        with pytest.raises(ControlError) as refused:
            locks.release("src/a.py", "bob")
        assert refused.value.code == INVALID_ARGUMENT
        assert "'alice'" in refused.value.message
        assert locks.release(str(tmp_path / "src" / "a.py"), "alice")["released"] is True
        got = await waiting
        assert got["acquired"] is True
        assert got["holder"] == "bob"
        assert [(lk["path"], lk["holder"]) for lk in locks.list()] == [
            (str(tmp_path / "src" / "a.py"), "bob")
        ]
        # Releasing what is not locked is not an error.
        assert locks.release("c.py", "bob")["released"] is False

    asyncio.run(main())


def test_reacquiring_extends_own_lock(tmp_path):
    async def main() -> None:
        locks = FileLocks(str(tmp_path))
        first = await locks.acquire("a.py", "alice", None, ttl_secs=10)
        again = await locks.acquire("a.py", "alice", None, ttl_secs=1000)
        assert again["acquired"] is True
        assert again["since"] == first["since"]
        assert again["expires_at"] > first["expires_at"]
        assert len(locks.list()) == 1

    asyncio.run(main())


def test_lock_expires_after_its_ttl(tmp_path):
    async def main() -> None:
        locks = FileLocks(str(tmp_path))
        await locks.acquire("a.py", "alice", None, ttl_secs=1)
        got = await locks.acquire("a.py", "bob", None, wait_secs=60)
        assert got["acquired"] is True
        assert [lk["holder"] for lk in locks.list()] == ["bob"]

    asyncio.run(main())


def test_lock_of_a_dead_holder_is_released(tmp_path):
    async def main() -> None:
        locks = FileLocks(str(tmp_path))
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            got = await locks.acquire("a.py", "alice", holder.pid)
            assert got["holder_pid"] == holder.pid
            assert [lk["holder_pid"] for lk in locks.list()] == [holder.pid]
            busy = await locks.acquire("a.py", "bob", None)
            assert busy["acquired"] is False
        finally:
            holder.kill()
            holder.wait()
        assert locks.list() == []
        assert (await locks.acquire("a.py", "bob", None))["acquired"] is True

    asyncio.run(main())


def test_paths_outside_the_root_are_refused(tmp_path):
    async def main() -> None:
        root = tmp_path / "root"
        root.mkdir()
        (root / "escape").symlink_to(tmp_path)
        locks = FileLocks(str(root))
        for path in ("/etc/passwd", "../x", "escape/x", str(tmp_path / "x")):
            with pytest.raises(ControlError) as refused:
                await locks.acquire(path, "alice", None)
            assert refused.value.code == INVALID_ARGUMENT
            assert "outside" in refused.value.message
        inside = await locks.acquire("sub/../x", "alice", None)
        assert inside["path"] == str(root / "x")
        assert os.path.isabs(inside["path"])

    asyncio.run(main())
