"""The pool's SQLite database: history across restarts, orphans of a killed runner,
locks shared between processes, and a locked, corrupt or full database.

Other pool processes are this module run as a script (``python test_pool_persist.py
MODE STATE_DIR WORKDIR``): each builds a pool on the given state directory, says
what it did as one JSON line on stdout, and waits for orders on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from aegis_mcp.agents.profiles import BUILTIN_PROFILES
from aegis_mcp.control.protocol import INVALID_ARGUMENT, ControlError
from aegis_mcp.pool import AgentPool, FileLocks, PoolStore, pool_ops
from aegis_mcp.pool.errors import PoolUnavailable
from aegis_mcp.pool.records import AgentRecord
from aegis_mcp.pool.store import DB_NAME
from aegis_mcp.privileges import resolve_agent_user
from aegis_mcp.processes import ChildReaper
from helpers import gone, wait_for

WAIT = 60.0


def scenario(spec: str) -> str:
    """A task that makes the demo agent run scenario steps."""
    return f"/scenario {spec}"


def make_pool(
    reaper: ChildReaper,
    store: PoolStore,
    workdir: Path,
    logs: Path,
    env: dict[str, str],
    max_agents: int = 4,
    events: list[tuple[str, str, str]] | None = None,
) -> AgentPool:
    """A pool on ``store`` running demo agents in ``workdir``."""
    return AgentPool(
        BUILTIN_PROFILES,
        reaper,
        max_agents=max_agents,
        user=resolve_agent_user(keep_root=True),
        env_for=lambda agent_id: {**env, "AEGIS_MCP_AGENT_ID": agent_id},
        mcp_config=None,
        log_dir=logs,
        default_cwd=str(workdir),
        stop_grace=1.0,
        store=store,
        on_event=None if events is None else lambda *event: events.append(event),
    )


def run_pool(
    state: Path,
    tmp_path: Path,
    env: dict[str, str],
    body: Callable[[AgentPool], Awaitable[Any]],
    events: list[tuple[str, str, str]] | None = None,
    **kwargs: Any,
) -> Any:
    """``body(pool)`` with a pool on the database in ``state``, in a fresh loop."""
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)

    async def main() -> Any:
        reaper = ChildReaper(asyncio.get_running_loop())
        store = PoolStore.open(state, **kwargs)
        pool = make_pool(reaper, store, workdir, tmp_path / "logs", env, events=events)
        try:
            return await body(pool)
        finally:
            await pool.shutdown()
            reaper.close()
            store.close()

    return asyncio.run(main())


async def until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``predicate`` inside a loop until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_output(pool: AgentPool, agent_id: str, text: str) -> None:
    """Until a line of the agent's output contains ``text``."""
    await until(
        lambda: any(text in line for line in pool.status(agent_id)["last_output"]),
        f"{text!r} from {agent_id}",
    )


# -- the other processes -------------------------------------------------------------


class Helper:
    """This module run as another pool process."""

    def __init__(self, mode: str, state: Path, workdir: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, mode, str(state), str(workdir)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self, timeout: float = WAIT) -> str:
        """The next line it prints."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("the helper process said nothing")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the helper process ended (code {self.proc.wait()})")
        return line.strip()

    def json(self) -> Any:
        """The next line it prints, decoded."""
        return json.loads(self.line())

    def send(self, line: str) -> None:
        """Tell it something."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Kill it if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


async def _helper_main(mode: str, state: Path, workdir: Path) -> None:
    loop = asyncio.get_running_loop()
    reaper = ChildReaper(loop)
    store = PoolStore.open(state)
    pool = make_pool(reaper, store, workdir, state / "logs", dict(os.environ), max_agents=3)
    locks = FileLocks(str(workdir), store)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def say(data: Any) -> None:
        print(json.dumps(data), flush=True)

    if mode == "orphans":
        # Three running agents and one queued, then wait to be killed.
        ids = [
            (await pool.spawn(scenario("say:ready;quiet"), agent_type="demo"))["agent_id"]
            for _ in range(4)
        ]
        for agent_id in ids[:3]:
            await wait_output(pool, agent_id, "ready")
        say({"ids": ids, "pids": [pool.status(i)["pid"] for i in ids]})
        await asyncio.Event().wait()
    elif mode == "locker":
        agent = await pool.spawn(scenario("say:ready;quiet"), agent_type="demo")
        await wait_output(pool, agent["agent_id"], "ready")
        lock = await locks.acquire("shared.txt", "alice", None)
        say({"agent_id": agent["agent_id"], "lock": lock})
        await stdin.readline()
        say(locks.release("shared.txt", "alice"))
        await stdin.readline()
    elif mode == "contend":
        # One attempt per round, as soon as the round's go line arrives.
        while line := (await stdin.readline()).decode().strip():
            got = await locks.acquire(f"contended-{line}.txt", f"holder-{os.getpid()}", None)
            say({"round": line, "acquired": got["acquired"]})
    await pool.shutdown()
    reaper.close()
    store.close()


# -- history -----------------------------------------------------------------------


def test_history_survives_a_new_pool(tmp_path, aegis_env):
    state = tmp_path / "state"

    async def first(pool: AgentPool) -> dict[str, dict[str, Any]]:
        ok = await pool.spawn(scenario("say:the answer is 42"), agent_type="demo")
        bad = await pool.spawn(scenario("say:oops;exit:3"), agent_type="demo")
        for agent in (ok, bad):
            await pool.await_agent(agent["agent_id"], WAIT)
        return {a["agent_id"]: pool.status(a["agent_id"]) for a in (ok, bad)}

    before = run_pool(state, tmp_path, aegis_env, first)
    assert (state / DB_NAME).exists()

    async def second(pool: AgentPool) -> None:
        listed = pool.list()
        assert [a["agent_id"] for a in listed] == list(before)
        for agent_id, status in before.items():
            # Every field as it was: status, times, exit code, tail, result, log file.
            assert pool.status(agent_id) == status
        completed, failed = before.values()
        assert completed["status"] == "completed"
        assert completed["result"] == "the answer is 42"
        assert failed["status"] == "failed"
        assert failed["exit_code"] == 3
        assert "oops" in failed["last_output"]
        assert Path(completed["log_file"]).exists()
        stats = pool.stats()
        assert (stats["completed"], stats["failed"], stats["total"]) == (1, 1, 2)
        assert (await pool.await_agent(completed["agent_id"], 0))["done"] is True
        kinds = [e["kind"] for e in pool.store.events(agent_id=completed["agent_id"])]
        assert kinds == ["pool.spawn", "pool.start", "pool.end"]

    run_pool(state, tmp_path, aegis_env, second)


def test_every_record_field_has_a_column(tmp_path):
    store = PoolStore.open(tmp_path)
    columns = {row["name"] for row in store.query("PRAGMA table_info(agents)")}
    store.close()
    assert {f.name for f in fields(AgentRecord)} <= columns
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] >= 1


def test_a_newer_schema_is_refused(tmp_path):
    PoolStore.open(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    with pytest.raises(PoolUnavailable) as refused:
        PoolStore.open(tmp_path)
    assert "newer" in str(refused.value)
    assert str(tmp_path / DB_NAME) in str(refused.value)


# -- a runner killed with SIGKILL ---------------------------------------------------------


def test_agents_of_a_killed_runner_are_orphaned_or_lost(tmp_path, aegis_env):
    state = tmp_path / "state"
    workdir = tmp_path / "work"
    workdir.mkdir()
    helper = Helper("orphans", state, workdir, aegis_env)
    try:
        started = helper.json()
        helper.proc.send_signal(signal.SIGKILL)
        helper.proc.wait()
    finally:
        helper.close()
    (stop_me, dies_before, dies_after, queued) = started["ids"]
    pids = dict(zip(started["ids"], started["pids"], strict=True))
    assert pids[queued] is None
    # One agent ends before the new pool looks: nobody saw how.
    os.kill(pids[dies_before], signal.SIGKILL)
    for agent_id in (stop_me, dies_before, dies_after):
        assert pids[agent_id] is not None
    wait_for(lambda: gone(pids[dies_before]), WAIT, what=f"pid {pids[dies_before]} to end")
    events: list[tuple[str, str, str]] = []

    async def body(pool: AgentPool) -> None:
        statuses = {a["agent_id"]: a["status"] for a in pool.list()}
        assert statuses == {
            stop_me: "orphaned",
            dies_before: "lost",
            dies_after: "orphaned",
            queued: "lost",
        }
        orphan = pool.status(stop_me)
        assert orphan["runner_pid"] == os.getpid()
        assert f"pid {helper.proc.pid}" in orphan["note"]
        assert "agent_stop" in orphan["note"]
        assert not gone(pids[stop_me])
        lost = pool.status(dies_before)
        assert "unknown" in lost["error"]
        assert lost["exit_code"] is None
        assert "never started" in pool.status(queued)["error"]
        assert pool.stats()["orphaned"] == 2
        # An orphan is stopped by pid.
        stopped = await pool.stop(stop_me)
        assert stopped["status"] == "stopped"
        assert "exit code is unknown" in stopped["message"]
        assert gone(pids[stop_me])
        # An orphan that exits on its own is noticed by polling.
        waiting = asyncio.ensure_future(pool.await_agent(dies_after, WAIT))
        os.kill(pids[dies_after], signal.SIGKILL)
        final = await waiting
        assert final["done"] is True
        assert final["status"] == "lost"
        assert "ended while unsupervised" in final["error"]
        kinds = [e["kind"] for e in pool.store.events()]
        assert kinds.count("pool.orphaned") == 2
        assert kinds.count("pool.lost") == 2

    run_pool(state, tmp_path, aegis_env, body, events=events)
    assert sum(kind == "pool.orphaned" for kind, _, _ in events) == 2

    async def later(pool: AgentPool) -> None:
        # Nothing left to take over: the next pool just lists them.
        statuses = {a["agent_id"]: a["status"] for a in pool.list()}
        assert statuses == {
            stop_me: "stopped",
            dies_before: "lost",
            dies_after: "lost",
            queued: "lost",
        }

    run_pool(state, tmp_path, aegis_env, later)


# -- two pool processes on one database ----------------------------------------------------


def test_two_runners_share_agents_and_locks(tmp_path, aegis_env):
    state = tmp_path / "state"
    workdir = tmp_path / "work"
    workdir.mkdir()
    helper = Helper("locker", state, workdir, aegis_env)

    async def body(pool: AgentPool) -> None:
        locks = FileLocks(str(workdir), pool.store)
        ops = pool_ops(pool, locks)
        theirs = helper.json()
        agent_id = theirs["agent_id"]
        # Their agent is listed here, and stays theirs.
        listed = {a["agent_id"]: a for a in pool.list()}
        assert listed[agent_id]["status"] == "running"
        assert listed[agent_id]["runner_pid"] == helper.proc.pid
        # Its output tail reaches the database while it runs (saved about every second).
        await until(
            lambda: "ready" in pool.status(agent_id)["last_output"], "the tail in the database"
        )
        with pytest.raises(ControlError) as refused:
            await pool.stop(agent_id)
        assert refused.value.code == INVALID_ARGUMENT
        assert f"pid {helper.proc.pid}" in refused.value.message
        # Their lock is seen here and keeps us out, even under the same holder name.
        held = (await ops["agent_file_locks"]({}))["locks"]
        assert [(lk["holder"], lk["owner_pid"]) for lk in held] == [("alice", helper.proc.pid)]
        for holder in ("bob", "alice"):
            busy = await locks.acquire("shared.txt", holder, None)
            assert busy["acquired"] is False
            assert busy["owner_pid"] == helper.proc.pid
        with pytest.raises(ControlError):
            locks.release("shared.txt", "alice")
        waiting = asyncio.ensure_future(locks.acquire("shared.txt", "bob", None, wait_secs=WAIT))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        helper.send("release")
        assert json.loads(await asyncio.to_thread(helper.line))["released"] is True
        got = await waiting
        assert got["acquired"] is True
        assert got["owner_pid"] == os.getpid()
        # Their pool shuts down: its agent's end is seen here.
        helper.send("exit")
        await asyncio.to_thread(helper.proc.wait)
        final = await pool.await_agent(agent_id, WAIT)
        assert final["status"] == "stopped"
        assert final["done"] is True

    try:
        run_pool(state, tmp_path, aegis_env, body)
    finally:
        helper.close()


def test_lock_acquire_is_atomic_across_processes(tmp_path, aegis_env):
    state = tmp_path / "state"
    workdir = tmp_path / "work"
    workdir.mkdir()
    PoolStore.open(state).close()
    helpers = [Helper("contend", state, workdir, aegis_env) for _ in range(4)]
    try:
        for round_ in range(5):
            for helper in helpers:
                helper.send(str(round_))
            results = [helper.json() for helper in helpers]
            assert [r["round"] for r in results] == [str(round_)] * 4
            assert sum(r["acquired"] for r in results) == 1, results
        for helper in helpers:
            helper.send("")
            helper.proc.wait(WAIT)
        # The winners' locks had no holder pid: they ended with their processes.
        store = PoolStore.open(state)
        assert len(store.query("SELECT path FROM locks")) == 5
        assert FileLocks(str(workdir), store).list() == []
        store.close()
    finally:
        for helper in helpers:
            helper.close()


# -- a database that cannot be used ------------------------------------------------------


def test_corrupt_database_is_moved_aside(tmp_path, aegis_env):
    state = tmp_path / "state"
    state.mkdir()
    garbage = b"this is not an SQLite database\n" * 200
    (state / DB_NAME).write_bytes(garbage)
    events: list[tuple[str, str, str]] = []

    async def body(pool: AgentPool) -> None:
        aside = list(state.glob(f"{DB_NAME}.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes() == garbage
        [event] = [e for e in pool.store.events() if e["kind"] == "pool.store_corrupt"]
        assert str(aside[0]) in event["message"]
        # The new database works.
        spawned = await pool.spawn(scenario("say:fine"), agent_type="demo")
        assert (await pool.await_agent(spawned["agent_id"], WAIT))["status"] == "completed"

    run_pool(state, tmp_path, aegis_env, body, events=events)
    [(_, message, level)] = [e for e in events if e[0] == "pool.store_corrupt"]
    assert level == "error"
    assert "moved aside" in message


def test_damaged_pages_are_moved_aside(tmp_path):
    store = PoolStore.open(tmp_path)
    with store.write() as conn:
        for n in range(200):
            store.add_event(conn, "filler", f"event {n} " + "x" * 500)
    store.close()
    db = tmp_path / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[5 * page : 6 * page] = b"\xa5" * page
    db.write_bytes(bytes(data))
    reopened = PoolStore.open(tmp_path)
    try:
        assert [kind for kind, _, _ in reopened.notices] == ["pool.store_corrupt"]
        # The database, and the WAL and shared-memory files that belong to it.
        aside = sorted(p.name for p in tmp_path.glob(f"{DB_NAME}.corrupt-*"))
        assert len(aside) == 3
        assert aside[1:] == [aside[0] + "-shm", aside[0] + "-wal"]
        assert reopened.query("SELECT COUNT(*) FROM events")[0][0] == 1
    finally:
        reopened.close()


def test_locked_database_gives_a_clear_error(tmp_path, aegis_env):
    state = tmp_path / "state"
    PoolStore.open(state).close()
    db = state / DB_NAME
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"conn = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (("init", "--quiet"), ("commit", "--quiet", "--allow-empty", "-m", "first")):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
            cwd=repo,
            check=True,
        )

    async def body(pool: AgentPool) -> None:
        locks = FileLocks(str(tmp_path / "work"), pool.store)
        for attempt in (
            pool.spawn(scenario("say:hi"), agent_type="demo"),
            pool.spawn("x", agent_type="demo", working_directory=str(repo), isolation="worktree"),
            locks.acquire("a.txt", "alice", None),
        ):
            with pytest.raises(PoolUnavailable) as refused:
                await attempt
            assert "locked" in str(refused.value)
            assert str(db) in str(refused.value)
        # Nothing half-made: the refused spawns are nowhere, not even their worktree.
        assert pool.list() == []
        assert locks.list() == []
        branches = subprocess.run(
            ["git", "branch", "--list", "aegis/*"], cwd=repo, capture_output=True, text=True
        )
        assert branches.stdout == ""
        assert list((state / "worktrees").iterdir()) == []
        locker.communicate("\n", timeout=WAIT)
        spawned = await pool.spawn(scenario("say:hi"), agent_type="demo")
        assert (await pool.await_agent(spawned["agent_id"], WAIT))["status"] == "completed"
        assert (await locks.acquire("a.txt", "alice", None))["acquired"] is True

    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        run_pool(state, tmp_path, aegis_env, body, busy_timeout=0.2)
    finally:
        if locker.poll() is None:
            locker.kill()
        locker.wait()
        for pipe in (locker.stdin, locker.stdout):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted on ``path`` (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small filesystem")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    return filler


def test_full_disk_refuses_the_spawn_and_keeps_memory_consistent(tmp_path, aegis_env):
    with small_filesystem(tmp_path / "small", "1m") as state:

        async def body(pool: AgentPool) -> None:
            first = await pool.spawn(scenario("say:ready;quiet"), agent_type="demo")
            await wait_output(pool, first["agent_id"], "ready")
            filler = fill(state)
            refusals = []
            for _ in range(5):
                try:
                    await pool.spawn("x" * 90_000, agent_type="demo")
                except PoolUnavailable as exc:
                    refusals.append(exc)
                    break
            assert refusals, "a 90 kB spawn on a full disk was saved"
            assert "no space" in str(refusals[0])
            assert str(state / DB_NAME) in str(refusals[0])
            listed = [a["agent_id"] for a in pool.list()]
            assert first["agent_id"] in listed
            assert len(listed) == len(pool.store.query("SELECT agent_id FROM agents"))
            # A change made while the disk is full is kept in memory and saved later.
            stopped = await pool.stop(first["agent_id"])
            assert stopped["status"] == "stopped"
            assert pool.status(first["agent_id"])["status"] == "stopped"
            filler.unlink()
            assert pool.flush() == 0
            with sqlite3.connect(state / DB_NAME) as conn:
                saved = conn.execute(
                    "SELECT status FROM agents WHERE agent_id = ?", (first["agent_id"],)
                ).fetchone()
            assert saved == ("stopped",)

        run_pool(state, tmp_path, aegis_env, body)


if __name__ == "__main__":
    asyncio.run(_helper_main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
